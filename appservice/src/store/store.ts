// The storage seam: what the rest of Parley may ask of its store, and nothing more.
// Each method is one logical change and one transaction.

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
  isTxnDone(txnId: string): boolean;
  markTxnDone(txnId: string): void;
  isEventProcessed(eventId: string): boolean;
  markEventProcessed(eventId: string): void;
  /** Forgets txn ids and event ids older than the cut-off (epoch ms). */
  prune(olderThan: number): void;
}

export interface AliasStore {
  getAlias(alias: string): AliasRecord | undefined;
  /** Claims an alias for creation; false when a row (ready or creating) exists already. */
  claimAlias(alias: string): boolean;
  /** Claims an alias for a new room unless `max` aliases (ready or claimed) exist already; one transaction. */
  claimAliasWithin(alias: string, max: number): "claimed" | "exists" | "full";
  /** How many aliases are recorded (ready or claimed). */
  aliasCount(): number;
  completeAlias(alias: string, roomId: string): void;
  /** Records an existing room as the alias's room (adoption): inserts, or completes a claim. */
  recordAlias(alias: string, roomId: string): void;
  releaseAlias(alias: string): void;
  listAliases(state?: AliasRecord["state"]): AliasRecord[];
  /** The meeting alias whose room this is, if any. */
  aliasOfRoom(roomId: string): AliasRecord | undefined;
}

export interface CallStore {
  activeCall(roomId: string): CallRecord | undefined;
  /** Records a new active call; returns undefined when the room already has one. */
  startCall(call: NewCall): CallRecord | undefined;
  /** Ends the room's active call; undefined when none is active. */
  endCall(roomId: string, ended: { by: string; at: number; eventId: string | null }): CallRecord | undefined;
  /** The room's most recent call, active or not. */
  lastCall(roomId: string): CallRecord | undefined;
  /** Records (or, with null, forgets) the SFU room of a call. */
  setCallSfu(callId: string, sfu: SfuRoomRecord | null): void;
  activeCalls(): CallRecord[];
}

/** OpenID tokens already used for a join, by hash (never the token itself). */
export interface OpenIdTokenStore {
  /**
   * Records the hash until `expiresAt` (epoch ms); false when it is recorded already (the token
   * was used, or is being checked right now). Forgets rows expired by `now` in the same transaction.
   */
  claimOpenIdToken(hash: string, expiresAt: number, now: number): boolean;
  /** Forgets a claim whose token was not accepted. */
  releaseOpenIdToken(hash: string): void;
  /** Rows held (for tests and metrics). */
  openIdTokenCount(): number;
}

export interface Store extends TransactionStore, AliasStore, CallStore, OpenIdTokenStore {
  close(): void;
}
