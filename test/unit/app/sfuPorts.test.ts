import { describe, expect, it } from "vitest";
import { sfuPorts } from "../../../appservice/src/app/sfuPorts.ts";
import type { Sfu, SfuParticipant } from "../../../appservice/src/sfu/index.ts";

function fakeSfu(): Sfu {
  const participant = { participantId: "p1", closed: false, onLost: () => () => undefined, close: async () => undefined } as unknown as SfuParticipant;
  return { openParticipant: async () => participant } as unknown as Sfu;
}

describe("sfuPorts", () => {
  it("holds ICE candidates that arrive before publish/subscribe up to the cap, then M_LIMIT_EXCEEDED", async () => {
    const ports = sfuPorts(fakeSfu(), { requireE2ee: true, maxEarlyCandidates: 3 });
    const media = await ports.open({ node: "n", room: "r", secret: "s" }, "@a:x", () => undefined);
    const c = { candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host" };
    await media.trickle("publisher", c);
    await media.trickle("subscriber", c);
    await media.trickle("publisher", null);
    await expect(media.trickle("subscriber", c)).rejects.toMatchObject({ errcode: "M_LIMIT_EXCEEDED" });
  });
});
