// Last-N: which remote videos one viewer receives (docs/large-meetings.md). Pure: the order is
// pinned (as given), screen shares, feeds talking now, recent speakers (most recent first), then
// everyone else in join order; video-muted feeds and the viewer's own are skipped; the first
// min(videos, cap) are taken. Feeds in `shown` (the tiles on screen of a page past the first) go
// before the others, each group in that order: a viewer on grid page 2 receives page 2's videos.

/** A Janus feed id (the publisher's participant id in the room). */
export type FeedId = string;

/** A feed the viewer could see, as the roster knows it. */
export interface VideoCandidate {
  feed: FeedId;
  /** The publisher turned its video off (or a moderator did): no tile video, whatever the order. */
  videoMuted: boolean;
  /** The video shows a screen share. */
  screen: boolean;
}

export interface LastNInput {
  /** Feeds with a video the viewer can receive, in join order. */
  candidates: readonly VideoCandidate[];
  /** The viewer's own feed (never sent back to it). */
  self?: FeedId | undefined;
  /** Feeds the user pinned, in their order (at most 4, checked by the protocol). */
  pinned: readonly FeedId[];
  /** Feeds talking now, most recent first. */
  talking: readonly FeedId[];
  /** Recent speakers, most recent first. */
  recent: readonly FeedId[];
  /** Feeds with a tile on the viewer's screen when it shows a page past the first (the `view`'s
   *  `tiles`): chosen before any other. Absent or empty: the order alone decides. */
  shown?: ReadonlySet<FeedId>;
  /** How many videos the viewer's layout shows. */
  videos: number;
  /** The operator's cap (meetings.media.lastN). */
  cap: number;
}

/** The feeds whose video the viewer receives, in selection order. */
export function selectVideos(input: LastNInput): FeedId[] {
  const limit = Math.max(0, Math.min(input.videos, input.cap));
  if (limit === 0) return [];
  const eligible = new Map<FeedId, VideoCandidate>();
  for (const c of input.candidates) if (!c.videoMuted && c.feed !== input.self) eligible.set(c.feed, c);
  const chosen: FeedId[] = [];
  const seen = new Set<FeedId>();
  const take = (feed: FeedId) => {
    if (chosen.length >= limit || seen.has(feed) || !eligible.has(feed)) return;
    seen.add(feed);
    chosen.push(feed);
  };
  for (const f of input.pinned) take(f);
  const inOrder = (pick: (feed: FeedId) => void) => {
    for (const c of eligible.values()) if (c.screen) pick(c.feed);
    for (const f of input.talking) pick(f);
    for (const f of input.recent) pick(f);
    for (const f of eligible.keys()) pick(f);
  };
  const shown = input.shown;
  if (shown?.size) {
    inOrder((f) => {
      if (shown.has(f)) take(f);
    });
  }
  inOrder(take);
  return chosen;
}
