// A synthetic call of 12 (test/load: werift endpoints sending VP8 simulcast and Opus, every frame
// sealed in Parley's E2EE format) on the real stack: one Synapse, Parley and Janus. What works
// today: everyone receives everyone's audio and video, the frames arrive sealed as sent, loss
// stays under 1 %, and each video arrives on a simulcast layer read from its key frames.
// LAST-N: the `view` request and the `videos` / `speakers` pushes (the agreed protocol of issue
// 10) are checked by the tests under "last-N", which skip themselves while the server refuses
// `view`; once the server lands they run and must pass. Chromium viewers join here next.
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { clearBytesForCodec, decryptFrame, deriveFrameKey } from "../../client/src/rtc/e2ee/frameCrypto.ts";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { startParleyParticipants, totals, type SyntheticHandle } from "../load/call.ts";
import { OPUS_TOC } from "../load/media.ts";
import type { InboundStats } from "../load/participant.ts";
import { waitFor } from "../support/matrix.ts";

const COUNT = 12;
/** What a viewer shows: 9 tiles of 360 px (a 3x3 grid on a 1080p screen) -> layer 1. */
const VIEW = { videos: 9, tileHeight: 360 };
/** Lighter layers than a camera's (the machine has 2 cores): the same three sizes, fewer packets. */
const LAYERS = [
  { width: 320, height: 180, kbps: 60 },
  { width: 640, height: 360, kbps: 150 },
  { width: 1280, height: 720, kbps: 400 },
];

let stack: Stack;
let A: Institution;
let people: SyntheticHandle[] = [];
let failed = false;

const videoFrom = (h: SyntheticHandle, feed: string): InboundStats | undefined =>
  h.participant.stats().inbound.find((s) => s.kind === "video" && s.feed === feed);
const others = (h: SyntheticHandle) => people.filter((p) => p !== h);

beforeAll(async () => {
  stack = await startInstitutions({ count: 1, allow: () => [], janus: true, calls: () => ({ limits: { socketsPerAddress: 1000 } }) });
  A = stack.institutions[0]!;
  people = await startParleyParticipants({
    inst: A,
    room: A.alias("large"),
    count: COUNT,
    tuning: { fps: 15, layers: LAYERS, view: VIEW, keepLastAudio: true },
  });
  await waitFor("every subscription answered", async () => {
    await Promise.all(people.map((p) => p.participant.settled()));
    return people.every((p) => p.participant.stats().inbound.length >= 2 * (COUNT - 1)) || undefined;
  }, 60_000);
});

afterAll(async () => {
  await Promise.all(people.map((p) => p.close()));
  await stack?.stop({ keep: failed || undefined });
});

describe("a synthetic call of 12", () => {
  it("everyone receives every other participant's audio and video with less than 1 % loss", async () => {
    try {
      await waitFor("audio and video from every other feed at every participant", async () =>
        people.every((h) => others(h).every((o) => {
          const from = h.participant.stats().inbound.filter((s) => s.feed === o.feed && s.packets > 0);
          return from.some((s) => s.kind === "audio") && from.some((s) => s.kind === "video");
        })) || undefined,
      30_000);
      const before = totals(people);
      // A window of a few seconds' worth of packets, counted rather than timed.
      await waitFor("8000 more packets received", async () => (totals(people).received - before.received >= 8000 ? true : undefined), 30_000);
      const after = totals(people);
      const received = after.received - before.received;
      const lost = after.lost - before.lost;
      expect(lost / (received + lost)).toBeLessThan(0.01);
    } catch (err) {
      failed = true;
      throw err;
    }
  });

  it("frames arrive sealed as sent: each sender's key decrypts its Opus frames at every receiver", async () => {
    const viewer = people[0]!;
    await waitFor("an audio frame from every other feed", async () => (others(viewer).every((o) => viewer.participant.lastAudio.has(o.feed)) ? true : undefined));
    for (const o of others(viewer)) {
      const key = await deriveFrameKey(o.mediaKey);
      const r = await decryptFrame(viewer.participant.lastAudio.get(o.feed)!, () => key, clearBytesForCodec("audio", "opus"));
      expect(r.ok, `audio of ${o.feed}`).toBe(true);
      if (r.ok) expect(r.data[0]).toBe(OPUS_TOC);
      // Another participant's key does not open it: the SFU forwarded ciphertext, not a clear frame.
      const wrong = await deriveFrameKey(viewer.mediaKey);
      expect((await decryptFrame(viewer.participant.lastAudio.get(o.feed)!, () => wrong, clearBytesForCodec("audio", "opus"))).ok).toBe(false);
    }
  });

  it("every video arrives on a simulcast layer read from its key frames (Janus switched on our VP8 headers)", async () => {
    await waitFor("a key frame on every video stream", async () =>
      people.every((h) => others(h).every((o) => (videoFrom(h, o.feed)?.layer ?? null) !== null)) || undefined,
    30_000);
    for (const h of people) for (const o of others(h)) expect([0, 1, 2]).toContain(videoFrom(h, o.feed)!.layer);
  });
});

// ---- LAST-N: the server side of issue 10 (view / videos / speakers) ----
describe("last-N (skipped while the server refuses `view`)", () => {
  /** The server takes `view` (it answered the roster-driven one every synthetic viewer sends). */
  async function lastNServer(): Promise<boolean> {
    await waitFor("every viewer's view answered", async () => (people.every((p) => p.participant.viewAccepted !== null) ? true : undefined));
    return people.every((p) => p.participant.viewAccepted === true);
  }

  it("a viewer receives exactly the videos its `videos` push lists, at the listed layers", async (ctx) => {
    if (!(await lastNServer())) return ctx.skip();
    for (const h of people) {
      const pushed = await waitFor("a videos push", async () => h.participant.videos ?? undefined);
      expect(pushed.length).toBe(VIEW.videos);
      expect(pushed.every((v) => v.layer === 1)).toBe(true);
    }
    // The listed videos arrive on their layer; the others' video stops (the server paused it).
    await waitFor("listed videos on their layers", async () =>
      people.every((h) => h.participant.videos!.every((v) => videoFrom(h, v.feed)?.layer === v.layer)) || undefined,
    20_000);
    const before = people.map((h) => h.participant.stats());
    await waitFor("30 more packets on every listed video", async () =>
      people.every((h, i) => h.participant.videos!.every((v) => {
        const was = before[i]!.inbound.find((s) => s.kind === "video" && s.feed === v.feed)?.packets ?? 0;
        return (videoFrom(h, v.feed)?.packets ?? 0) >= was + 30;
      })) || undefined,
    20_000);
    people.forEach((h, i) => {
      const listed = new Set(h.participant.videos!.map((v) => v.feed));
      const moving = h.participant.stats().inbound
        .filter((s) => s.kind === "video" && s.packets > (before[i]!.inbound.find((b) => b.mid === s.mid)?.packets ?? 0))
        .map((s) => s.feed);
      expect(new Set(moving)).toEqual(listed);
    });
  });

  it("a speaker change reaches every viewer's `speakers` push and brings the speaker's video", async (ctx) => {
    if (!(await lastNServer())) return ctx.skip();
    // Someone whose video the first viewer does not get (9 videos of 11 others): talking brings it.
    const viewer = people[0]!;
    const shown = new Set((await waitFor("a videos push", async () => viewer.participant.videos ?? undefined)).map((v) => v.feed));
    const speaker = others(viewer).find((o) => !shown.has(o.feed))!;
    speaker.talk(true);
    try {
      await waitFor("everyone's speakers push names the speaker", async () =>
        others(speaker).every((h) => h.participant.speakers?.talking.includes(speaker.feed)) || undefined,
      15_000);
      await waitFor("the speaker's video in every viewer's videos push", async () =>
        others(speaker).every((h) => h.participant.videos?.some((v) => v.feed === speaker.feed)) || undefined,
      15_000);
      const was = videoFrom(viewer, speaker.feed)?.packets ?? 0;
      await waitFor("the speaker's video arriving", async () => ((videoFrom(viewer, speaker.feed)?.packets ?? 0) > was + 10 ? true : undefined), 15_000);
      expect(viewer.participant.speakers!.recent[0]).toBe(speaker.feed);
    } finally {
      speaker.talk(false);
    }
  });
});

// Last: it makes the call one smaller.
describe("a participant leaving", () => {
  it("is dropped from everyone's subscription, with no failed renegotiation, and the others keep flowing", async () => {
    const leaver = people[COUNT - 1]!;
    const stay = people.slice(0, COUNT - 1);
    await leaver.close();
    await waitFor("everyone unsubscribed the leaver", async () => (stay.every((h) => !h.participant.subscriptions().includes(leaver.feed)) ? true : undefined), 20_000);
    await Promise.all(stay.map((h) => h.participant.settled()));
    expect(stay.map((h) => h.participant.stats().errors)).toEqual(stay.map(() => 0));
    const before = stay.map((h) => h.participant.stats());
    await waitFor("audio from every remaining feed after the leave", async () =>
      stay.every((h, i) => others(h).filter((o) => o !== leaver).every((o) => {
        const was = before[i]!.inbound.find((s) => s.kind === "audio" && s.feed === o.feed)?.packets ?? 0;
        return (h.participant.stats().inbound.find((s) => s.kind === "audio" && s.feed === o.feed)?.packets ?? 0) > was;
      })) || undefined,
    20_000);
    people = stay;
  });
});
