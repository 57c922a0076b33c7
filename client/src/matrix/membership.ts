// MatrixRTC call membership, so stock Matrix clients show who is in the call: the session-form
// `org.matrix.msc3401.call.member` state event (state key `_{userId}_{deviceId}`) naming Parley's
// own transport, and an empty one on leave. Where the homeserver has MSC4140 delayed events, an
// empty "leave" is scheduled with the membership and kept from firing by periodic restarts, so a
// crashed tab or a lost network still ends the membership.
import { ParleyClientError } from "../errors.ts";
import { getLogger } from "../log.ts";
import { Store } from "../state/store.ts";
import { markStep } from "../timeline.ts";
import { realTimers, type Timers } from "../timers.ts";
import { enc, type MatrixHttp } from "./http.ts";

export const CALL_MEMBER_EVENT = "org.matrix.msc3401.call.member";
export const PARLEY_FOCUS_TYPE = "org.parley.janus";
/** Relative to created_ts, as MatrixRTC has it: after this a membership counts as stale. */
export const MEMBERSHIP_EXPIRES_MS = 14_400_000;

export interface ParleyTransport {
  type: typeof PARLEY_FOCUS_TYPE;
  /** The hosting Parley's call API base URL. */
  call_api: string;
  room_id: string;
}

export interface CallMemberContent {
  application: "m.call";
  call_id: "";
  scope: "m.room";
  device_id: string;
  created_ts: number;
  expires: number;
  "m.call.intent": "video";
  foci_preferred: ParleyTransport[];
  focus_active: { type: typeof PARLEY_FOCUS_TYPE };
}

export function membershipStateKey(userId: string, deviceId: string): string {
  return `_${userId}_${deviceId}`;
}

export function buildMembershipContent(opts: {
  deviceId: string;
  callApi: string;
  roomId: string;
  createdTs: number;
  expires?: number;
}): CallMemberContent {
  return {
    application: "m.call",
    call_id: "",
    scope: "m.room",
    device_id: opts.deviceId,
    created_ts: opts.createdTs,
    expires: opts.expires ?? MEMBERSHIP_EXPIRES_MS,
    "m.call.intent": "video",
    foci_preferred: [{ type: PARLEY_FOCUS_TYPE, call_api: opts.callApi, room_id: opts.roomId }],
    focus_active: { type: PARLEY_FOCUS_TYPE },
  };
}

export type DelayedAction = "restart" | "send" | "cancel";

/** How membership state reaches the room: the C-S API, or Element via the widget API. */
export interface MembershipTransport {
  sendState(roomId: string, type: string, stateKey: string, content: object): Promise<void>;
  /** Whether MSC4140 delayed events can be used. */
  supportsDelayed(): Promise<boolean>;
  /** Schedules a state event `delayMs` from now; returns its delay id. */
  scheduleState(roomId: string, type: string, stateKey: string, content: object, delayMs: number): Promise<string>;
  updateDelayed(delayId: string, action: DelayedAction): Promise<void>;
}

export function homeserverMembershipTransport(http: MatrixHttp): MembershipTransport {
  let supported: Promise<boolean> | undefined;
  return {
    sendState: async (roomId, type, stateKey, content) => {
      await http.request("PUT", `/rooms/${enc(roomId)}/state/${enc(type)}/${enc(stateKey)}`, { body: content });
    },
    supportsDelayed: () =>
      (supported ??= http
        .request<{ unstable_features?: Record<string, unknown> }>("GET", "/versions", { prefix: "/_matrix/client", anonymous: true })
        .then((v) => v.unstable_features?.["org.matrix.msc4140"] === true)
        .catch(() => false)),
    scheduleState: async (roomId, type, stateKey, content, delayMs) => {
      const res = await http.request<{ delay_id?: unknown }>("PUT", `/rooms/${enc(roomId)}/state/${enc(type)}/${enc(stateKey)}`, {
        body: content,
        query: { "org.matrix.msc4140.delay": delayMs },
      });
      if (typeof res.delay_id !== "string") throw new ParleyClientError("BAD_RESPONSE", "room", { detail: "delayed event without delay_id" });
      return res.delay_id;
    },
    updateDelayed: async (delayId, action) => {
      await http.request("POST", `/delayed_events/${enc(delayId)}`, {
        prefix: "/_matrix/client/unstable/org.matrix.msc4140",
        body: { action },
      });
    },
  };
}

export interface MembershipStatus {
  joined: boolean;
  /** A delayed leave is scheduled (the membership ends by itself if this tab goes away). */
  delayedLeave: boolean;
  lastError: string | null;
}

/** The room's live call memberships as this client's sync has them (the feed's view). */
export interface OwnMembershipView {
  devices(): { userId: string; deviceId: string }[];
  onChange(fn: () => void): () => void;
}

/** The least time between two republishes of a membership the room lost (ms). */
export const REPUBLISH_MIN_INTERVAL_MS = 5_000;

export interface MembershipOptions {
  transport: MembershipTransport;
  /**
   * Where the manager sees its own membership in the room: once seen, a membership that goes
   * away while the call is on is published again (at most every `republishMinIntervalMs`). What
   * removes it: a delayed leave of an earlier page of this device (a tab that crashed or was
   * reloaded, its leave fired by the homeserver up to `delayMs` later), or anyone's write.
   */
  observed?: OwnMembershipView;
  republishMinIntervalMs?: number;
  roomId: string;
  userId: string;
  deviceId: string;
  callApi: string;
  timers?: Timers;
  /** How long after the last restart the delayed leave fires. */
  delayMs?: number;
  restartEveryMs?: number;
  expiresMs?: number;
}

/**
 * The membership writes of one state event (a device's, in one room), in the order they were
 * asked. A call's leave and the next call's join on the same device are two managers writing the
 * same state key, and the room keeps whichever the homeserver takes last: a leave still on its way
 * (behind its own call's membership, 0.6 s on a busy homeserver) once landed after the next call's
 * membership, and the device was out of the call it had just joined (the others sent it no key).
 * Each write waits for the answer to the one before it.
 */
const lanes = new Map<string, Promise<void>>();

function inLane<T>(lane: string, step: () => Promise<T>): Promise<T> {
  const run = (lanes.get(lane) ?? Promise.resolve()).then(step);
  const tail = run.then(
    () => undefined,
    () => undefined,
  );
  lanes.set(lane, tail);
  void tail.then(() => {
    if (lanes.get(lane) === tail) lanes.delete(lane);
  });
  return run;
}

export class MembershipManager {
  readonly status = new Store<MembershipStatus>({ joined: false, delayedLeave: false, lastError: null });
  private readonly o: Required<Omit<MembershipOptions, "timers" | "observed">> & Pick<MembershipOptions, "observed"> & { timers: Timers };
  private readonly log = getLogger("membership");
  private readonly stateKey: string;
  private delayId: string | null = null;
  private createdTs = 0;
  private expires = 0;
  private restartTimer: unknown;
  private refreshTimer: unknown;
  private active = false;
  /** Left (or left before joining): this manager publishes nothing more. */
  private ended = false;
  private readonly lane: string;
  private unwatch: (() => void) | null = null;
  private republishTimer: unknown;
  private lastRepublish = -Infinity;

  constructor(opts: MembershipOptions) {
    this.o = {
      timers: realTimers,
      delayMs: 30_000,
      restartEveryMs: 10_000,
      expiresMs: MEMBERSHIP_EXPIRES_MS,
      republishMinIntervalMs: REPUBLISH_MIN_INTERVAL_MS,
      ...opts,
    };
    this.stateKey = membershipStateKey(opts.userId, opts.deviceId);
    this.lane = `${opts.roomId}\u0000${this.stateKey}`;
  }

  get eventStateKey(): string {
    return this.stateKey;
  }

  /**
   * Publishes the membership, and schedules the delayed leave beside it (not before: the others'
   * devices send their media keys when they see the membership, so it is on a joiner's critical
   * path; one request less in front of it is 20-130 ms here). A tab that dies between the two
   * requests leaves the membership to its expiry, as a homeserver without delayed events does.
   * The homeserver does not cancel a delayed event for a state event of its own sender (MSC4140),
   * so the order in which the two arrive does not matter. Both go out once this device's earlier
   * writes to the same state event (a previous call's leave) are answered (inLane). Nothing is
   * published once the manager has left.
   */
  async join(): Promise<void> {
    if (this.active || this.ended) return;
    this.active = true;
    this.createdTs = this.o.timers.now();
    this.expires = this.o.expiresMs;
    await inLane(this.lane, () => Promise.all([this.scheduleDelayedLeave(), this.sendMembership().then(() => markStep("membership"))]));
    if (!this.active) return; // left meanwhile: the leave follows in the lane
    this.status.update({ joined: true, lastError: null });
    this.armRestart();
    this.armRefresh();
    this.watch();
  }

  /** Publishes the membership again when the room loses it after it was seen there (the option's doc). */
  private watch(): void {
    const view = this.o.observed;
    if (!view) return;
    const mine = () => view.devices().some((d) => d.userId === this.o.userId && d.deviceId === this.o.deviceId);
    let seen = mine();
    this.unwatch = view.onChange(() => {
      if (!this.active) return;
      if (mine()) {
        seen = true;
        return;
      }
      if (!seen) return; // ours has not come back in the sync yet
      seen = false;
      this.republishSoon();
    });
  }

  private republishSoon(): void {
    if (this.republishTimer !== undefined) return;
    const wait = Math.max(0, this.lastRepublish + this.o.republishMinIntervalMs - this.o.timers.now());
    this.republishTimer = this.o.timers.setTimeout(() => {
      this.republishTimer = undefined;
      if (!this.active) return;
      this.lastRepublish = this.o.timers.now();
      this.log.info("the room lost this device's call membership; publishing it again");
      void this.publishAgain();
    }, wait);
  }

  /** The membership written again, in the lane, while the call is on (a republish, a refresh); its error kept in the status. */
  private publishAgain(): Promise<void> {
    return inLane(this.lane, async () => {
      if (this.active) await this.sendMembership();
    }).catch((err: unknown) => this.status.update({ lastError: String(err) }));
  }

  /**
   * Ends the membership: fires the delayed leave now, or writes {} directly. Never throws. Asked
   * while the join is on its way, it follows the join (and fires the leave the join scheduled);
   * asked before join(), nothing is published at all.
   */
  async leave(): Promise<void> {
    this.ended = true;
    if (!this.active) return;
    this.active = false;
    this.o.timers.clearTimeout(this.restartTimer);
    this.o.timers.clearTimeout(this.refreshTimer);
    this.o.timers.clearTimeout(this.republishTimer);
    this.republishTimer = undefined;
    this.unwatch?.();
    this.unwatch = null;
    await inLane(this.lane, async () => {
      const delayId = this.delayId;
      this.delayId = null;
      try {
        if (delayId) {
          try {
            await this.o.transport.updateDelayed(delayId, "send");
            return;
          } catch (err) {
            this.log.warn("sending the delayed leave failed; writing it directly", { err: String(err) });
          }
        }
        await this.o.transport.sendState(this.o.roomId, CALL_MEMBER_EVENT, this.stateKey, {});
      } catch (err) {
        this.log.warn("could not remove the call membership", { err: String(err) });
        this.status.update({ lastError: String(err) });
      } finally {
        this.status.update({ joined: false, delayedLeave: false });
      }
    });
  }

  private content() {
    return buildMembershipContent({
      deviceId: this.o.deviceId,
      callApi: this.o.callApi,
      roomId: this.o.roomId,
      createdTs: this.createdTs,
      expires: this.expires,
    });
  }

  private async sendMembership(): Promise<void> {
    await this.o.transport.sendState(this.o.roomId, CALL_MEMBER_EVENT, this.stateKey, this.content());
  }

  private async scheduleDelayedLeave(): Promise<void> {
    this.delayId = null;
    if (!(await this.o.transport.supportsDelayed().catch(() => false))) {
      this.status.update({ delayedLeave: false });
      return;
    }
    try {
      this.delayId = await this.o.transport.scheduleState(this.o.roomId, CALL_MEMBER_EVENT, this.stateKey, {}, this.o.delayMs);
      this.status.update({ delayedLeave: true });
    } catch (err) {
      this.log.warn("the homeserver refused a delayed leave; membership will rely on expiry", { err: String(err) });
      this.status.update({ delayedLeave: false });
    }
  }

  private armRestart(): void {
    if (!this.delayId || !this.active) return;
    this.restartTimer = this.o.timers.setTimeout(() => void this.restart(), this.o.restartEveryMs);
  }

  private async restart(): Promise<void> {
    const delayId = this.delayId;
    if (!delayId || !this.active) return;
    try {
      await this.o.transport.updateDelayed(delayId, "restart");
      this.status.update({ lastError: null });
    } catch (err) {
      if (err instanceof ParleyClientError && err.code === "M_NOT_FOUND") {
        // The leave already fired (we were unreachable for longer than the delay): join again.
        this.log.info("delayed leave had fired; publishing the membership again");
        try {
          await inLane(this.lane, async () => {
            if (!this.active) return;
            await this.scheduleDelayedLeave();
            if (this.active) await this.sendMembership();
          });
        } catch (e) {
          this.status.update({ lastError: String(e) });
        }
      } else {
        this.status.update({ lastError: String(err) });
      }
    }
    this.armRestart();
  }

  /** Before the membership goes stale, extend `expires` (created_ts stays: it marks the join). */
  private armRefresh(): void {
    if (!this.active) return;
    const at = this.createdTs + this.expires - 5 * 60_000;
    this.refreshTimer = this.o.timers.setTimeout(async () => {
      if (!this.active) return;
      this.expires += this.o.expiresMs;
      await this.publishAgain();
      this.armRefresh();
    }, Math.max(0, at - this.o.timers.now()));
  }
}

/**
 * The devices of live call memberships: non-empty content naming its device, the state key owned
 * by the sender (`_{user}_{device}`), the sender joined to the room, not expired.
 */
export function liveCallDevices(
  events: { sender: string; stateKey: string; content: Record<string, unknown> }[],
  joined: { has(userId: string): boolean },
  now: number,
): { userId: string; deviceId: string }[] {
  const out: { userId: string; deviceId: string }[] = [];
  for (const ev of events) {
    const c = ev.content;
    if (typeof c.device_id !== "string" || !c.device_id || !joined.has(ev.sender)) continue;
    if (ev.stateKey !== `_${ev.sender}_${c.device_id}`) continue;
    const created = typeof c.created_ts === "number" ? c.created_ts : 0;
    const expires = typeof c.expires === "number" ? c.expires : 0;
    if (created && expires && created + expires < now) continue;
    out.push({ userId: ev.sender, deviceId: c.device_id });
  }
  return out;
}
