// The room as seen through a matrix-js-sdk sync loop with a small filter (this room only, its last
// 50 events, lazy-loaded members; no presence, account data, receipts or typing; no crypto yet).
// Timeline event types are not filtered: state events arriving in the timeline (m.room.create in
// a new room) must reach the SDK's room state. Messages are
// sent with a plain PUT so our transaction id comes back on the remote echo.
import {
  ClientEvent,
  createClient,
  Filter,
  RoomEvent,
  RoomMemberEvent,
  RoomStateEvent,
  SyncState,
  type MatrixClient,
  type MatrixEvent,
  type Room,
} from "matrix-js-sdk";
import type { Logger as SdkLogger } from "matrix-js-sdk/lib/logger.js";
import { ParleyClientError } from "../errors.ts";
import { getLogger, type Logger } from "../log.ts";
import { Emitter } from "../state/store.ts";
import { enc, type MatrixHttp } from "./http.ts";
import type { MatrixSession } from "./session.ts";
import { ENCRYPTED_CHAT_REASON, toChatMessage, type ChatMessage, type RoomFeed, type RoomFeedEvents, type RoomMember, type SendCheck } from "./timeline.ts";

export function syncFilterDefinition(roomId: string) {
  return {
    presence: { not_types: ["*"] },
    account_data: { not_types: ["*"] },
    room: {
      rooms: [roomId],
      account_data: { not_types: ["*"] },
      ephemeral: { not_types: ["*"] },
      state: { lazy_load_members: true },
      timeline: { limit: 50 },
    },
  };
}

/** matrix-js-sdk's chatter (push rule defaults, sync progress) stays out of the console: warnings and errors only. */
function sdkLogger(log: Logger, prefix = "sdk"): SdkLogger {
  const text = (msg: unknown[]) => `${prefix}: ${msg.map((m) => (m instanceof Error ? m.message : String(m))).join(" ")}`;
  return {
    trace: () => undefined,
    debug: () => undefined,
    info: () => undefined,
    warn: (...msg: unknown[]) => log.debug(text(msg)),
    error: (...msg: unknown[]) => log.warn(text(msg)),
    getChild: (ns: string) => sdkLogger(log, `${prefix}/${ns}`),
  };
}

export class SyncedRoomFeed implements RoomFeed {
  readonly events = new Emitter<RoomFeedEvents>();
  private readonly log = getLogger("chat");
  private readonly session: MatrixSession;
  private readonly http: MatrixHttp;
  private readonly roomId: string;
  private client: MatrixClient | null = null;
  private readonly seen = new Set<string>();
  private initial: ChatMessage[] = [];
  private memberMap = new Map<string, RoomMember>();

  constructor(session: MatrixSession, http: MatrixHttp, roomId: string) {
    this.session = session;
    this.http = http;
    this.roomId = roomId;
  }

  async start(): Promise<void> {
    const client = createClient({
      baseUrl: this.session.homeserverUrl,
      accessToken: this.session.accessToken,
      userId: this.session.userId,
      deviceId: this.session.deviceId,
      timelineSupport: false,
      logger: sdkLogger(this.log),
    });
    this.client = client;
    const filter = new Filter(this.session.userId);
    filter.setDefinition(syncFilterDefinition(this.roomId));

    client.on(RoomEvent.Timeline, (ev: MatrixEvent, room: Room | undefined, toStartOfTimeline: boolean | undefined) => {
      if (room?.roomId !== this.roomId || toStartOfTimeline) return;
      this.onEvent(ev, true);
    });
    const membersChanged = () => this.refreshMembers();
    client.on(RoomStateEvent.Members, membersChanged);
    client.on(RoomMemberEvent.Name, membersChanged);
    client.on(RoomMemberEvent.Membership, membersChanged);
    client.on(ClientEvent.Sync, (state: SyncState) => {
      if (state === SyncState.Error) {
        this.events.emit("error", new ParleyClientError("NETWORK", "chat", { human: "Chat is offline; reconnecting to your homeserver…" }));
      }
    });

    const ready = new Promise<void>((resolve) => {
      const onSync = (state: SyncState) => {
        if (state === SyncState.Prepared || state === SyncState.Syncing) {
          client.off(ClientEvent.Sync, onSync);
          resolve();
        }
      };
      client.on(ClientEvent.Sync, onSync);
    });
    await client.startClient({ filter, initialSyncLimit: 50, lazyLoadMembers: true, disablePresence: true, threadSupport: false });
    await ready;
    const room = client.getRoom(this.roomId);
    if (room) {
      for (const ev of room.getLiveTimeline().getEvents()) this.onEvent(ev, false);
      await room.loadMembersIfNeeded().catch((err) => this.log.warn("could not load the member list", { err: String(err) }));
    }
    this.refreshMembers();
  }

  stop(): void {
    this.client?.stopClient();
    this.client?.removeAllListeners();
    this.client = null;
    this.events.clear();
  }

  history(): ChatMessage[] {
    return [...this.initial];
  }

  members(): ReadonlyMap<string, RoomMember> {
    return this.memberMap;
  }

  canSend(): SendCheck {
    const room = this.client?.getRoom(this.roomId);
    if (room?.hasEncryptionStateEvent()) return { ok: false, reason: ENCRYPTED_CHAT_REASON };
    return { ok: true };
  }

  async send(text: string, txnId: string): Promise<{ eventId?: string }> {
    const check = this.canSend();
    if (!check.ok) throw new ParleyClientError("M_FORBIDDEN", "chat", { human: check.reason });
    const res = await this.http.request<{ event_id?: unknown }>("PUT", `/rooms/${enc(this.roomId)}/send/m.room.message/${enc(txnId)}`, {
      body: { msgtype: "m.text", body: text },
      context: "chat",
    });
    return typeof res.event_id === "string" ? { eventId: res.event_id } : {};
  }

  private onEvent(ev: MatrixEvent, live: boolean): void {
    const id = ev.getId();
    if (!id || this.seen.has(id)) return;
    const msg = toChatMessage({
      event_id: id,
      sender: ev.getSender(),
      type: ev.getWireType(),
      content: ev.getWireContent(),
      origin_server_ts: ev.getTs(),
      unsigned: ev.getUnsigned(),
    });
    if (!msg) return;
    this.seen.add(id);
    if (live) this.events.emit("message", msg);
    else this.initial.push(msg);
  }

  private refreshMembers(): void {
    const room = this.client?.getRoom(this.roomId);
    if (!room) return;
    const next = new Map<string, RoomMember>();
    for (const m of room.getJoinedMembers()) {
      next.set(m.userId, { userId: m.userId, displayName: m.name || m.userId, avatarMxc: m.getMxcAvatarUrl() ?? null });
    }
    this.memberMap = next;
    this.events.emit("members", next);
  }
}
