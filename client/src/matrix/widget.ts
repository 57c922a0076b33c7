// Parley inside Element's widget iframe: no access token of ours; Element does the Matrix side
// through the widget API (matrix-widget-api) — the OpenID token, the membership state, delayed
// leave, the room's messages and members, avatars.
import {
  MatrixCapabilities,
  WidgetApi,
  WidgetApiResponseError,
  type IRoomEvent,
  type ISendEventToWidgetActionRequest,
  type IUpdateStateToWidgetActionRequest,
} from "matrix-widget-api";
import { asErrCode, ParleyClientError } from "../errors.ts";
import { getLogger } from "../log.ts";
import { Emitter } from "../state/store.ts";
import { CALL_MEMBER_EVENT, membershipStateKey, type MembershipTransport } from "./membership.ts";
import { parseOpenIdToken, type OpenIdProvider } from "./openid.ts";
import { membersFromState, toChatMessage, type ChatMessage, type RoomFeed, type RoomFeedEvents, type RoomMember, type SendCheck } from "./timeline.ts";

export interface WidgetParams {
  widgetId: string;
  /** Origin of the Matrix client hosting the iframe. */
  parentOrigin: string;
  roomId: string;
  userId: string;
  deviceId: string;
  callId: string | null;
}

/**
 * From the widget URL: ?roomId=&userId=&callId= (the bot's template, filled in by Element from
 * $matrix_room_id/$matrix_user_id) plus widgetId and parentUrl, which Element appends.
 */
export function parseWidgetParams(search: string, newDeviceId: () => string): WidgetParams | { error: string } {
  const q = new URLSearchParams(search);
  const widgetId = q.get("widgetId");
  const parentUrl = q.get("parentUrl");
  const roomId = q.get("roomId") ?? q.get("matrix_room_id");
  const userId = q.get("userId") ?? q.get("matrix_user_id");
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
  return {
    widgetId: widgetId!,
    parentOrigin,
    roomId: roomId!,
    userId: userId!,
    deviceId: q.get("deviceId") ?? newDeviceId(),
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

/** Room state as the client pushes it (update_state), keyed by room, type and state key. */
class PushedState {
  private readonly events = new Map<string, IRoomEvent>();
  readonly changed = new Emitter<{ state: IRoomEvent[] }>();

  apply(state: IRoomEvent[]): void {
    for (const e of state) this.events.set(`${e.room_id}\u0000${e.type}\u0000${e.state_key ?? ""}`, e);
    this.changed.emit("state", state);
  }

  of(roomId: string, type: string): IRoomEvent[] {
    return [...this.events.values()].filter((e) => e.room_id === roomId && e.type === type);
  }
}

export class WidgetSession {
  readonly api: WidgetApi;
  readonly params: WidgetParams;
  readonly pushed: PushedState;
  private readonly log = getLogger("widget");

  private constructor(api: WidgetApi, params: WidgetParams, pushed: PushedState) {
    this.api = api;
    this.params = params;
    this.pushed = pushed;
  }

  /** Asks Element for what the call needs and waits until the capabilities are settled. */
  static async connect(params: WidgetParams, timeoutMs = 15_000): Promise<WidgetSession> {
    const api = new WidgetApi(params.widgetId, params.parentOrigin);
    const pushed = new PushedState();
    const stateKey = membershipStateKey(params.userId, params.deviceId);
    api.requestCapabilityToSendState(CALL_MEMBER_EVENT, stateKey);
    api.requestCapabilityToReceiveState(CALL_MEMBER_EVENT);
    api.requestCapabilityToReceiveState("m.room.member");
    api.requestCapabilityToReceiveState("m.room.name");
    api.requestCapabilityToSendMessage("m.text");
    // Any msgtype (notices, emotes): the event-type form, not receive.event:m.room.message# which
    // matches no msgtype at all.
    api.requestCapabilityToReceiveEvent("m.room.message");
    api.requestCapabilityForRoomTimeline(params.roomId);
    api.requestCapabilities([
      MatrixCapabilities.AlwaysOnScreen,
      MatrixCapabilities.MSC4157SendDelayedEvent,
      MatrixCapabilities.MSC4157UpdateDelayedEvent,
      MatrixCapabilities.MSC4039DownloadFile,
    ]);
    // Clients that speak update_state (MSC2762) push the readable room state from the start and
    // answer state reads from the timeline only: the pushed state is the source of truth.
    api.on("action:update_state", (ev: CustomEvent<IUpdateStateToWidgetActionRequest>) => {
      ev.preventDefault();
      api.transport.reply(ev.detail, {});
      pushed.apply(ev.detail.data?.state ?? []);
    });
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
    return new WidgetSession(api, params, pushed);
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

  warn(msg: string, err: unknown): void {
    this.log.warn(msg, { err: String(err) });
  }
}

class WidgetRoomFeed implements RoomFeed {
  readonly events = new Emitter<RoomFeedEvents>();
  private readonly w: WidgetSession;
  private initial: ChatMessage[] = [];
  private memberMap = new Map<string, RoomMember>();
  private readonly onSendEvent = (ev: CustomEvent<ISendEventToWidgetActionRequest>) => {
    ev.preventDefault();
    this.w.api.transport.reply(ev.detail, {});
    const raw = ev.detail.data as unknown as IRoomEvent;
    if (raw.room_id !== this.w.params.roomId) return;
    if (raw.type === "m.room.member") {
      void this.loadMembers();
      return;
    }
    const msg = toChatMessage(raw);
    if (msg) this.events.emit("message", msg);
  };

  private offState: (() => void) | null = null;

  constructor(w: WidgetSession) {
    this.w = w;
  }

  async start(): Promise<void> {
    this.w.api.on("action:send_event", this.onSendEvent);
    this.offState = this.w.pushed.changed.on("state", (state) => {
      if (state.some((e) => e.type === "m.room.member" && e.room_id === this.w.params.roomId)) void this.loadMembers();
    });
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
    this.w.api.off("action:send_event", this.onSendEvent);
    this.offState?.();
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
