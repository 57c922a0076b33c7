// A simulcast layer switch completes even when the publisher drops Janus's key frame request
// (docs/large-meetings.md, "A switch is done when Janus says so"). Janus 1.1.2 switches a
// subscriber's substream on the target layer's next key frame and asks the publisher for one once
// per `configure`; an encoder drops requests within a window of the last one it honoured
// (libwebrtc: 300 ms), so a switch asked just after another viewer's (or the subscription's own
// start) waited for a key frame that never came, and the viewer stayed on the old layer. Parley
// now asks again until Janus reports the switch. Here the synthetic publishers drop every request
// within 2.5 s of an honoured one (a wide window makes the old failure certain, not a race), on
// the real stack: Synapse, Parley, Janus, two werift participants publishing VP8 simulcast.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { startParleyParticipants, type SyntheticHandle } from "../load/call.ts";
import { LARGE_CALL_FPS, LARGE_CALL_LAYERS } from "../load/largeCall.ts";
import { waitFor } from "../support/matrix.ts";

const WINDOW_MS = 2500;

let stack: Stack;
let A: Institution;
let people: SyntheticHandle[] = [];
let failed = false;

const videoLayer = (viewer: SyntheticHandle, from: SyntheticHandle) =>
  viewer.participant.stats().inbound.find((s) => s.kind === "video" && s.feed === from.feed)?.layer ?? null;
const pushedLayer = (viewer: SyntheticHandle, from: SyntheticHandle) => viewer.participant.videos?.find((v) => v.feed === from.feed)?.layer;
const view = (viewer: SyntheticHandle, from: SyntheticHandle, height: number) =>
  viewer.participant.view({ videos: 1, pinned: [], tiles: [{ feed: from.feed, height }] });

beforeAll(async () => {
  stack = await startInstitutions({ count: 1, allow: () => [], janus: true });
  A = stack.institutions[0]!;
  people = await startParleyParticipants({
    inst: A,
    room: A.alias("layers"),
    count: 2,
    tuning: { fps: LARGE_CALL_FPS, layers: LARGE_CALL_LAYERS, keyframeRequestWindowMs: WINDOW_MS },
  });
  await waitFor("each participant receiving the other's video", async () => {
    await Promise.all(people.map((p) => p.participant.settled()));
    return people.every((p, i) => videoLayer(p, people[1 - i]!) !== null) || undefined;
  }, 30_000);
});

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  await Promise.all(people.map((p) => p.close()));
  await stack?.stop({ keep: failed || undefined });
});

describe("a layer switch whose key frame request the publisher drops", () => {
  it("still reaches the asked layer: Parley asks again until Janus reports the switch", async () => {
    const [viewer, sender] = [people[0]!, people[1]!];
    // Before any view Parley asks for layer 1; each step below is a change from the last.
    await waitFor("video arriving on layer 1", async () => (videoLayer(viewer, sender) === 1 ? true : undefined), 15_000);
    for (const [height, layer] of [[180, 0], [720, 2], [360, 1], [180, 0]] as const) {
      // Asked right after the last switch's key frame: inside the sender's window, so Janus's
      // first request is dropped.
      const dropped = sender.participant.stats().sent.plisDropped;
      expect(await view(viewer, sender, height)).toBe(true);
      await waitFor(`the push naming layer ${layer}`, async () => (pushedLayer(viewer, sender) === layer ? true : undefined), 10_000);
      await waitFor(`video arriving on layer ${layer}`, async () => (videoLayer(viewer, sender) === layer ? true : undefined), 15_000);
      // Proof the case was exercised: the sender did drop requests in this step.
      expect(sender.participant.stats().sent.plisDropped).toBeGreaterThan(dropped);
    }
  });
});
