// SQLite implementation of the store: one file, WAL, numbered migrations tracked in
// PRAGMA user_version, each migration and each logical change in one transaction.
import { chmodSync, closeSync, existsSync, fchmodSync, mkdirSync, openSync } from "node:fs";
import path from "node:path";
import Database from "better-sqlite3";
import { listMigrations, probeTxnId, refuseNewer, toAlias, toAudit, toCall, toErasure, toGuest, toModeration, toSeat, type Migration, type Row } from "./rows.ts";
import { ERASED_USER, moderationEmpty, type AliasRecord, type AuditEvent, type CallRecord, type ErasureRecord, type GuestRecord, type GuestState, type ModerationRecord, type NewCall, type NewGuest, type PurgeCounts, type SeatRecord, type Store } from "./store.ts";

export { listMigrations } from "./rows.ts";


/** `?, ?, …` for a list of values. */
const marks = (values: readonly unknown[]): string => values.map(() => "?").join(", ");

/** Creates `file` (if missing) readable by its owner only: 0600 whatever the umask. */
function ownerOnly(file: string): void {
  const fd = openSync(file, "a", 0o600);
  try {
    fchmodSync(fd, 0o600);
  } finally {
    closeSync(fd);
  }
}

const LIVE_GUESTS = "SELECT count(*) AS n FROM guest WHERE state <> 'deactivated'";

/**
 * The methods are async for the seam's sake (see store.ts) but run synchronously inside: each one
 * finishes in a single turn of the event loop, so no other call interleaves with it.
 */
export class SqliteStore implements Store {
  readonly db: Database.Database;
  private readonly probeId = probeTxnId();

  constructor(file: string, migrations: Migration[] = listMigrations()) {
    const onDisk = file !== ":memory:";
    if (onDisk) {
      mkdirSync(path.dirname(file), { recursive: true });
      ownerOnly(file);
    }
    this.db = new Database(file);
    this.db.pragma("journal_mode = WAL");
    // SQLite creates the -wal and -shm files with the database file's mode; files left by an
    // older run are tightened too.
    if (onDisk) for (const side of [`${file}-wal`, `${file}-shm`]) if (existsSync(side)) chmodSync(side, 0o600);
    this.db.pragma("synchronous = NORMAL");
    this.db.pragma("foreign_keys = ON");
    this.db.pragma("busy_timeout = 5000");
    this.migrate(migrations);
  }

  get schemaVersion(): number {
    return this.db.pragma("user_version", { simple: true }) as number;
  }

  private migrate(migrations: Migration[]): void {
    const current = this.schemaVersion;
    refuseNewer(current, migrations);
    for (const m of migrations.filter((m) => m.version > current)) {
      this.db.transaction(() => {
        this.db.exec(m.sql);
        this.db.pragma(`user_version = ${m.version}`);
      })();
    }
  }

  async isTxnDone(txnId: string): Promise<boolean> {
    return this.db.prepare("SELECT 1 FROM appservice_txn WHERE txn_id = ?").get(txnId) !== undefined;
  }
  async markTxnDone(txnId: string): Promise<void> {
    this.db.prepare("INSERT OR IGNORE INTO appservice_txn (txn_id, completed_at) VALUES (?, ?)").run(txnId, Date.now());
  }
  async isEventProcessed(eventId: string): Promise<boolean> {
    return this.db.prepare("SELECT 1 FROM processed_event WHERE event_id = ?").get(eventId) !== undefined;
  }
  async markEventProcessed(eventId: string): Promise<void> {
    this.db.prepare("INSERT OR IGNORE INTO processed_event (event_id, processed_at) VALUES (?, ?)").run(eventId, Date.now());
  }
  async prune(olderThan: number): Promise<void> {
    this.db.transaction(() => {
      this.db.prepare("DELETE FROM appservice_txn WHERE completed_at < ?").run(olderThan);
      this.db.prepare("DELETE FROM processed_event WHERE processed_at < ?").run(olderThan);
      this.db.prepare("DELETE FROM guest WHERE state = 'deactivated' AND deactivated_at < ?").run(olderThan);
    })();
  }

  async getAlias(alias: string): Promise<AliasRecord | undefined> {
    const row = this.db.prepare("SELECT * FROM meeting_alias WHERE alias = ?").get(alias) as Row | undefined;
    return row && toAlias(row);
  }
  async claimAlias(alias: string): Promise<boolean> {
    const r = this.db
      .prepare("INSERT OR IGNORE INTO meeting_alias (alias, room_id, state, created_at) VALUES (?, NULL, 'creating', ?)")
      .run(alias, Date.now());
    return r.changes === 1;
  }
  async claimAliasWithin(alias: string, max: number): Promise<"claimed" | "exists" | "full"> {
    return this.db.transaction(() => {
      if (this.db.prepare("SELECT 1 FROM meeting_alias WHERE alias = ?").get(alias)) return "exists";
      if (this.count("SELECT COUNT(*) AS n FROM meeting_alias") >= max) return "full";
      this.db.prepare("INSERT INTO meeting_alias (alias, room_id, state, created_at) VALUES (?, NULL, 'creating', ?)").run(alias, Date.now());
      return "claimed";
    }).immediate();
  }
  async aliasCount(): Promise<number> {
    return this.count("SELECT COUNT(*) AS n FROM meeting_alias");
  }
  async recordAlias(alias: string, roomId: string): Promise<void> {
    this.db
      .prepare(
        `INSERT INTO meeting_alias (alias, room_id, state, created_at) VALUES (?, ?, 'ready', ?)
         ON CONFLICT (alias) DO UPDATE SET room_id = excluded.room_id, state = 'ready'`,
      )
      .run(alias, roomId, Date.now());
  }
  async completeAlias(alias: string, roomId: string): Promise<void> {
    this.db.prepare("UPDATE meeting_alias SET room_id = ?, state = 'ready' WHERE alias = ?").run(roomId, alias);
  }
  async releaseAlias(alias: string): Promise<void> {
    this.db.prepare("DELETE FROM meeting_alias WHERE alias = ? AND state = 'creating'").run(alias);
  }
  async listAliases(state?: AliasRecord["state"]): Promise<AliasRecord[]> {
    const rows = state
      ? this.db.prepare("SELECT * FROM meeting_alias WHERE state = ? ORDER BY created_at").all(state)
      : this.db.prepare("SELECT * FROM meeting_alias ORDER BY created_at").all();
    return (rows as Row[]).map(toAlias);
  }

  async aliasOfRoom(roomId: string): Promise<AliasRecord | undefined> {
    const row = this.db.prepare("SELECT * FROM meeting_alias WHERE room_id = ?").get(roomId) as Row | undefined;
    return row && toAlias(row);
  }

  async activeCall(roomId: string): Promise<CallRecord | undefined> {
    const row = this.db.prepare("SELECT * FROM call WHERE room_id = ? AND ended_at IS NULL").get(roomId) as Row | undefined;
    return row && toCall(row);
  }
  async startCall(call: NewCall): Promise<CallRecord | undefined> {
    const r = this.db
      .prepare(
        `INSERT INTO call (call_id, room_id, origin, started_by, started_at, start_event_id, widget_id)
         VALUES (@callId, @roomId, @origin, @startedBy, @startedAt, @startEventId, @widgetId)
         ON CONFLICT DO NOTHING`,
      )
      .run(call);
    return r.changes === 1 ? { ...call, endedAt: null, endedBy: null, endEventId: null, sfu: null } : undefined;
  }
  async endCall(roomId: string, ended: { by: string; at: number; eventId: string | null }): Promise<CallRecord | undefined> {
    const row = this.db
      .prepare(
        "UPDATE call SET ended_at = ?, ended_by = ?, end_event_id = ? WHERE room_id = ? AND ended_at IS NULL RETURNING *",
      )
      .get(ended.at, ended.by, ended.eventId, roomId) as Row | undefined;
    return row && toCall(row);
  }
  async lastCall(roomId: string): Promise<CallRecord | undefined> {
    const row = this.db
      .prepare("SELECT * FROM call WHERE room_id = ? ORDER BY started_at DESC, rowid DESC LIMIT 1")
      .get(roomId) as Row | undefined;
    return row && toCall(row);
  }
  async setCallSfu(callId: string, sfu: { node: string; room: string; secret: string } | null): Promise<void> {
    this.db
      .prepare("UPDATE call SET sfu_node = ?, sfu_room = ?, sfu_secret = ? WHERE call_id = ?")
      .run(sfu?.node ?? null, sfu?.room ?? null, sfu?.secret ?? null, callId);
  }
  async activeCalls(): Promise<CallRecord[]> {
    return (this.db.prepare("SELECT * FROM call WHERE ended_at IS NULL ORDER BY started_at").all() as Row[]).map(toCall);
  }

  async saveSeat(seat: Omit<SeatRecord, "media">): Promise<void> {
    this.db
      .prepare(
        `INSERT INTO call_seat (token_hash, user_id, room_id, call_id, device_id, expires_at, updated_at)
         VALUES (@tokenHash, @userId, @roomId, @callId, @deviceId, @expiresAt, @updatedAt)
         ON CONFLICT (token_hash) DO UPDATE SET device_id = excluded.device_id, expires_at = excluded.expires_at, updated_at = excluded.updated_at`,
      )
      .run(seat);
  }
  async setSeatMedia(tokenHash: string, media: string | null, at: number): Promise<void> {
    this.db.prepare("UPDATE call_seat SET media = ?, updated_at = ? WHERE token_hash = ?").run(media, at, tokenHash);
  }
  async forgetSeat(tokenHash: string): Promise<void> {
    this.db.prepare("DELETE FROM call_seat WHERE token_hash = ?").run(tokenHash);
  }
  async seats(): Promise<SeatRecord[]> {
    return (this.db.prepare("SELECT * FROM call_seat ORDER BY updated_at").all() as Row[]).map(toSeat);
  }

  async saveModeration(r: ModerationRecord): Promise<void> {
    if (moderationEmpty(r)) {
      this.db.prepare("DELETE FROM call_moderation WHERE call_id = ? AND user_id = ?").run(r.callId, r.userId);
      return;
    }
    this.db
      .prepare(
        `INSERT INTO call_moderation (call_id, user_id, forced_audio_by, forced_video_by, share_stopped, hand_at, updated_at)
         VALUES (?, ?, ?, ?, ?, ?, ?)
         ON CONFLICT (call_id, user_id) DO UPDATE SET forced_audio_by = excluded.forced_audio_by, forced_video_by = excluded.forced_video_by,
           share_stopped = excluded.share_stopped, hand_at = excluded.hand_at, updated_at = excluded.updated_at`,
      )
      .run(r.callId, r.userId, r.forcedAudioBy, r.forcedVideoBy, r.shareStopped ? 1 : 0, r.handAt, r.updatedAt);
  }
  async forgetCallModeration(callId: string): Promise<void> {
    this.db.prepare("DELETE FROM call_moderation WHERE call_id = ?").run(callId);
  }
  async moderation(): Promise<ModerationRecord[]> {
    return (this.db.prepare("SELECT * FROM call_moderation ORDER BY updated_at").all() as Row[]).map(toModeration);
  }

  async claimOpenIdToken(hash: string, expiresAt: number, now: number): Promise<boolean> {
    return this.db.transaction(() => {
      this.db.prepare("DELETE FROM openid_token_used WHERE expires_at <= ?").run(now);
      return this.db.prepare("INSERT OR IGNORE INTO openid_token_used (token_hash, expires_at) VALUES (?, ?)").run(hash, expiresAt).changes === 1;
    }).immediate();
  }
  async releaseOpenIdToken(hash: string): Promise<void> {
    this.db.prepare("DELETE FROM openid_token_used WHERE token_hash = ?").run(hash);
  }
  async openIdTokenCount(): Promise<number> {
    return this.count("SELECT count(*) AS n FROM openid_token_used");
  }

  async claimGuest(g: NewGuest, max: number): Promise<boolean> {
    return this.db.transaction(() => {
      if (this.count(LIVE_GUESTS) >= max) return false;
      this.db
        .prepare(
          `INSERT INTO guest (user_id, device_id, token_hash, room_id, display_name, state, created_at, deactivate_at)
           VALUES (@userId, @deviceId, @tokenHash, @roomId, @displayName, 'creating', @createdAt, @deactivateAt)`,
        )
        .run(g);
      return true;
    }).immediate();
  }
  async forgetGuest(userId: string): Promise<void> {
    this.db.prepare("DELETE FROM guest WHERE user_id = ?").run(userId);
  }
  async guest(userId: string): Promise<GuestRecord | undefined> {
    const row = this.db.prepare("SELECT * FROM guest WHERE user_id = ?").get(userId) as Row | undefined;
    return row && toGuest(row);
  }
  async guestByTokenHash(hash: string): Promise<GuestRecord | undefined> {
    const row = this.db.prepare("SELECT * FROM guest WHERE token_hash = ? AND state <> 'deactivated'").get(hash) as Row | undefined;
    return row && toGuest(row);
  }
  async scheduleGuest(userId: string, state: Exclude<GuestState, "deactivated">, deactivateAt: number): Promise<void> {
    this.db
      .prepare("UPDATE guest SET state = ?, deactivate_at = ?, attempts = 0 WHERE user_id = ? AND state <> 'deactivated'")
      .run(state, deactivateAt, userId);
  }
  async deferGuest(userId: string, deactivateAt: number): Promise<void> {
    this.db
      .prepare("UPDATE guest SET deactivate_at = ?, attempts = attempts + 1 WHERE user_id = ? AND state <> 'deactivated'")
      .run(deactivateAt, userId);
  }
  async revokeGuestToken(userId: string): Promise<void> {
    this.db.prepare("UPDATE guest SET token_hash = NULL WHERE user_id = ?").run(userId);
  }
  async markGuestDeactivated(userId: string, at: number): Promise<void> {
    this.db
      .prepare("UPDATE guest SET state = 'deactivated', token_hash = NULL, deactivate_at = NULL, deactivated_at = ? WHERE user_id = ?")
      .run(at, userId);
  }
  async dueGuests(now: number, limit: number): Promise<GuestRecord[]> {
    const rows = this.db.prepare("SELECT * FROM guest WHERE deactivate_at <= ? ORDER BY deactivate_at LIMIT ?").all(now, limit) as Row[];
    return rows.map(toGuest);
  }
  async nextGuestDue(): Promise<number | undefined> {
    const row = this.db.prepare("SELECT min(deactivate_at) AS at FROM guest WHERE deactivate_at IS NOT NULL").get() as { at: number | null };
    return row.at ?? undefined;
  }
  async liveGuestCount(): Promise<number> {
    return this.count(LIVE_GUESTS);
  }
  async guestsOfRoom(roomId: string): Promise<GuestRecord[]> {
    const rows = this.db.prepare("SELECT * FROM guest WHERE room_id = ? AND state <> 'deactivated' ORDER BY created_at").all(roomId) as Row[];
    return rows.map(toGuest);
  }

  // ---- PersonalDataStore (docs/personal-data.md): portable SQL, one block to port ----

  async appendAudit(events: readonly AuditEvent[]): Promise<void> {
    const insert = this.db.prepare(
      "INSERT INTO audit_event (at, action, room_id, call_id, actor, target, outcome, details) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    );
    this.db.transaction(() => {
      for (const e of events) {
        insert.run(e.at, e.action, e.roomId, e.callId, e.actor, e.target, e.outcome, e.details ? JSON.stringify(e.details) : null);
      }
    })();
  }
  async auditOf(ids: readonly string[]): Promise<AuditEvent[]> {
    if (!ids.length) return [];
    const rows = this.db
      .prepare(`SELECT * FROM audit_event WHERE actor IN (${marks(ids)}) OR target IN (${marks(ids)}) ORDER BY at`)
      .all(...ids, ...ids) as Row[];
    return rows.map(toAudit);
  }
  async callsOf(userId: string): Promise<CallRecord[]> {
    const rows = this.db.prepare("SELECT * FROM call WHERE started_by = ? OR ended_by = ? ORDER BY started_at").all(userId, userId) as Row[];
    return rows.map(toCall);
  }
  async eraseUser(userId: string, auditIds: readonly string[], erasure: { at: number; guestDeactivated: boolean }): Promise<number> {
    return this.db.transaction(() => {
      let rows = 0;
      const run = (sql: string, ...params: unknown[]) => (rows += this.db.prepare(sql).run(...params).changes);
      for (const id of auditIds) {
        // An event about the user and someone else keeps the other's part.
        run("UPDATE audit_event SET actor = ? WHERE actor = ? AND target IS NOT NULL AND target <> ?", ERASED_USER, id, id);
        run("UPDATE audit_event SET target = ? WHERE target = ? AND actor IS NOT NULL AND actor <> ?", ERASED_USER, id, id);
        run("DELETE FROM audit_event WHERE actor = ? OR target = ?", id, id);
      }
      run("UPDATE call SET started_by = ? WHERE started_by = ?", ERASED_USER, userId);
      run("UPDATE call SET ended_by = ? WHERE ended_by = ?", ERASED_USER, userId);
      run("DELETE FROM guest WHERE user_id = ?", userId);
      run("DELETE FROM call_seat WHERE user_id = ?", userId);
      run("DELETE FROM call_moderation WHERE user_id = ?", userId);
      run("UPDATE call_moderation SET forced_audio_by = ? WHERE forced_audio_by = ?", ERASED_USER, userId);
      run("UPDATE call_moderation SET forced_video_by = ? WHERE forced_video_by = ?", ERASED_USER, userId);
      this.db
        .prepare("INSERT INTO erasure (erased_at, rows_removed, guest_deactivated) VALUES (?, ?, ?)")
        .run(erasure.at, rows, erasure.guestDeactivated ? 1 : 0);
      return rows;
    }).immediate();
  }
  async purgePersonalData(cutoff: number): Promise<PurgeCounts> {
    return this.db.transaction(() => ({
      audit: this.db.prepare("DELETE FROM audit_event WHERE at < ?").run(cutoff).changes,
      calls: this.db.prepare("DELETE FROM call WHERE ended_at IS NOT NULL AND ended_at < ?").run(cutoff).changes,
      guests: this.db.prepare("DELETE FROM guest WHERE state = 'deactivated' AND deactivated_at < ?").run(cutoff).changes,
    }))();
  }
  async erasures(): Promise<ErasureRecord[]> {
    const rows = this.db.prepare("SELECT * FROM erasure ORDER BY erased_at").all() as Row[];
    return rows.map(toErasure);
  }

  async probeWrite(): Promise<void> {
    // Committed, not rolled back: SQLite writes the changed page to the WAL only at a commit.
    this.db.transaction(() => {
      this.db.prepare("INSERT INTO appservice_txn (txn_id, completed_at) VALUES (?, ?)").run(this.probeId, Date.now());
      this.db.prepare("DELETE FROM appservice_txn WHERE txn_id = ?").run(this.probeId);
    }).immediate();
  }

  private count(sql: string): number {
    return (this.db.prepare(sql).get() as { n: number }).n;
  }

  async close(): Promise<void> {
    if (this.db.open) this.db.close();
  }
}
