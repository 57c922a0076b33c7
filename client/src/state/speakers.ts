// Who talks, as the server says (its `speakers` push from Janus's talking events), and the order
// of the remote tiles that follows from it: the server's own selection order for last-N video
// (screen shares, talking now, recent speakers, the others in join order), so the first page shows
// the people whose video the server forwards. Pins go first on top of this (layoutModel.ts).
import type { Layer, ViewPush } from "../rtc/protocol.ts";

export interface Speakers {
  /** Tile keys (feed ids as strings) talking now. */
  talking: ReadonlySet<string>;
  /** Tile keys of the most recent speakers, most recent first. */
  recent: readonly string[];
}

export const NO_SPEAKERS: Speakers = { talking: new Set(), recent: [] };

export function speakersFrom(p: Extract<ViewPush, { type: "speakers" }>): Speakers {
  return { talking: new Set(p.talking.map(String)), recent: p.recent.map(String) };
}

/** The videos the server forwards to this viewer, by tile key; null until it has said (all of them). */
export type Forwarded = ReadonlyMap<string, Layer> | null;

export function forwardedFrom(p: Extract<ViewPush, { type: "videos" }>): Forwarded {
  return new Map(p.videos.map((v) => [String(v.feed), v.layer]));
}

/**
 * Remote tiles in speaker order: screen shares, talking now (most recent speaker first), recent
 * speakers, then everyone else as given (join order). Stable: equal ranks keep their order.
 */
export function speakerOrder<T extends { key: string; screen: boolean }>(remotes: readonly T[], s: Speakers): T[] {
  const recency = new Map(s.recent.map((k, i) => [k, i]));
  const rank = (t: T): [number, number] => {
    const r = recency.get(t.key) ?? Infinity;
    if (t.screen) return [0, r];
    if (s.talking.has(t.key)) return [1, r];
    if (r !== Infinity) return [2, r];
    return [3, 0];
  };
  return remotes
    .map((t, i) => ({ t, i, r: rank(t) }))
    .sort((a, b) => a.r[0] - b.r[0] || a.r[1] - b.r[1] || a.i - b.i)
    .map((x) => x.t);
}

/**
 * The speaker the speaker view shows large: the most recent speaker who talks now, else whoever
 * talked last and is still here (the view does not go blank in a pause); null when nobody has.
 */
export function activeSpeaker(s: Speakers, present: (key: string) => boolean): string | null {
  const talkingNow = s.recent.find((k) => s.talking.has(k) && present(k)) ?? [...s.talking].find(present);
  return talkingNow ?? s.recent.find(present) ?? null;
}
