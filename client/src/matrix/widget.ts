// Parley inside Element's widget iframe: no access token of ours; Element does the Matrix side
// through the widget API (matrix-widget-api) — the OpenID token, the membership state, delayed
// leave, the room's messages and members, avatars, and the Olm-encrypted to-device messages that
// carry media keys (as Element Call does it).
import {
  EventDirection,
  MatrixCapabilities,
  WidgetApi,
  WidgetApiResponseError,
  WidgetApiToWidgetAction,
  WidgetEventCapability,
  type IRoomEvent,
  type IWidgetApiRequest,
} from "matrix-widget-api";
import { asErrCode, ParleyClientError } from "../errors.ts";
import { getLogger } from "../log.ts";
import type { KeyChannel } from "../rtc/e2ee/callEncryption.ts";
import { CALL_KEYS_EVENT, type CallMembersPort, type DeviceRef, type KeySender, type KeyTransport } from "../rtc/e2ee/keyShare.ts";
import { Emitter } from "../state/store.ts";
import { CALL_MEMBER_EVENT, liveCallDevices, membershipStateKey, type MembershipTransport } from "./membership.ts";
import { parseOpenIdToken, type OpenIdProvider } from "./openid.ts";
import { CALL_STATE_EVENT } from "./rooms.ts";
import { membersFromState, toChatMessage, type ChatMessage, type RoomFeed, type RoomFeedEvents, type RoomMember, type SendCheck } from "./timeline.ts";

export interface WidgetParams {
  widgetId: string;
  /** Origin of the Matrix client hosting the iframe. */
  parentOrigin: string;
  roomId: string;
  userId: string;
  deviceId: string;
  /**
   * Whether `deviceId` is the client's own device (Element fills in the bot's
   * `$org.matrix.msc3819.matrix_device_id`). Media keys are Olm-encrypted to that device, so
   * E2EE calls need it; otherwise `deviceId` is one of ours, for the membership only.
   */
  hostDevice: boolean;
  callId: string | null;
}

/**
 * From the widget URL: ?roomId=&userId=&callId= (the bot's template, filled in by Element from
 * $matrix_room_id/$matrix_user_id) plus widgetId and parentUrl, which Element appends. The host's
 * origin is parentUrl's; `ancestorOrigin` is the browser's own record of the embedding page
 * (location.ancestorOrigins[0], where the browser keeps one): when known, the two must agree.
 */
export function parseWidgetParams(search: string, newDeviceId: () => string, ancestorOrigin?: string | null): WidgetParams | { error: string } {
  const q = new URLSearchParams(search);
  const widgetId = q.get("widgetId");
  const parentUrl = q.get("parentUrl");
  const roomId = q.get("roomId") ?? q.get("matrix_room_id");
  const userId = q.get("userId") ?? q.get("matrix_user_id");
  const device = q.get("deviceId");
  const missing = [
    !widgetId && "widgetId",
    !parentUrl && "parentUrl",
    !roomId?.startsWith("!") && "roomId",
    !userId?.startsWith("@") && "userId",
  ].filter(Boolean);
  if (missing.length) return { error: `The widget URL is missing ${missing.join(", ")}. Open the call from the room's widget in your Matrix app.` };
  let parentOrigin: string;
  try {
    parentOrigin = new URL(parentUrl!).origin;
  } catch {
    return { error: "The widget URL's parentUrl is not a valid URL." };
  }
  if (parentOrigin === "null") return { error: "The widget URL's parentUrl has no origin to talk to." };
  // The page that really embeds us must be the one the URL names: only its messages are accepted.
  if (ancestorOrigin && ancestorOrigin !== parentOrigin) return { error: "The page showing this widget isn't the Matrix app its URL names." };
  return {
    widgetId: widgetId!,
    parentOrigin,
    roomId: roomId!,
    userId: userId!,
    // A client that does not know the template variable leaves it as it is.
    ...(device && !device.startsWith("$") ? { deviceId: device, hostDevice: true } : { deviceId: newDeviceId(), hostDevice: false }),
    callId: q.get("callId"),
  };
}

function fromWidgetError(err: unknown): ParleyClientError {
  if (err instanceof ParleyClientError) return err;
  if (err instanceof WidgetApiResponseError) {
    const m = err.data.matrix_api_error;
    if (m) return new ParleyClientError(asErrCode(m.response.errcode), "room", { status: m.http_status, detail: m.response.error });
    return new ParleyClientError("M_FORBIDDEN", "room", { detail: err.message });
  }
  return new ParleyClientError("M_UNKNOWN", "room", { detail: String(err) });
}

/**
 * Drops every `message` event that is not from the host before matrix-widget-api sees it: its
 * source must be the embedding window (`win.parent`, not a sibling, child or opener frame, whatever
 * their origin) and its origin the host's. matrix-widget-api's transport listens for `message` on
 * the same window and checks neither; this listener is added first and in the capture phase, so it
 * runs first and stops the event. Returns the removal.
 */
export function acceptOnlyHost(win: Pick<Window, "addEventListener" | "removeEventListener" | "parent">, hostOrigin: string): () => void {
  const log = getLogger("widget");
  let dropped = 0;
  const filter = (ev: Event) => {
    const m = ev as MessageEvent;
    if (m.source === win.parent && m.origin === hostOrigin) return;
    ev.stopImmediatePropagation();
    // The first few are worth a line; a flood is not.
    if (++dropped <= 5) log.warn("dropped a message not from the host", { origin: String(m.origin), fromParent: m.source === win.parent });
  };
  win.addEventListener("message", filter, { capture: true });
  return () => win.removeEventListener("message", filter, { capture: true });
}

/** Room state events, keyed by room, type and state key: the latest one of each wins. */
class StateMap {
  private readonly events = new Map<string, IRoomEvent>();
  readonly changed = new Emitter<{ state: IRoomEvent[] }>();

  private static key(e: IRoomEvent): string {
    return `${e.room_id}\u0000${e.type}\u0000${e.state_key ?? ""}`;
  }

  apply(state: IRoomEvent[]): void {
    for (const e of state) this.events.set(StateMap.key(e), e);
    this.changed.emit("state", state);
  }

  /** Adds what is not known yet (a read that may be older than what was pushed since). */
  seed(state: IRoomEvent[]): void {
    const added = state.filter((e) => !this.events.has(StateMap.key(e)));
    if (added.length) this.apply(added);
  }

  of(roomId: string, type: string): IRoomEvent[] {
    return [...this.events.values()].filter((e) => e.room_id === roomId && e.type === type);
  }
}

/** The to-device event types the call sends and receives (media keys). */
const TO_DEVICE_TYPES = [CALL_KEYS_EVENT];

function toDeviceCapability(direction: EventDirection, type: string): string {
  return WidgetEventCapability.forToDeviceEvent(direction, type).raw;
}

function requestCallCapabilities(api: WidgetApi, params: WidgetParams): void {
  api.requestCapabilityToSendState(CALL_MEMBER_EVENT, membershipStateKey(params.userId, params.deviceId));
  api.requestCapabilityToReceiveState(CALL_MEMBER_EVENT);
  api.requestCapabilityToReceiveState("m.room.member");
  api.requestCapabilityToReceiveState("m.room.name");
  // The call's key mode is the room's (org.parley.call e2ee), never the signalling server's.
  api.requestCapabilityToReceiveState(CALL_STATE_EVENT);
  api.requestCapabilityToSendMessage("m.text");
  // Any msgtype (notices, emotes): the event-type form, not receive.event:m.room.message# which
  // matches no msgtype at all.
  api.requestCapabilityToReceiveEvent("m.room.message");
  api.requestCapabilityForRoomTimeline(params.roomId);
  for (const type of TO_DEVICE_TYPES) {
    api.requestCapabilityToSendToDevice(type);
    api.requestCapabilityToReceiveToDevice(type);
  }
  api.requestCapabilities([
    MatrixCapabilities.AlwaysOnScreen,
    MatrixCapabilities.MSC4157SendDelayedEvent,
    MatrixCapabilities.MSC4157UpdateDelayedEvent,
    MatrixCapabilities.MSC4039DownloadFile,
  ]);
}

export class WidgetSession {
  readonly api: WidgetApi;
  readonly params: WidgetParams;
  /**
   * Room state as the client pushes it (update_state, MSC2762): clients that speak it push the
   * readable room state from the start and answer state reads from the timeline only, so the
   * pushed state is the source of truth.
   */
  readonly pushed = new StateMap();
  private pushedAny = false;
  /** Room events the client feeds the widget (send_event), already acknowledged. */
  readonly timeline = new Emitter<{ event: IRoomEvent }>();
  private readonly keys = new KeyInbox();
  private channel: Promise<KeyChannel> | null = null;
  private readonly log = getLogger("widget");

  /** `api` not started yet: the handlers are in place before the client's first push. */
  private constructor(api: WidgetApi, params: WidgetParams) {
    this.api = api;
    this.params = params;
    // One handler per to-widget action, each acknowledged once, here.
    this.handle<{ state?: IRoomEvent[] }>(WidgetApiToWidgetAction.UpdateState, (data) => {
      this.pushedAny = true;
      this.pushed.apply(data?.state ?? []);
    });
    this.handle<IRoomEvent>(WidgetApiToWidgetAction.SendEvent, (data) => this.timeline.emit("event", data));
    this.handle<unknown>(WidgetApiToWidgetAction.SendToDevice, (data) => this.keys.receive(data));
  }

  /** Whether the client has pushed state at all (an update_state client). */
  get pushesState(): boolean {
    return this.pushedAny;
  }

  private handle<T>(action: WidgetApiToWidgetAction, fn: (data: T) => void): void {
    this.api.on(`action:${action}`, (ev: CustomEvent<IWidgetApiRequest>) => {
      ev.preventDefault();
      this.api.transport.reply(ev.detail, {});
      fn(ev.detail.data as T);
    });
  }

  /** Asks Element for what the call needs and waits until the capabilities are settled. */
  static async connect(params: WidgetParams, timeoutMs = 15_000): Promise<WidgetSession> {
    // Before the widget API listens (it starts in api.start() below): ours is the first listener.
    acceptOnlyHost(globalThis as unknown as Window, params.parentOrigin);
    const api = new WidgetApi(params.widgetId, params.parentOrigin);
    const session = new WidgetSession(api, params);
    requestCallCapabilities(api, params);
    const ready = new Promise<void>((resolve, reject) => {
      const t = setTimeout(
        () => reject(new ParleyClientError("TIMEOUT", "room", { human: "Your Matrix app didn't answer the widget. Reload the widget and try again." })),
        timeoutMs,
      );
      api.once("ready", () => {
        clearTimeout(t);
        resolve();
      });
    });
    api.start();
    await ready;
    return session;
  }

  /**
   * Current state events of a type in our room: pushed ones, else (older clients) read; waits a
   * moment for the first push after the capabilities are settled.
   */
  async roomState(type: string, waitMs = 1500): Promise<IRoomEvent[]> {
    const roomId = this.params.roomId;
    let got = this.pushed.of(roomId, type);
    if (!got.length) {
      await new Promise<void>((resolve) => {
        const t = setTimeout(done, waitMs);
        const off = this.pushed.changed.on("state", (s) => {
          if (s.some((e) => e.room_id === roomId && e.type === type)) done();
        });
        function done() {
          clearTimeout(t);
          off();
          resolve();
        }
      });
      got = this.pushed.of(roomId, type);
    }
    if (got.length) return got;
    return this.api.readStateEvents(type, 1000, undefined, [roomId]).catch((err) => {
      this.warn(`could not read ${type}`, err);
      return [];
    });
  }

  openId: OpenIdProvider = async () => {
    try {
      const creds = await this.api.requestOpenIDConnectToken();
      return parseOpenIdToken(creds);
    } catch (err) {
      throw new ParleyClientError("M_FORBIDDEN", "join", {
        detail: String(err),
        human: "Your Matrix app didn't let Parley confirm who you are. Allow the widget to verify your identity, then try again.",
      });
    }
  };

  membershipTransport(): MembershipTransport {
    const api = this.api;
    return {
      sendState: async (roomId, type, stateKey, content) => {
        await api.sendStateEvent(type, stateKey, content, roomId).catch((e) => Promise.reject(fromWidgetError(e)));
      },
      supportsDelayed: async () =>
        api.hasCapability(MatrixCapabilities.MSC4157SendDelayedEvent) && api.hasCapability(MatrixCapabilities.MSC4157UpdateDelayedEvent),
      scheduleState: async (roomId, type, stateKey, content, delayMs) => {
        const res = await api.sendStateEvent(type, stateKey, content, roomId, delayMs).catch((e) => Promise.reject(fromWidgetError(e)));
        if (!res.delay_id) throw new ParleyClientError("BAD_RESPONSE", "room", { detail: "no delay_id from the widget API" });
        return res.delay_id;
      },
      updateDelayed: async (delayId, action) => {
        const p =
          action === "restart"
            ? api.restartScheduledDelayedEvent(delayId)
            : action === "send"
              ? api.sendScheduledDelayedEvent(delayId)
              : api.cancelScheduledDelayedEvent(delayId);
        await p.catch((e) => Promise.reject(fromWidgetError(e)));
      },
    };
  }

  /** Avatars through Element (MSC4039 download_file); null when it isn't allowed. */
  async downloadAvatar(mxc: string): Promise<Blob> {
    if (!this.api.hasCapability(MatrixCapabilities.MSC4039DownloadFile)) throw new Error("download_file not granted");
    const { file } = await this.api.downloadFile(mxc);
    return file instanceof Blob ? file : new Blob([file as BlobPart]);
  }

  async setAlwaysOnScreen(on: boolean): Promise<void> {
    if (this.api.hasCapability(MatrixCapabilities.AlwaysOnScreen)) await this.api.setAlwaysOnScreen(on).catch(() => undefined);
  }

  roomFeed(): RoomFeed {
    return new WidgetRoomFeed(this);
  }

  /**
   * Media keys over the client's Olm (to-device, encrypted by Element) and the call's member
   * devices from the room state; rejects when the client did not grant the to-device capabilities.
   */
  keyChannel(): Promise<KeyChannel> {
    // A failure is not kept: the next call tries again (the chunk it loads may have failed).
    this.channel ??= this.openKeyChannel().catch((err: unknown) => {
      this.channel = null;
      throw err;
    });
    return this.channel;
  }

  private async openKeyChannel(): Promise<KeyChannel> {
    const denied = TO_DEVICE_TYPES.flatMap((type) =>
      [EventDirection.Send, EventDirection.Receive].map((d) => toDeviceCapability(d, type)).filter((c) => !this.api.hasCapability(c)),
    );
    if (denied.length) {
      throw new ParleyClientError("E2EE_UNSUPPORTED", "join", {
        detail: `not granted: ${denied.join(", ")}`,
        human: "Your Matrix app didn't let Parley exchange encryption keys for the call. Allow the widget to send and receive encrypted messages, then rejoin.",
      });
    }
    if (!this.params.hostDevice) {
      // The others would encrypt our keys to a device that does not exist.
      throw new ParleyClientError("E2EE_UNSUPPORTED", "join", {
        detail: "the widget URL has no device id from the client",
        human: "Your Matrix app didn't tell Parley which device it is, and encrypted calls need that. Update your Matrix app, then rejoin.",
      });
    }
    // roomFeed.ts carries matrix-js-sdk (~235 kB gzipped) that the widget needs nowhere else: loaded
    // with the first call, not with the page.
    const members = new WidgetCallMembers(this, liveCallDevices);
    await members.start();
    return { transport: this.keyTransport(), members, callState: () => this.callState(), authenticatedDevices: false };
  }

  /** The content of the room's org.parley.call state (state key ""), null if it has none. */
  private async callState(): Promise<unknown> {
    const events = await this.roomState(CALL_STATE_EVENT);
    return events.find((e) => e.state_key === "")?.content ?? null;
  }

  private keyTransport(): KeyTransport {
    return {
      send: async (devices, content) => {
        // One request for all devices; Element Olm-encrypts for each (encrypted: true). The widget
        // API does not say which devices Element could not encrypt for, so none are reported.
        const messages: Record<string, Record<string, object>> = {};
        for (const d of devices) (messages[d.userId] ??= {})[d.deviceId] = content;
        await this.api.sendToDevice(CALL_KEYS_EVENT, true, messages).catch((e) => Promise.reject(fromWidgetError(e)));
      },
      onKeys: (fn) => this.keys.subscribe(fn),
    };
  }

  warn(msg: string, err: unknown): void {
    this.log.warn(msg, { err: String(err) });
  }
}

class WidgetRoomFeed implements RoomFeed {
  readonly events = new Emitter<RoomFeedEvents>();
  private readonly w: WidgetSession;
  private initial: ChatMessage[] = [];
  private memberMap = new Map<string, RoomMember>();
  private readonly onEvent = (raw: IRoomEvent) => {
    if (raw.room_id !== this.w.params.roomId) return;
    if (raw.type === "m.room.member") {
      void this.loadMembers();
      return;
    }
    const msg = toChatMessage(raw);
    if (msg) this.events.emit("message", msg);
  };

  private readonly off: (() => void)[] = [];

  constructor(w: WidgetSession) {
    this.w = w;
  }

  async start(): Promise<void> {
    this.off.push(this.w.timeline.on("event", this.onEvent));
    this.off.push(
      this.w.pushed.changed.on("state", (state) => {
        if (state.some((e) => e.type === "m.room.member" && e.room_id === this.w.params.roomId)) void this.loadMembers();
      }),
    );
    try {
      const events = await this.w.api.readRoomEvents("m.room.message", 50, undefined, [this.w.params.roomId]);
      this.initial = events
        .map((e) => toChatMessage(e))
        .filter((m): m is ChatMessage => !!m)
        .sort((a, b) => a.ts - b.ts);
    } catch (err) {
      this.w.warn("could not read the room's messages", err);
    }
    await this.loadMembers();
  }

  stop(): void {
    for (const off of this.off.splice(0)) off();
    this.events.clear();
  }

  history(): ChatMessage[] {
    return [...this.initial];
  }

  members(): ReadonlyMap<string, RoomMember> {
    return this.memberMap;
  }

  canSend(): SendCheck {
    // Element encrypts what widgets send in encrypted rooms.
    return { ok: true };
  }

  async send(text: string): Promise<{ eventId?: string }> {
    try {
      const res = await this.w.api.sendRoomEvent("m.room.message", { msgtype: "m.text", body: text }, this.w.params.roomId);
      return res.event_id ? { eventId: res.event_id } : {};
    } catch (e) {
      const err = fromWidgetError(e);
      throw new ParleyClientError(err.code, "chat", { detail: err.detail });
    }
  }

  private async loadMembers(): Promise<void> {
    try {
      const state = await this.w.roomState("m.room.member");
      this.memberMap = membersFromState(state as never);
      this.events.emit("members", this.memberMap);
    } catch (err) {
      this.w.warn("could not read the room's members", err);
    }
  }
}

type KeyListener = (from: KeySender, content: unknown) => void;

/**
 * A media-key message as the client feeds it (send_to_device: `{ type, sender, content,
 * encrypted }`), with every reason it is not one we accept.
 */
export function parseToDeviceKey(data: unknown): { from: KeySender; content: Record<string, unknown> } | { errors: string[] } {
  if (typeof data !== "object" || data === null) return { errors: ["not an object"] };
  const d = data as Record<string, unknown>;
  const errors: string[] = [];
  if (d.type !== CALL_KEYS_EVENT) errors.push(`type is not ${CALL_KEYS_EVENT}`);
  // Element sets `encrypted` from the decrypted event (isEncrypted()) and drops what failed to
  // decrypt; a message not marked encrypted could come from anyone (or the homeserver) in clear.
  if (d.encrypted !== true) errors.push("not Olm-encrypted");
  if (typeof d.sender !== "string" || !d.sender.startsWith("@")) errors.push("no sender");
  const content = typeof d.content === "object" && d.content !== null ? (d.content as Record<string, unknown>) : null;
  if (!content) errors.push("no content");
  if (errors.length) return { errors };
  // The widget API does not say which device Olm decrypted the message from: the host's Olm binds
  // it to the sender's user only. Within that user, the device is the content's claim: a user's
  // device could speak for another device of the same user (the same person), never for anyone
  // else. Without this, calls in Element's widget could not exchange participant keys at all.
  const member = content!.member as { claimed_device_id?: unknown } | undefined;
  const claimed = typeof member?.claimed_device_id === "string" && member.claimed_device_id ? member.claimed_device_id : null;
  return { from: { userId: d.sender as string, deviceId: claimed }, content: content! };
}

/** Media keys from the client, held (the latest 256) until the call listens: they can come early. */
class KeyInbox {
  private readonly backlog: { from: KeySender; content: unknown }[] = [];
  private readonly listeners = new Set<KeyListener>();
  private readonly log = getLogger("e2ee");

  receive(data: unknown): void {
    const parsed = parseToDeviceKey(data);
    if ("errors" in parsed) {
      const sender = (data as { sender?: unknown } | null)?.sender;
      return void this.log.warn("ignored a to-device message", { sender: String(sender), why: parsed.errors.join("; ") });
    }
    if (!this.listeners.size) {
      this.backlog.push(parsed);
      this.backlog.splice(0, Math.max(0, this.backlog.length - 256));
      return;
    }
    for (const fn of this.listeners) fn(parsed.from, parsed.content);
  }

  subscribe(fn: KeyListener): () => void {
    for (const k of this.backlog.splice(0)) fn(k.from, k.content);
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  }
}

const CALL_STATE_TYPES = [CALL_MEMBER_EVENT, "m.room.member"];

/**
 * The devices with a live call membership in the room, from its state: what update_state pushes,
 * or (clients without it) a read plus the state events fed with the timeline.
 */
class WidgetCallMembers implements CallMembersPort {
  private readonly state = new StateMap();
  private readonly w: WidgetSession;
  private readonly live: typeof liveCallDevices;

  constructor(w: WidgetSession, live: typeof liveCallDevices) {
    this.w = w;
    this.live = live;
  }

  /** Follows changes first, then reads what is there (kept where a change came in meanwhile). */
  async start(): Promise<void> {
    const roomId = this.w.params.roomId;
    const follow = (events: IRoomEvent[]) => {
      const ours = events.filter((e) => e.room_id === roomId && typeof e.state_key === "string" && CALL_STATE_TYPES.includes(e.type));
      if (ours.length) this.state.apply(ours);
    };
    // Lives as long as the session (one per page).
    this.w.pushed.changed.on("state", follow);
    this.w.timeline.on("event", (e) => {
      if (!this.w.pushesState) follow([e]);
    });
    // roomState() reads our room only; older clients may leave room_id out of what they return.
    const read = await Promise.all(CALL_STATE_TYPES.map((type) => this.w.roomState(type)));
    this.state.seed(read.flat().map((e) => ({ ...e, room_id: roomId })));
  }

  devices(): DeviceRef[] {
    const roomId = this.w.params.roomId;
    const joined = new Set(membersFromState(this.state.of(roomId, "m.room.member") as never).keys());
    const calls = this.state.of(roomId, CALL_MEMBER_EVENT).map((e) => ({
      sender: e.sender,
      stateKey: e.state_key ?? "",
      content: typeof e.content === "object" && e.content !== null ? (e.content as Record<string, unknown>) : {},
    }));
    return this.live(calls, joined, Date.now());
  }

  onChange(fn: () => void): () => void {
    return this.state.changed.on("state", () => fn());
  }
}
