// The governance messages of the signalling socket (docs/governance.md): raised hands, reactions
// and host actions, each translated to one call of the governance rules (calls/governance.ts,
// calls/moderation.ts), which check the room's power levels.
import type { Governance } from "../../calls/governance.ts";
import type { CallMedia, Seat } from "../../calls/callMedia.ts";
import type { Connection, HandlerTable } from "./server.ts";

export function governanceHandlers(governance: Governance, media: Pick<CallMedia, "assertLive" | "moderation">): HandlerTable {
  const { moderation } = media;
  const seatOf = (conn: Connection): Seat => {
    const seat = conn.seat!;
    media.assertLive(seat);
    return seat;
  };
  return {
    hand: async (conn, m) => {
      const { callId, userId } = seatOf(conn).session;
      moderation.raiseHand(callId, userId, m.raised);
    },
    react: async (conn, m) => {
      const { callId, userId } = seatOf(conn).session;
      moderation.react(callId, userId, m.emoji);
    },
    moderate: async (conn, m) => {
      const { callId, userId, roomId } = seatOf(conn).session;
      return governance.act({ callId, userId, roomId }, m.action);
    },
  };
}
