// The media messages of the signalling socket, each translated to one call of the call media
// rules (calls/callMedia.ts) and its answer translated back.
import type { CallMedia, Seat } from "../../calls/callMedia.ts";
import { ParleyError } from "../../errors.ts";
import type { MessageOf } from "./protocol.ts";
import type { Connection, HandlerTable } from "./server.ts";

const seatOf = (conn: Connection): Seat => conn.seat!;

export function mediaHandlers(media: CallMedia): HandlerTable {
  return {
    publish: async (conn, m) => {
      const { answerSdp, feedId } = await media.publish(seatOf(conn), { sdp: m.jsep.sdp, simulcast: m.simulcast ?? false, e2ee: m.e2ee });
      return { jsep: { type: "answer", sdp: answerSdp }, feed_id: feedId };
    },
    subscribe: async (conn, m) => {
      const { offerSdp, streams } = await media.subscribe(seatOf(conn), m.feeds, m.e2ee);
      return { ...(offerSdp ? { jsep: { type: "offer", sdp: offerSdp } } : {}), streams };
    },
    unsubscribe: async (conn, m) => {
      const { offerSdp, streams } = await media.unsubscribe(seatOf(conn), m.feeds);
      return { ...(offerSdp ? { jsep: { type: "offer", sdp: offerSdp } } : {}), streams };
    },
    answer: async (conn, m) => media.answer(seatOf(conn), m.jsep.sdp, m.e2ee),
    trickle: async (conn, m) => media.trickle(seatOf(conn), m.target, m.candidate),
    mute: async (conn, m) => media.mute(seatOf(conn), m.kind, m.muted),
    source: async (conn, m) => media.source(seatOf(conn), m.source),
    view: async (conn, m) => media.view(seatOf(conn), viewOf(m)),
    leave: async (conn) => {
      if (conn.seat) await media.release(conn.seat);
    },
  };
}

/** The view message as the call takes it; a feed pinned twice or a tile given twice is refused. */
export function viewOf(m: MessageOf<"view">): { videos: number; pinned: string[]; tiles: { feed: string; height: number }[]; downlinkKbps?: number; page?: number } {
  const pinned = m.pinned ?? [];
  const tiles = m.tiles ?? [];
  if (new Set(pinned).size !== pinned.length) throw new ParleyError("M_INVALID_PARAM", "pinned: a feed is pinned twice");
  if (new Set(tiles.map((t) => t.feed)).size !== tiles.length) throw new ParleyError("M_INVALID_PARAM", "tiles: a feed has two tiles");
  return { videos: m.videos, pinned, tiles, ...(m.downlink_kbps !== undefined ? { downlinkKbps: m.downlink_kbps } : {}), ...(m.page ? { page: m.page } : {}) };
}
