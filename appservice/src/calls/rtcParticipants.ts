// Who is in a room's call right now, folded from its MatrixRTC membership events.
//
// One entry per user and device. An event replaces the one it shares a key with (the state key,
// or the sticky key of the sender), an empty content or an expired membership removes it, and an
// event that does not parse changes nothing: the caller gets the errors to log. Pure: the caller
// passes the clock in, and drops members who leave the room with removeUser().

import {
  CALL_APPLICATION,
  membershipExpired,
  parseRtcMembership,
  type MembershipEvent,
  type ParseOptions,
  type RtcMembership,
} from "./rtcMembership.ts";

export interface RtcParticipant {
  userId: string;
  deviceId: string;
  /** When the device joined: `created_ts`, else the joining event's timestamp, else when it was seen. */
  joinedAt: number;
  membership: RtcMembership;
}

export type RtcLeaveReason = "leave" | "expired" | "other call";

export type RtcChange =
  | { kind: "joined"; participant: RtcParticipant }
  | { kind: "updated"; participant: RtcParticipant }
  | { kind: "left"; participant: RtcParticipant; reason: RtcLeaveReason }
  | { kind: "ignored"; reason: string }
  | { kind: "invalid"; errors: string[] };

export interface RtcParticipantsOptions {
  /** Only memberships of this application count; `m.call` unless told otherwise. */
  application?: string;
  /** Only this slot counts (e.g. "m.call#ROOM"); any slot of the application when absent. */
  slotId?: string;
}

export class RtcParticipants {
  private readonly application: string;
  private readonly slotId: string | undefined;
  /** deviceKey(user, device) -> participant */
  private readonly devices = new Map<string, RtcParticipant>();
  /** membership key (event type, sender, state or sticky key) -> deviceKey */
  private readonly byEventKey = new Map<string, string>();
  /** Arrival order, to break ties between equal join times. */
  private readonly arrival = new Map<string, number>();
  private seq = 0;

  constructor(options: RtcParticipantsOptions = {}) {
    this.application = options.application ?? CALL_APPLICATION;
    this.slotId = options.slotId;
  }

  /** Folds one membership event in; `now` decides expiry. */
  apply(event: MembershipEvent, now: number, parseOptions: ParseOptions = {}): RtcChange {
    const parsed = parseRtcMembership(event, parseOptions);
    if (!parsed.ok) return { kind: "invalid", errors: parsed.errors };
    if (parsed.membership === null) {
      const key = parsed.left.key;
      if (key === undefined) return { kind: "ignored", reason: "a leave without a sticky key names no device" };
      const gone = this.removeByEventKey(key);
      return gone === undefined
        ? { kind: "ignored", reason: `${parsed.left.userId} left, but was not in the call` }
        : { kind: "left", participant: gone, reason: "leave" };
    }

    const m = parsed.membership;
    const elsewhere = this.outsideOurCall(m);
    if (elsewhere !== undefined || membershipExpired(m, now)) {
      // The event still replaces whatever its key held before.
      const gone = this.removeByEventKey(m.key);
      const reason: RtcLeaveReason = elsewhere !== undefined ? "other call" : "expired";
      if (gone !== undefined) return { kind: "left", participant: gone, reason };
      return { kind: "ignored", reason: elsewhere ?? `membership of ${m.userId} (${m.deviceId}) has expired` };
    }

    const dk = deviceKey(m.userId, m.deviceId);
    // A sticky key that moved to another device: the old device's entry goes.
    const previousDevice = this.byEventKey.get(m.key);
    if (previousDevice !== undefined && previousDevice !== dk) this.removeDevice(previousDevice);

    const existing = this.devices.get(dk);
    // The same device through another event (the other form, say): the newest one speaks for it.
    if (existing !== undefined && existing.membership.key !== m.key) {
      this.byEventKey.delete(existing.membership.key);
    }
    const sameJoin = existing !== undefined && existing.membership.memberId === m.memberId;
    // Session form: created_ts carries the first join through updates. MSC4143 form: an update
    // keeps the member id, so the first event's time stands.
    let joinedAt = m.createdTs ?? now;
    if (sameJoin && (m.form === "rtc" || m.createdTs === undefined)) joinedAt = existing.joinedAt;
    const participant: RtcParticipant = { userId: m.userId, deviceId: m.deviceId, joinedAt, membership: m };
    this.devices.set(dk, participant);
    this.byEventKey.set(m.key, dk);
    if (!this.arrival.has(dk)) this.arrival.set(dk, this.seq++);
    return existing === undefined ? { kind: "joined", participant } : { kind: "updated", participant };
  }

  /** Drops every device of a user who left, was kicked from or was banned from the room. */
  removeUser(userId: string): RtcParticipant[] {
    const gone = [...this.devices.values()].filter((p) => p.userId === userId);
    for (const p of gone) this.removeDevice(deviceKey(p.userId, p.deviceId));
    return gone;
  }

  /** Forgets memberships that expired by `now`; returns them so the caller can act on each. */
  prune(now: number): RtcParticipant[] {
    const gone = [...this.devices.values()].filter((p) => membershipExpired(p.membership, now));
    for (const p of gone) this.removeDevice(deviceKey(p.userId, p.deviceId));
    return gone;
  }

  get(userId: string, deviceId: string): RtcParticipant | undefined {
    return this.devices.get(deviceKey(userId, deviceId));
  }

  /** The devices in the call at `now`, longest in the call first. */
  list(now: number): RtcParticipant[] {
    return [...this.devices.entries()]
      .filter(([, p]) => !membershipExpired(p.membership, now))
      .sort(([ka, a], [kb, b]) => a.joinedAt - b.joinedAt || this.arrivalOf(ka) - this.arrivalOf(kb))
      .map(([, p]) => p);
  }

  /** The users in the call at `now`, in the order of their first device's join. */
  users(now: number): { userId: string; devices: number }[] {
    const counts = new Map<string, number>();
    for (const p of this.list(now)) counts.set(p.userId, (counts.get(p.userId) ?? 0) + 1);
    return [...counts].map(([userId, devices]) => ({ userId, devices }));
  }

  /** A short list for a notice: "@alice:a (2 devices), @bob:b", or "nobody". */
  describe(now: number): string {
    const users = this.users(now);
    if (users.length === 0) return "nobody";
    return users.map((u) => (u.devices > 1 ? `${u.userId} (${u.devices} devices)` : u.userId)).join(", ");
  }

  /** How many devices are held, expired or not (see prune). */
  get size(): number {
    return this.devices.size;
  }

  clear(): void {
    this.devices.clear();
    this.byEventKey.clear();
    this.arrival.clear();
  }

  private arrivalOf(dk: string): number {
    return this.arrival.get(dk) ?? 0;
  }

  /** Why a membership is not about this call, or undefined when it is. */
  private outsideOurCall(m: RtcMembership): string | undefined {
    if (m.application !== this.application) return `application ${m.application} is not ${this.application}`;
    if (this.slotId !== undefined && m.slotId !== this.slotId) return `slot ${m.slotId} is not ${this.slotId}`;
    return undefined;
  }

  private removeByEventKey(key: string): RtcParticipant | undefined {
    const dk = this.byEventKey.get(key);
    if (dk === undefined) return undefined;
    return this.removeDevice(dk);
  }

  private removeDevice(dk: string): RtcParticipant | undefined {
    const p = this.devices.get(dk);
    if (p !== undefined) this.byEventKey.delete(p.membership.key);
    this.devices.delete(dk);
    this.arrival.delete(dk);
    return p;
  }
}

function deviceKey(userId: string, deviceId: string): string {
  return JSON.stringify([userId, deviceId]);
}
