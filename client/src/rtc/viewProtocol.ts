// Last-N video on the signalling socket: the `view` request (what this viewer's layout shows) and
// the `speakers` / `videos` pushes (who talks; which videos the server forwards to this viewer, at
// which simulcast layer). The server's zod schema (appservice/src/http/signalling/protocol.ts) is
// the source of truth; the limits below are the agreed protocol's.
import { isFeed, isObj, type R } from "./wireGuards.ts";

type Feed = string | number;

/** The agreed bounds of a `view` request and of the pushes. */
export const VIEW_LIMITS = {
  /** `videos`: remote videos a layout shows (the server caps it further with meetings.media.lastN). */
  maxVideos: 200,
  /** `pinned`: feeds the user pinned. */
  maxPinned: 4,
  /** `tiles`: visible tiles with their height. */
  maxTiles: 200,
  /** A tile's height in device pixels (8K). */
  maxTileHeight: 4320,
  /** `page`: the layout's page, 0-based. */
  maxPage: 1000,
  /** `speakers.recent`: most recent speakers. */
  maxRecent: 50,
  /** `speakers.talking` and `videos.videos`: entries in one push (a call's participants at most). */
  maxEntries: 1000,
} as const;

/** Simulcast layer: 0 low (1/4 size), 1 medium (1/2), 2 high. */
export type Layer = 0 | 1 | 2;

/** Feed ids go as strings (the server's schema takes nothing else). */
export interface ViewRequest {
  type: "view";
  videos: number;
  pinned?: string[];
  tiles?: { feed: string; height: number }[];
  downlink_kbps?: number;
  /** The layout's page, 0-based (absent: 0): past the first, the server gives the tiles on screen their videos first. */
  page?: number;
}

export type ViewPush =
  /** Who talks now, and the most recent speakers (most recent first), for everyone in the call. */
  | { type: "speakers"; talking: Feed[]; recent: Feed[] }
  /** Exactly the remote videos the server forwards to this viewer now; any other feed shows its avatar. */
  | { type: "videos"; videos: { feed: Feed; layer: Layer }[] };

const isLayer = (v: unknown): v is Layer => v === 0 || v === 1 || v === 2;

/** A list of distinct feed ids, at most `max` long. */
function parseFeeds(v: unknown, field: string, max: number, errors: string[]): Feed[] {
  if (!Array.isArray(v)) return (errors.push(`${field} must be an array of feed ids`), []);
  if (v.length > max) return (errors.push(`${field} has more than ${max} entries`), []);
  const seen = new Set<string>();
  const out: Feed[] = [];
  v.forEach((f, i) => {
    if (!isFeed(f)) return void errors.push(`${field}[${i}] must be a feed id`);
    if (seen.has(String(f))) return void errors.push(`${field}[${i}] repeats feed ${String(f)}`);
    seen.add(String(f));
    out.push(f);
  });
  return out;
}

function parseSpeakers(m: R, errors: string[]): ViewPush {
  const talking = parseFeeds(m.talking, "talking", VIEW_LIMITS.maxEntries, errors);
  const recent = parseFeeds(m.recent, "recent", VIEW_LIMITS.maxRecent, errors);
  return { type: "speakers", talking, recent };
}

function parseVideos(m: R, errors: string[]): ViewPush {
  const v = m.videos;
  if (!Array.isArray(v)) return (errors.push("videos must be an array of {feed, layer}"), { type: "videos", videos: [] });
  if (v.length > VIEW_LIMITS.maxEntries) return (errors.push(`videos has more than ${VIEW_LIMITS.maxEntries} entries`), { type: "videos", videos: [] });
  const seen = new Set<string>();
  const videos: { feed: Feed; layer: Layer }[] = [];
  v.forEach((e, i) => {
    if (!isObj(e) || !isFeed(e.feed) || !isLayer(e.layer)) return void errors.push(`videos[${i}] must be {feed, layer: 0|1|2}`);
    if (seen.has(String(e.feed))) return void errors.push(`videos[${i}] repeats feed ${String(e.feed)}`);
    seen.add(String(e.feed));
    videos.push({ feed: e.feed, layer: e.layer });
  });
  return { type: "videos", videos };
}

export const VIEW_PUSHES: Record<ViewPush["type"], (m: R, errors: string[]) => ViewPush | undefined> = {
  speakers: parseSpeakers,
  videos: parseVideos,
};

const clampInt = (n: number, max: number) => Math.max(0, Math.min(max, Math.round(Number.isFinite(n) ? n : 0)));

/**
 * A `view` request within the protocol's bounds whatever the layout computed: feed ids as strings,
 * counts and heights clamped, at most 4 distinct pins and 200 tiles of distinct feeds (the server
 * refuses a repeated one), no downlink estimate unless it is a positive number.
 */
export function viewRequest(v: { videos: number; pinned?: readonly Feed[]; tiles?: readonly { feed: Feed; height: number }[]; downlinkKbps?: number | null; page?: number }): ViewRequest {
  const pinned = [...new Set((v.pinned ?? []).map(String))].slice(0, VIEW_LIMITS.maxPinned);
  const seen = new Set<string>();
  const tiles = (v.tiles ?? [])
    .filter((t) => !seen.has(String(t.feed)) && seen.add(String(t.feed)))
    .slice(0, VIEW_LIMITS.maxTiles)
    .map((t) => ({ feed: String(t.feed), height: clampInt(t.height, VIEW_LIMITS.maxTileHeight) }));
  const kbps = v.downlinkKbps;
  return {
    type: "view",
    videos: clampInt(v.videos, VIEW_LIMITS.maxVideos),
    ...(pinned.length ? { pinned } : {}),
    ...(tiles.length ? { tiles } : {}),
    ...(typeof kbps === "number" && Number.isFinite(kbps) && kbps > 0 ? { downlink_kbps: Math.round(kbps) } : {}),
    ...(v.page ? { page: clampInt(v.page, VIEW_LIMITS.maxPage) } : {}),
  };
}
