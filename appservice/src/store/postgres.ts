// PostgreSQL implementation of the store, for several Parley instances on one database (see
// docs/scale-out.md). The same numbered migrations as SQLite's (forPostgres below), tracked in
// parley_schema, each in its own transaction under an advisory lock so that instances starting
// together migrate once. Each logical change is one statement or one
// transaction; a claim bounded by a cap takes a transaction-scoped advisory lock, so two
// instances counting at once cannot both take the last place.
import pg from "pg";
import { getLogger } from "../log.ts";
import { listMigrations, probeTxnId, refuseNewer, toAlias, toAudit, toCall, toErasure, toGuest, toModeration, toSeat, type Migration, type Row } from "./rows.ts";
import { ERASED_USER, moderationEmpty, type AliasRecord, type AuditEvent, type CallRecord, type ErasureRecord, type GuestRecord, type GuestState, type ModerationRecord, type NewCall, type NewGuest, type PurgeCounts, type SeatRecord, type Store } from "./store.ts";

export interface PostgresStoreOptions {
  /** postgres://user@host:port/database (no password in it: see `password`). */
  connectionString?: string | undefined;
  host?: string | undefined;
  port?: number | undefined;
  user?: string | undefined;
  database?: string | undefined;
  password?: string | undefined;
  /** Connections this instance holds at most. */
  poolSize: number;
  /** How long to wait for a connection (ms). */
  connectTimeoutMs?: number | undefined;
}

// Advisory lock keys (classid, objid): "Parley" and what the lock guards.
const LOCK_CLASS = 0x50617231;
const LOCK = { migrate: 1, aliasCap: 2, guestCap: 3 } as const;

const INT8_OID = 20;
// Epoch milliseconds and counts come back as BIGINT; they fit a double exactly (< 2^53).
const types = {
  getTypeParser: ((oid: number, format?: "text" | "binary") =>
    oid === INT8_OID ? (v: string) => Number(v) : pg.types.getTypeParser(oid, format)) as typeof pg.types.getTypeParser,
};

type Queryable = Pick<pg.PoolClient, "query">;

/** The driver's connection settings for these options (a pool's, or one client's). */
export function connectionConfig(opts: Omit<PostgresStoreOptions, "poolSize">, applicationName: string): pg.ClientConfig {
  return {
    ...(opts.connectionString ? { connectionString: opts.connectionString } : {}),
    ...(opts.host ? { host: opts.host } : {}),
    ...(opts.port ? { port: opts.port } : {}),
    ...(opts.user ? { user: opts.user } : {}),
    ...(opts.database ? { database: opts.database } : {}),
    ...(opts.password !== undefined ? { password: opts.password } : {}),
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 10_000,
    application_name: applicationName,
  };
}

/**
 * A shared migration in PostgreSQL's dialect. The files are plain SQL both take, except in two
 * places: INTEGER is 64-bit in SQLite but 32-bit here (the times are epoch milliseconds), and
 * WITHOUT ROWID is SQLite's alone. Every migration runs on a real PostgreSQL in the store tests.
 */
export function forPostgres(m: Migration): Migration {
  return { ...m, sql: m.sql.replace(/\bINTEGER\b/g, "BIGINT").replace(/\)\s*WITHOUT ROWID\s*;/g, ");") };
}

export class PostgresStore implements Store {
  private readonly pool: pg.Pool;
  private readonly probeId = probeTxnId();
  private closed = false;

  private constructor(pool: pg.Pool) {
    this.pool = pool;
  }

  /** Connects and runs the migrations this database lacks. */
  static async open(opts: PostgresStoreOptions, migrations: Migration[] = listMigrations().map(forPostgres)): Promise<PostgresStore> {
    const pool = new pg.Pool({ ...connectionConfig(opts, "parley"), max: opts.poolSize, types });
    // An idle connection the server drops must not crash the process; the next query reconnects.
    const log = getLogger("store.postgres");
    pool.on("error", (err) => log.warn({ err: { message: err.message } }, "idle PostgreSQL connection lost"));
    const store = new PostgresStore(pool);
    try {
      await store.migrate(migrations);
    } catch (err) {
      await pool.end();
      throw err;
    }
    return store;
  }

  /** The schema version recorded in the database (0 before the first migration). */
  async schemaVersion(): Promise<number> {
    return this.readVersion(this.pool);
  }

  private async readVersion(q: Queryable): Promise<number> {
    await q.query("CREATE TABLE IF NOT EXISTS parley_schema (version INTEGER NOT NULL)");
    const { rows } = await q.query<{ version: number }>("SELECT version FROM parley_schema");
    return rows[0]?.version ?? 0;
  }

  private async migrate(migrations: Migration[]): Promise<void> {
    for (;;) {
      const done = await this.tx(async (c) => {
        await c.query("SELECT pg_advisory_xact_lock($1, $2)", [LOCK_CLASS, LOCK.migrate]);
        const current = await this.readVersion(c);
        refuseNewer(current, migrations);
        const next = migrations.find((m) => m.version === current + 1);
        if (!next) return true;
        await c.query(next.sql);
        await c.query("DELETE FROM parley_schema");
        await c.query("INSERT INTO parley_schema (version) VALUES ($1)", [next.version]);
        return false;
      });
      if (done) return;
    }
  }

  /** Runs `fn` in one transaction on one connection: committed if it returns, rolled back if it throws. */
  private async tx<T>(fn: (c: pg.PoolClient) => Promise<T>): Promise<T> {
    const c = await this.pool.connect();
    try {
      await c.query("BEGIN");
      const out = await fn(c);
      await c.query("COMMIT");
      return out;
    } catch (err) {
      await c.query("ROLLBACK").catch(() => undefined);
      throw err;
    } finally {
      c.release();
    }
  }

  private async one(sql: string, params: unknown[] = [], q: Queryable = this.pool): Promise<Row | undefined> {
    return (await q.query<Row>(sql, params)).rows[0];
  }
  private async all(sql: string, params: unknown[] = []): Promise<Row[]> {
    return (await this.pool.query<Row>(sql, params)).rows;
  }
  private async count(sql: string, params: unknown[] = [], q: Queryable = this.pool): Promise<number> {
    return (await q.query<{ n: number }>(sql, params)).rows[0]!.n;
  }
  private async changes(sql: string, params: unknown[] = []): Promise<number> {
    return (await this.pool.query(sql, params)).rowCount ?? 0;
  }

  async isTxnDone(txnId: string): Promise<boolean> {
    return (await this.one("SELECT 1 FROM appservice_txn WHERE txn_id = $1", [txnId])) !== undefined;
  }
  async markTxnDone(txnId: string): Promise<void> {
    await this.changes("INSERT INTO appservice_txn (txn_id, completed_at) VALUES ($1, $2) ON CONFLICT DO NOTHING", [txnId, Date.now()]);
  }
  async isEventProcessed(eventId: string): Promise<boolean> {
    return (await this.one("SELECT 1 FROM processed_event WHERE event_id = $1", [eventId])) !== undefined;
  }
  async markEventProcessed(eventId: string): Promise<void> {
    await this.changes("INSERT INTO processed_event (event_id, processed_at) VALUES ($1, $2) ON CONFLICT DO NOTHING", [eventId, Date.now()]);
  }
  async prune(olderThan: number): Promise<void> {
    await this.tx(async (c) => {
      await c.query("DELETE FROM appservice_txn WHERE completed_at < $1", [olderThan]);
      await c.query("DELETE FROM processed_event WHERE processed_at < $1", [olderThan]);
      await c.query("DELETE FROM guest WHERE state = 'deactivated' AND deactivated_at < $1", [olderThan]);
    });
  }

  async getAlias(alias: string): Promise<AliasRecord | undefined> {
    const row = await this.one("SELECT * FROM meeting_alias WHERE alias = $1", [alias]);
    return row && toAlias(row);
  }
  async claimAlias(alias: string): Promise<boolean> {
    const sql = "INSERT INTO meeting_alias (alias, room_id, state, created_at) VALUES ($1, NULL, 'creating', $2) ON CONFLICT DO NOTHING";
    return (await this.changes(sql, [alias, Date.now()])) === 1;
  }
  async claimAliasWithin(alias: string, max: number): Promise<"claimed" | "exists" | "full"> {
    return this.tx(async (c) => {
      // Every capped claim, on every instance, counts and inserts one after the other.
      await c.query("SELECT pg_advisory_xact_lock($1, $2)", [LOCK_CLASS, LOCK.aliasCap]);
      if (await this.one("SELECT 1 FROM meeting_alias WHERE alias = $1", [alias], c)) return "exists";
      if ((await this.count("SELECT count(*) AS n FROM meeting_alias", [], c)) >= max) return "full";
      const r = await c.query(
        "INSERT INTO meeting_alias (alias, room_id, state, created_at) VALUES ($1, NULL, 'creating', $2) ON CONFLICT DO NOTHING",
        [alias, Date.now()],
      );
      return r.rowCount === 1 ? "claimed" : "exists";
    });
  }
  async aliasCount(): Promise<number> {
    return this.count("SELECT count(*) AS n FROM meeting_alias");
  }
  async recordAlias(alias: string, roomId: string): Promise<void> {
    await this.changes(
      `INSERT INTO meeting_alias (alias, room_id, state, created_at) VALUES ($1, $2, 'ready', $3)
       ON CONFLICT (alias) DO UPDATE SET room_id = excluded.room_id, state = 'ready'`,
      [alias, roomId, Date.now()],
    );
  }
  async completeAlias(alias: string, roomId: string): Promise<void> {
    await this.changes("UPDATE meeting_alias SET room_id = $1, state = 'ready' WHERE alias = $2", [roomId, alias]);
  }
  async releaseAlias(alias: string): Promise<void> {
    await this.changes("DELETE FROM meeting_alias WHERE alias = $1 AND state = 'creating'", [alias]);
  }
  async listAliases(state?: AliasRecord["state"]): Promise<AliasRecord[]> {
    const rows = state
      ? await this.all("SELECT * FROM meeting_alias WHERE state = $1 ORDER BY created_at", [state])
      : await this.all("SELECT * FROM meeting_alias ORDER BY created_at");
    return rows.map(toAlias);
  }
  async aliasOfRoom(roomId: string): Promise<AliasRecord | undefined> {
    const row = await this.one("SELECT * FROM meeting_alias WHERE room_id = $1", [roomId]);
    return row && toAlias(row);
  }

  async activeCall(roomId: string): Promise<CallRecord | undefined> {
    const row = await this.one("SELECT * FROM call WHERE room_id = $1 AND ended_at IS NULL", [roomId]);
    return row && toCall(row);
  }
  async startCall(call: NewCall): Promise<CallRecord | undefined> {
    // The partial unique index (one active call per room) decides between racing instances.
    const n = await this.changes(
      `INSERT INTO call (call_id, room_id, origin, started_by, started_at, start_event_id, widget_id)
       VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING`,
      [call.callId, call.roomId, call.origin, call.startedBy, call.startedAt, call.startEventId, call.widgetId],
    );
    return n === 1 ? { ...call, endedAt: null, endedBy: null, endEventId: null, sfu: null } : undefined;
  }
  async endCall(roomId: string, ended: { by: string; at: number; eventId: string | null }): Promise<CallRecord | undefined> {
    const row = await this.one(
      "UPDATE call SET ended_at = $1, ended_by = $2, end_event_id = $3 WHERE room_id = $4 AND ended_at IS NULL RETURNING *",
      [ended.at, ended.by, ended.eventId, roomId],
    );
    return row && toCall(row);
  }
  async lastCall(roomId: string): Promise<CallRecord | undefined> {
    // Of calls started in the same millisecond the later one is active, or ended later (a room's
    // next call starts only once the previous one ended); SQLite orders these by rowid.
    const row = await this.one(
      "SELECT * FROM call WHERE room_id = $1 ORDER BY started_at DESC, ended_at IS NULL DESC, ended_at DESC LIMIT 1",
      [roomId],
    );
    return row && toCall(row);
  }
  async setCallSfu(callId: string, sfu: { node: string; room: string; secret: string } | null): Promise<void> {
    await this.changes("UPDATE call SET sfu_node = $1, sfu_room = $2, sfu_secret = $3 WHERE call_id = $4", [
      sfu?.node ?? null, sfu?.room ?? null, sfu?.secret ?? null, callId,
    ]);
  }
  async activeCalls(): Promise<CallRecord[]> {
    return (await this.all("SELECT * FROM call WHERE ended_at IS NULL ORDER BY started_at")).map(toCall);
  }

  async saveSeat(seat: Omit<SeatRecord, "media">): Promise<void> {
    await this.changes(
      `INSERT INTO call_seat (token_hash, user_id, room_id, call_id, device_id, expires_at, updated_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7)
       ON CONFLICT (token_hash) DO UPDATE SET device_id = excluded.device_id, expires_at = excluded.expires_at, updated_at = excluded.updated_at`,
      [seat.tokenHash, seat.userId, seat.roomId, seat.callId, seat.deviceId, seat.expiresAt, seat.updatedAt],
    );
  }
  async setSeatMedia(tokenHash: string, media: string | null, at: number): Promise<void> {
    await this.changes("UPDATE call_seat SET media = $1, updated_at = $2 WHERE token_hash = $3", [media, at, tokenHash]);
  }
  async forgetSeat(tokenHash: string): Promise<void> {
    await this.changes("DELETE FROM call_seat WHERE token_hash = $1", [tokenHash]);
  }
  async seats(): Promise<SeatRecord[]> {
    return (await this.all("SELECT * FROM call_seat ORDER BY updated_at")).map(toSeat);
  }

  async saveModeration(r: ModerationRecord): Promise<void> {
    if (moderationEmpty(r)) {
      await this.changes("DELETE FROM call_moderation WHERE call_id = $1 AND user_id = $2", [r.callId, r.userId]);
      return;
    }
    await this.changes(
      `INSERT INTO call_moderation (call_id, user_id, forced_audio_by, forced_video_by, share_stopped, hand_at, updated_at)
       VALUES ($1, $2, $3, $4, $5, $6, $7)
       ON CONFLICT (call_id, user_id) DO UPDATE SET forced_audio_by = excluded.forced_audio_by, forced_video_by = excluded.forced_video_by,
         share_stopped = excluded.share_stopped, hand_at = excluded.hand_at, updated_at = excluded.updated_at`,
      [r.callId, r.userId, r.forcedAudioBy, r.forcedVideoBy, r.shareStopped ? 1 : 0, r.handAt, r.updatedAt],
    );
  }
  async forgetCallModeration(callId: string): Promise<void> {
    await this.changes("DELETE FROM call_moderation WHERE call_id = $1", [callId]);
  }
  async moderation(): Promise<ModerationRecord[]> {
    return (await this.all("SELECT * FROM call_moderation ORDER BY updated_at")).map(toModeration);
  }

  async claimOpenIdToken(hash: string, expiresAt: number, now: number): Promise<boolean> {
    return this.tx(async (c) => {
      await c.query("DELETE FROM openid_token_used WHERE expires_at <= $1", [now]);
      // A racing claim of the same hash waits on the row's key, then finds it taken.
      const r = await c.query("INSERT INTO openid_token_used (token_hash, expires_at) VALUES ($1, $2) ON CONFLICT DO NOTHING", [hash, expiresAt]);
      return r.rowCount === 1;
    });
  }
  async releaseOpenIdToken(hash: string): Promise<void> {
    await this.changes("DELETE FROM openid_token_used WHERE token_hash = $1", [hash]);
  }
  async openIdTokenCount(): Promise<number> {
    return this.count("SELECT count(*) AS n FROM openid_token_used");
  }

  async claimGuest(g: NewGuest, max: number): Promise<boolean> {
    return this.tx(async (c) => {
      await c.query("SELECT pg_advisory_xact_lock($1, $2)", [LOCK_CLASS, LOCK.guestCap]);
      if ((await this.count(LIVE_GUESTS, [], c)) >= max) return false;
      await c.query(
        `INSERT INTO guest (user_id, device_id, token_hash, room_id, display_name, state, created_at, deactivate_at)
         VALUES ($1, $2, $3, $4, $5, 'creating', $6, $7)`,
        [g.userId, g.deviceId, g.tokenHash, g.roomId, g.displayName, g.createdAt, g.deactivateAt],
      );
      return true;
    });
  }
  async forgetGuest(userId: string): Promise<void> {
    await this.changes("DELETE FROM guest WHERE user_id = $1", [userId]);
  }
  async guest(userId: string): Promise<GuestRecord | undefined> {
    const row = await this.one("SELECT * FROM guest WHERE user_id = $1", [userId]);
    return row && toGuest(row);
  }
  async guestByTokenHash(hash: string): Promise<GuestRecord | undefined> {
    const row = await this.one("SELECT * FROM guest WHERE token_hash = $1 AND state <> 'deactivated'", [hash]);
    return row && toGuest(row);
  }
  async scheduleGuest(userId: string, state: Exclude<GuestState, "deactivated">, deactivateAt: number): Promise<void> {
    await this.changes("UPDATE guest SET state = $1, deactivate_at = $2, attempts = 0 WHERE user_id = $3 AND state <> 'deactivated'", [
      state, deactivateAt, userId,
    ]);
  }
  async deferGuest(userId: string, deactivateAt: number): Promise<void> {
    await this.changes("UPDATE guest SET deactivate_at = $1, attempts = attempts + 1 WHERE user_id = $2 AND state <> 'deactivated'", [deactivateAt, userId]);
  }
  async revokeGuestToken(userId: string): Promise<void> {
    await this.changes("UPDATE guest SET token_hash = NULL WHERE user_id = $1", [userId]);
  }
  async markGuestDeactivated(userId: string, at: number): Promise<void> {
    await this.changes(
      "UPDATE guest SET state = 'deactivated', token_hash = NULL, deactivate_at = NULL, deactivated_at = $1 WHERE user_id = $2",
      [at, userId],
    );
  }
  async dueGuests(now: number, limit: number): Promise<GuestRecord[]> {
    return (await this.all("SELECT * FROM guest WHERE deactivate_at <= $1 ORDER BY deactivate_at LIMIT $2", [now, limit])).map(toGuest);
  }
  async nextGuestDue(): Promise<number | undefined> {
    const row = await this.one("SELECT min(deactivate_at) AS at FROM guest WHERE deactivate_at IS NOT NULL");
    return (row?.at as number | null | undefined) ?? undefined;
  }
  async liveGuestCount(): Promise<number> {
    return this.count(LIVE_GUESTS);
  }
  async guestsOfRoom(roomId: string): Promise<GuestRecord[]> {
    return (await this.all("SELECT * FROM guest WHERE room_id = $1 AND state <> 'deactivated' ORDER BY created_at", [roomId])).map(toGuest);
  }

  // ---- PersonalDataStore (docs/personal-data.md): the SQL of sqlite.ts's block, in $n form ----

  async appendAudit(events: readonly AuditEvent[]): Promise<void> {
    if (!events.length) return;
    await this.tx(async (c) => {
      for (const e of events) {
        await c.query("INSERT INTO audit_event (at, action, room_id, call_id, actor, target, outcome, details) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)", [
          e.at, e.action, e.roomId, e.callId, e.actor, e.target, e.outcome, e.details ? JSON.stringify(e.details) : null,
        ]);
      }
    });
  }
  async auditOf(ids: readonly string[]): Promise<AuditEvent[]> {
    if (!ids.length) return [];
    return (await this.all("SELECT * FROM audit_event WHERE actor = ANY($1) OR target = ANY($1) ORDER BY at", [[...ids]])).map(toAudit);
  }
  async callsOf(userId: string): Promise<CallRecord[]> {
    return (await this.all("SELECT * FROM call WHERE started_by = $1 OR ended_by = $1 ORDER BY started_at", [userId])).map(toCall);
  }
  async eraseUser(userId: string, auditIds: readonly string[], erasure: { at: number; guestDeactivated: boolean }): Promise<number> {
    return this.tx(async (c) => {
      let rows = 0;
      const run = async (sql: string, params: unknown[]) => void (rows += (await c.query(sql, params)).rowCount ?? 0);
      for (const id of auditIds) {
        // An event about the user and someone else keeps the other's part.
        await run("UPDATE audit_event SET actor = $1 WHERE actor = $2 AND target IS NOT NULL AND target <> $2", [ERASED_USER, id]);
        await run("UPDATE audit_event SET target = $1 WHERE target = $2 AND actor IS NOT NULL AND actor <> $2", [ERASED_USER, id]);
        await run("DELETE FROM audit_event WHERE actor = $1 OR target = $1", [id]);
      }
      await run("UPDATE call SET started_by = $1 WHERE started_by = $2", [ERASED_USER, userId]);
      await run("UPDATE call SET ended_by = $1 WHERE ended_by = $2", [ERASED_USER, userId]);
      await run("DELETE FROM guest WHERE user_id = $1", [userId]);
      await run("DELETE FROM call_seat WHERE user_id = $1", [userId]);
      await run("DELETE FROM call_moderation WHERE user_id = $1", [userId]);
      await run("UPDATE call_moderation SET forced_audio_by = $1 WHERE forced_audio_by = $2", [ERASED_USER, userId]);
      await run("UPDATE call_moderation SET forced_video_by = $1 WHERE forced_video_by = $2", [ERASED_USER, userId]);
      await c.query("INSERT INTO erasure (erased_at, rows_removed, guest_deactivated) VALUES ($1, $2, $3)", [erasure.at, rows, erasure.guestDeactivated ? 1 : 0]);
      return rows;
    });
  }
  async purgePersonalData(cutoff: number): Promise<PurgeCounts> {
    return this.tx(async (c) => ({
      audit: (await c.query("DELETE FROM audit_event WHERE at < $1", [cutoff])).rowCount ?? 0,
      calls: (await c.query("DELETE FROM call WHERE ended_at IS NOT NULL AND ended_at < $1", [cutoff])).rowCount ?? 0,
      guests: (await c.query("DELETE FROM guest WHERE state = 'deactivated' AND deactivated_at < $1", [cutoff])).rowCount ?? 0,
    }));
  }
  async erasures(): Promise<ErasureRecord[]> {
    return (await this.all("SELECT * FROM erasure ORDER BY erased_at")).map(toErasure);
  }

  async probeWrite(): Promise<void> {
    // A replica promoted the wrong way round, or a server in read-only mode, refuses the INSERT.
    await this.tx(async (c) => {
      await c.query("INSERT INTO appservice_txn (txn_id, completed_at) VALUES ($1, $2)", [this.probeId, Date.now()]);
      await c.query("DELETE FROM appservice_txn WHERE txn_id = $1", [this.probeId]);
    });
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await this.pool.end();
  }
}

const LIVE_GUESTS = "SELECT count(*) AS n FROM guest WHERE state <> 'deactivated'";
