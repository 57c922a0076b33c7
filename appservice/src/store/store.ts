// The storage seam: what the rest of Parley may ask of its store, and nothing more.
// Each method is one logical change and one transaction, and answers asynchronously: a store may
// be a file in this process (SQLite) or a server shared by several Parley instances (PostgreSQL).
// A check-then-act that must be atomic is one method here, never two calls by the caller.

export interface AliasRecord {
  alias: string;
  roomId: string | null;
  state: "creating" | "ready";
  createdAt: number;
}

export interface CallRecord {
  callId: string;
  roomId: string;
  origin: "alias" | "command";
  startedBy: string;
  startedAt: number;
  /** The command event that started the call (null for calls not started by a command). */
  startEventId: string | null;
  widgetId: string | null;
  endedAt: number | null;
  endedBy: string | null;
  endEventId: string | null;
  /** The SFU room carrying the call, once one was made. */
  sfu: SfuRoomRecord | null;
}

export interface SfuRoomRecord {
  node: string;
  room: string;
  secret: string;
}

export type NewCall = Omit<CallRecord, "endedAt" | "endedBy" | "endEventId" | "sfu">;

export interface TransactionStore {
  isTxnDone(txnId: string): Promise<boolean>;
  markTxnDone(txnId: string): Promise<void>;
  isEventProcessed(eventId: string): Promise<boolean>;
  markEventProcessed(eventId: string): Promise<void>;
  /** Forgets txn ids, event ids and guests deactivated before the cut-off (epoch ms). */
  prune(olderThan: number): Promise<void>;
}

export interface AliasStore {
  getAlias(alias: string): Promise<AliasRecord | undefined>;
  /** Claims an alias for creation; false when a row (ready or creating) exists already. */
  claimAlias(alias: string): Promise<boolean>;
  /** Claims an alias for a new room unless `max` aliases (ready or claimed) exist already; one transaction. */
  claimAliasWithin(alias: string, max: number): Promise<"claimed" | "exists" | "full">;
  /** How many aliases are recorded (ready or claimed). */
  aliasCount(): Promise<number>;
  completeAlias(alias: string, roomId: string): Promise<void>;
  /** Records an existing room as the alias's room (adoption): inserts, or completes a claim. */
  recordAlias(alias: string, roomId: string): Promise<void>;
  releaseAlias(alias: string): Promise<void>;
  listAliases(state?: AliasRecord["state"]): Promise<AliasRecord[]>;
  /** The meeting alias whose room this is, if any. */
  aliasOfRoom(roomId: string): Promise<AliasRecord | undefined>;
}

export interface CallStore {
  activeCall(roomId: string): Promise<CallRecord | undefined>;
  /** Records a new active call; returns undefined when the room already has one. */
  startCall(call: NewCall): Promise<CallRecord | undefined>;
  /** Ends the room's active call; undefined when none is active. */
  endCall(roomId: string, ended: { by: string; at: number; eventId: string | null }): Promise<CallRecord | undefined>;
  /** The room's most recent call, active or not. */
  lastCall(roomId: string): Promise<CallRecord | undefined>;
  /** Records (or, with null, forgets) the SFU room of a call. */
  setCallSfu(callId: string, sfu: SfuRoomRecord | null): Promise<void>;
  activeCalls(): Promise<CallRecord[]>;
}

/** A call session as a restarted Parley needs it (docs/resilience.md); by token hash, never the token. */
export interface SeatRecord {
  tokenHash: string;
  userId: string;
  roomId: string;
  callId: string;
  /** The device declared in hello ("" before). */
  deviceId: string;
  /** When a session no socket holds expires (epoch ms); null while a socket holds it. */
  expiresAt: number | null;
  /** The SFU session to adopt (JSON, opaque to the store); null before one is open. */
  media: string | null;
  updatedAt: number;
}

export interface SeatStore {
  /** Records a session or updates its holder's part (device, expiry); its media is kept. */
  saveSeat(seat: Omit<SeatRecord, "media">): Promise<void>;
  /** Records the session's SFU session (null: it has none). No-op for a session not recorded. */
  setSeatMedia(tokenHash: string, media: string | null, at: number): Promise<void>;
  forgetSeat(tokenHash: string): Promise<void>;
  seats(): Promise<SeatRecord[]>;
}

/**
 * What moderators did to a user in a call, as a restarted Parley needs it (docs/resilience.md):
 * who forced each mute (null: not forced), whether their screen share was stopped, when their
 * hand went up (epoch ms; null: down).
 */
export interface ModerationRecord {
  callId: string;
  userId: string;
  forcedAudioBy: string | null;
  forcedVideoBy: string | null;
  shareStopped: boolean;
  handAt: number | null;
  updatedAt: number;
}

export interface ModerationStore {
  /** Records the user's moderation in the call; a record with nothing left in it deletes the row. */
  saveModeration(record: ModerationRecord): Promise<void>;
  /** Forgets every row of the call (it ended). */
  forgetCallModeration(callId: string): Promise<void>;
  /** Every row, oldest change first. */
  moderation(): Promise<ModerationRecord[]>;
}

/** Whether a moderation record holds nothing (its row goes). */
export function moderationEmpty(r: Pick<ModerationRecord, "forcedAudioBy" | "forcedVideoBy" | "shareStopped" | "handAt">): boolean {
  return r.forcedAudioBy === null && r.forcedVideoBy === null && !r.shareStopped && r.handAt === null;
}

/** OpenID tokens already used for a join, by hash (never the token itself). */
export interface OpenIdTokenStore {
  /**
   * Records the hash until `expiresAt` (epoch ms); false when it is recorded already (the token
   * was used, or is being checked right now). Forgets rows expired by `now` in the same transaction.
   */
  claimOpenIdToken(hash: string, expiresAt: number, now: number): Promise<boolean>;
  /** Forgets a claim whose token was not accepted. */
  releaseOpenIdToken(hash: string): Promise<void>;
  /** Rows held (for tests and metrics). */
  openIdTokenCount(): Promise<number>;
}

export type GuestState = "creating" | "waiting" | "joined" | "left" | "deactivated";

export interface GuestRecord {
  userId: string;
  deviceId: string;
  /** The meeting room the guest was made for (the only room it may knock on or join). */
  roomId: string;
  displayName: string;
  /** creating: the account is being made; waiting: not joined (lobby); joined; left; deactivated. */
  state: GuestState;
  createdAt: number;
  /** When the sweep deactivates the guest; null once deactivated. */
  deactivateAt: number | null;
  deactivatedAt: number | null;
  /** Failed deactivation attempts so far. */
  attempts: number;
}

export interface NewGuest {
  userId: string;
  deviceId: string;
  roomId: string;
  displayName: string;
  /** Hash of the bearer token the browser holds (never the token). */
  tokenHash: string;
  createdAt: number;
  deactivateAt: number;
}

/** Guests by link: one row per guest account, kept until some time after its deactivation. */
export interface GuestStore {
  /** Records a new guest ('creating') unless `max` guests are live (not deactivated); one transaction. */
  claimGuest(guest: NewGuest, max: number): Promise<boolean>;
  /** Forgets a guest whose account was never made. */
  forgetGuest(userId: string): Promise<void>;
  guest(userId: string): Promise<GuestRecord | undefined>;
  /** The live guest holding the token of this hash (not revoked, not deactivated). */
  guestByTokenHash(hash: string): Promise<GuestRecord | undefined>;
  /** Sets a live guest's state and when it is deactivated (failed attempts start again from 0). */
  scheduleGuest(userId: string, state: Exclude<GuestState, "deactivated">, deactivateAt: number): Promise<void>;
  /** After a failed deactivation: try again at `deactivateAt`, one more attempt counted. */
  deferGuest(userId: string, deactivateAt: number): Promise<void>;
  revokeGuestToken(userId: string): Promise<void>;
  markGuestDeactivated(userId: string, at: number): Promise<void>;
  /** Live guests due for deactivation by `now`, earliest first, at most `limit`. */
  dueGuests(now: number, limit: number): Promise<GuestRecord[]>;
  /** The earliest deactivation time scheduled, if any. */
  nextGuestDue(): Promise<number | undefined>;
  liveGuestCount(): Promise<number>;
  /** Live guests made for this room. */
  guestsOfRoom(roomId: string): Promise<GuestRecord[]>;
}

// ---- personal data (docs/personal-data.md): the attendance and audit log, export, erasure, retention ----
// Every method of this block is in PersonalDataStore, so a second backend ports it as one piece.

/** One attendance or audit event. User ids are as recorded: a remote user's may be a pseudonym. */
export interface AuditEvent {
  at: number;
  /** call_join, call_leave, admit, deny, mute, remove, ban, auto_admit, host_assigned, guest_created, … */
  action: string;
  roomId: string | null;
  callId: string | null;
  actor: string | null;
  target: string | null;
  outcome: string | null;
  /** Facts without user ids (counts, media kind, policy). */
  details: Record<string, unknown> | null;
}

/** What an erasure removed or rewrote (no user id: this row is kept). */
export interface ErasureRecord {
  erasedAt: number;
  rowsRemoved: number;
  guestDeactivated: boolean;
}

/** What stands in for an erased user where a row also records someone else. */
export const ERASED_USER = "(erased)";

export interface PurgeCounts {
  audit: number;
  calls: number;
  guests: number;
}

export interface PersonalDataStore {
  /** Appends events in one transaction. */
  appendAudit(events: readonly AuditEvent[]): Promise<void>;
  /** Events where any of `ids` is actor or target, oldest first. */
  auditOf(ids: readonly string[]): Promise<AuditEvent[]>;
  /** Calls the user started or ended, oldest first. */
  callsOf(userId: string): Promise<CallRecord[]>;
  /**
   * One transaction: events only about the user (any of `auditIds`) are deleted, and where an event
   * or a call also names someone else the user's id is replaced by ERASED_USER (so is a mute they
   * forced on someone else); the guest row, their call sessions and their moderation rows go;
   * an erasure row (without the id) records it. Returns the rows removed or rewritten.
   */
  eraseUser(userId: string, auditIds: readonly string[], erasure: { at: number; guestDeactivated: boolean }): Promise<number>;
  /** Deletes events older than `cutoff`, calls ended before it and guests deactivated before it. */
  purgePersonalData(cutoff: number): Promise<PurgeCounts>;
  erasures(): Promise<ErasureRecord[]>;
}

export interface Store extends TransactionStore, AliasStore, CallStore, SeatStore, ModerationStore, OpenIdTokenStore, GuestStore, PersonalDataStore {
  /**
   * Writes a row and deletes it again in one committed transaction (the health check): resolves
   * when the store takes writes, rejects when it does not (read-only file or replica, disk full,
   * server gone). Leaves no row behind.
   */
  probeWrite(): Promise<void>;
  close(): Promise<void>;
}
