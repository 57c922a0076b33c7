// What both store backends share: the numbered migration files and the mapping of table rows
// (snake_case columns) to the records of the storage seam.
import { randomBytes } from "node:crypto";
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import type { AliasRecord, AuditEvent, CallRecord, ErasureRecord, GuestRecord, GuestState, ModerationRecord, SeatRecord } from "./store.ts";

/** The one numbered list of migrations, written in SQL both backends take (see postgres.ts). */
export const MIGRATIONS_DIR = path.join(import.meta.dirname, "migrations");

export interface Migration {
  version: number;
  name: string;
  sql: string;
}

/** The `NNN-name.sql` files of `dir`, numbered from 001 without gaps. */
export function listMigrations(dir = MIGRATIONS_DIR): Migration[] {
  return readdirSync(dir)
    .filter((f) => /^\d{3}-[\w-]+\.sql$/.test(f))
    .sort()
    .map((f, i) => {
      const version = Number(f.slice(0, 3));
      if (version !== i + 1) throw new Error(`migration ${f}: expected number ${String(i + 1).padStart(3, "0")}`);
      return { version, name: f, sql: readFileSync(path.join(dir, f), "utf8") };
    });
}

export function refuseNewer(current: number, migrations: Migration[]): void {
  const latest = migrations.at(-1)?.version ?? 0;
  if (current > latest) {
    throw new Error(`store schema version ${current} is newer than this Parley knows (${latest}); refusing to run`);
  }
}

export type Row = Record<string, unknown>;

/**
 * The appservice_txn id the health check's write uses: never one a homeserver sends (Synapse's
 * are numbers), and one per store instance, so that instances sharing a database never wait on
 * each other's probe row.
 */
export const probeTxnId = (): string => `parley-health-probe-${randomBytes(8).toString("hex")}`;

export const toAlias = (r: Row): AliasRecord => ({
  alias: r.alias as string,
  roomId: (r.room_id as string | null) ?? null,
  state: r.state as AliasRecord["state"],
  createdAt: r.created_at as number,
});

export const toCall = (r: Row): CallRecord => ({
  callId: r.call_id as string,
  roomId: r.room_id as string,
  origin: r.origin as CallRecord["origin"],
  startedBy: r.started_by as string,
  startedAt: r.started_at as number,
  startEventId: (r.start_event_id as string | null) ?? null,
  widgetId: (r.widget_id as string | null) ?? null,
  endedAt: (r.ended_at as number | null) ?? null,
  endedBy: (r.ended_by as string | null) ?? null,
  endEventId: (r.end_event_id as string | null) ?? null,
  sfu: r.sfu_node ? { node: r.sfu_node as string, room: r.sfu_room as string, secret: r.sfu_secret as string } : null,
});

export const toGuest = (r: Row): GuestRecord => ({
  userId: r.user_id as string,
  deviceId: r.device_id as string,
  roomId: r.room_id as string,
  displayName: r.display_name as string,
  state: r.state as GuestState,
  createdAt: r.created_at as number,
  deactivateAt: (r.deactivate_at as number | null) ?? null,
  deactivatedAt: (r.deactivated_at as number | null) ?? null,
  attempts: r.attempts as number,
});

export const toAudit = (r: Row): AuditEvent => ({
  at: r.at as number,
  action: r.action as string,
  roomId: (r.room_id as string | null) ?? null,
  callId: (r.call_id as string | null) ?? null,
  actor: (r.actor as string | null) ?? null,
  target: (r.target as string | null) ?? null,
  outcome: (r.outcome as string | null) ?? null,
  details: r.details ? (JSON.parse(r.details as string) as Record<string, unknown>) : null,
});

export const toErasure = (r: Row): ErasureRecord => ({
  erasedAt: r.erased_at as number,
  rowsRemoved: r.rows_removed as number,
  guestDeactivated: Number(r.guest_deactivated) === 1,
});

export const toModeration = (r: Row): ModerationRecord => ({
  callId: r.call_id as string,
  userId: r.user_id as string,
  forcedAudioBy: (r.forced_audio_by as string | null) ?? null,
  forcedVideoBy: (r.forced_video_by as string | null) ?? null,
  shareStopped: Number(r.share_stopped) === 1,
  handAt: r.hand_at === null ? null : Number(r.hand_at),
  updatedAt: Number(r.updated_at),
});

export const toSeat = (r: Row): SeatRecord => ({
  tokenHash: r.token_hash as string,
  userId: r.user_id as string,
  roomId: r.room_id as string,
  callId: r.call_id as string,
  deviceId: r.device_id as string,
  expiresAt: r.expires_at === null ? null : Number(r.expires_at),
  media: (r.media as string | null) ?? null,
  updatedAt: Number(r.updated_at),
});
