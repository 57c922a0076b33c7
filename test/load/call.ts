// K synthetic participants in one call, joined the way the web client joins: each its own Matrix
// user on the institution's Synapse, joined to the meeting room, an OpenID token, then the call
// API and signalling (ParleyPlane). Or the same participants straight on a Janus room
// (JanusPlane) for a baseline. Returns handles: talk(on/off), per-feed stats, close().
import { randomBytes } from "node:crypto";
import type { RoomRef, Sfu } from "../../appservice/src/sfu/index.ts";
import type { Institution } from "../../scripts/stack/institutions.ts";
import { registerUsers, type RegisteredUser } from "../../scripts/stack/users.ts";
import { JanusPlane, ParleyPlane, type FeedRegistry, type MediaPlane } from "./planes.ts";
import { SyntheticParticipant, type ParticipantOptions, type ParticipantStats } from "./participant.ts";

export type Tuning = Omit<ParticipantOptions, "plane" | "mediaKey">;

export interface SyntheticHandle {
  readonly participant: SyntheticParticipant;
  readonly userId: string;
  /** This participant's media key (participant key mode: what other members would get over Olm). */
  readonly mediaKey: Uint8Array;
  get feed(): string;
  talk(on: boolean): void;
  close(): Promise<void>;
}

const enc = encodeURIComponent;

async function matrix<T>(user: RegisteredUser, clientUrl: string, path: string, body: unknown = {}): Promise<T> {
  const res = await fetch(`${clientUrl}/_matrix/client/v3${path}`, {
    method: "POST",
    headers: { authorization: `Bearer ${user.accessToken}`, "content-type": "application/json" },
    body: JSON.stringify(body),
  });
  const json = (await res.json()) as T;
  if (!res.ok) throw new Error(`POST ${path}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

/**
 * Runs `fn` over `items`, `concurrency` at a time, keeping the order of results. With `firstAlone`
 * the first item runs before the others start: the first join of a meeting alias makes its room,
 * and joins racing that creation were refused (403 "not invited").
 */
export async function inBatches<T, R>(items: T[], concurrency: number, fn: (item: T, i: number) => Promise<R>, firstAlone = false): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  if (firstAlone && items.length) out[next] = await fn(items[next]!, next++);
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) out[i] = await fn(items[i]!, i);
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(concurrency, items.length)) }, worker));
  return out;
}

function handle(participant: SyntheticParticipant, userId: string, mediaKey: Uint8Array): SyntheticHandle {
  return {
    participant,
    userId,
    mediaKey,
    get feed() {
      return participant.feed;
    },
    talk: (on) => participant.talk(on),
    close: () => participant.close(),
  };
}

async function start(plane: () => Promise<MediaPlane>, tuning: Tuning, userId: string): Promise<SyntheticHandle> {
  const mediaKey = randomBytes(32);
  const p = new SyntheticParticipant({ ...tuning, plane: await plane(), mediaKey });
  try {
    await p.join();
  } catch (err) {
    await p.close();
    throw err;
  }
  return handle(p, userId, mediaKey);
}

export interface ParleyCallOptions {
  inst: Institution;
  /** The meeting's alias or room id. */
  room: string;
  count: number;
  /** Localpart prefix of the synthetic users (`<prefix>1`...); numbering starts at `from` (default 1). */
  prefix?: string;
  from?: number;
  tuning?: Tuning;
  /** Joins at once (default 4). */
  concurrency?: number;
}

/** `count` synthetic participants joining `room` through Parley's call API and signalling. */
export async function startParleyParticipants(o: ParleyCallOptions): Promise<SyntheticHandle[]> {
  const clientUrl = o.inst.synapse.clientUrl;
  const users = await registerUsers(o.inst.synapse, o.prefix ?? "synthetic", o.count, {
    password: randomBytes(12).toString("base64url"),
    from: o.from ?? 1,
    concurrency: o.concurrency ?? 4,
  });
  return inBatches(
    users,
    o.concurrency ?? 4,
    (user) => joinParley({ user, clientUrl, callApi: o.inst.parley.url, room: o.room, tuning: o.tuning ?? {} }),
    (o.from ?? 1) === 1,
  );
}

/** One registered user joins the meeting room, then the call (what a worker thread runs too). */
export async function joinParley(j: { user: RegisteredUser; clientUrl: string; callApi: string; room: string; tuning: Tuning }): Promise<SyntheticHandle> {
  const { user, clientUrl } = j;
  await matrix(user, clientUrl, `/join/${enc(j.room)}`);
  const plane = () =>
    ParleyPlane.connect({
      callApi: j.callApi,
      room: j.room,
      deviceId: user.deviceId,
      openIdToken: () => matrix(user, clientUrl, `/user/${enc(user.userId)}/openid/request_token`),
    });
  return start(plane, j.tuning, user.userId);
}

/** A Janus VideoRoom the baseline's participants share, made as Parley makes its rooms. */
export interface JanusRoom {
  sfu: Sfu;
  room: RoomRef;
  registry: FeedRegistry;
}

/** One participant straight on a Janus room (`registry` null: it learns publishers from Janus). */
export function joinJanus(sfu: Sfu, room: RoomRef, registry: FeedRegistry | null, id: string, tuning: Tuning): Promise<SyntheticHandle> {
  return start(() => JanusPlane.connect(sfu, room, registry, id), tuning, id);
}

/** `count` synthetic participants publishing and subscribing straight on a Janus room. */
export async function startJanusParticipants(o: { target: JanusRoom; count: number; from?: number; tuning?: Tuning; concurrency?: number }): Promise<SyntheticHandle[]> {
  const ids = Array.from({ length: o.count }, (_, i) => `synthetic${(o.from ?? 1) + i}`);
  return inBatches(ids, o.concurrency ?? 4, (id) => joinJanus(o.target.sfu, o.target.room, o.target.registry, id, o.tuning ?? {}));
}

/** Inbound packets/bytes/loss summed over every participant (for a window: subtract two of these). */
export function totals(handles: SyntheticHandle[]): { received: number; lost: number; bytes: number; sent: number } {
  return sumStats(handles.map((h) => h.participant.stats()));
}

export function sumStats(stats: ParticipantStats[]): { received: number; lost: number; bytes: number; sent: number } {
  const t = { received: 0, lost: 0, bytes: 0, sent: 0 };
  for (const s of stats) {
    t.sent += s.sent.packets;
    for (const i of s.inbound) {
      t.received += i.packets;
      t.lost += i.lost;
      t.bytes += i.bytes;
    }
  }
  return t;
}
