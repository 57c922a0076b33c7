import { describe, expect, it } from "vitest";
import { recoverLostRooms } from "../../../appservice/src/calls/sfuRecovery.ts";
import type { CallRecord, SfuRoomRecord } from "../../../appservice/src/store/store.ts";

const call = (callId: string, sfu: SfuRoomRecord | null): CallRecord => ({
  callId, roomId: `!${callId}:x`, origin: "alias", startedBy: "@a:x", startedAt: 0, startEventId: null, widgetId: null,
  endedAt: null, endedBy: null, endEventId: null, sfu,
});

describe("recoverLostRooms", () => {
  it("makes again only the lost rooms of the restarted node and records where they now live", async () => {
    const calls = [call("c1", { node: "n1", room: "r1", secret: "s1" }), call("c2", { node: "n1", room: "r2", secret: "s2" }), call("c3", { node: "n2", room: "r1", secret: "s3" }), call("c4", null)];
    const recorded: [string, SfuRoomRecord | null][] = [];
    const recreated: string[] = [];
    await recoverLostRooms(
      {
        store: { activeCalls: async () => calls, setCallSfu: async (id, sfu) => void recorded.push([id, sfu]) },
        recreateRoom: async (r) => {
          recreated.push(`${r.node}/${r.room}`);
          if (r.room === "r2") throw new Error("no node up");
          return { ...r, node: "n9" };
        },
      },
      "n1",
      ["r1", "r2"],
    );
    expect(recreated.sort()).toEqual(["n1/r1", "n1/r2"]);
    expect(recorded).toEqual([["c1", { node: "n9", room: "r1", secret: "s1" }]]);
  });
});
