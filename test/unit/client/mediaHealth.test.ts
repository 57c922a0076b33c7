// The stale-media check with fake receive stats and a fake clock: a stop shows within 2 s at the
// sampling rate the call uses, a muted camera or a quiet (DTX) microphone is not a stop, one
// person's stop marks only them, and it all clears once media moves again.
import { describe, expect, it } from "vitest";
import { inboundSamples, MediaHealth, STALE_MS, type ExpectedFeed, type MediaSample } from "../../../client/src/rtc/mediaHealth.ts";
import { MEDIA_EVERY_MS, e2eeView, NO_MEDIA_TEXT, NO_ONE_ELSE_TEXT } from "../../../client/src/state/mediaState.ts";

const feed = (key: string, o: { audio?: boolean; video?: boolean } = {}): ExpectedFeed => ({
  key,
  audio: { track: `${key}-a`, expected: o.audio ?? true },
  video: { track: `${key}-v`, expected: o.video ?? true },
});

/** Receive counters per track, advanced by the test. */
class Wire {
  readonly counts = new Map<string, number>();
  peers: RTCPeerConnectionState[] = ["connected", "connected"];
  tick(...tracks: string[]): void {
    for (const t of tracks) this.counts.set(t, (this.counts.get(t) ?? 0) + 100);
  }
  sample(): MediaSample {
    return { inbound: [...this.counts].map(([track, count]) => ({ track, kind: track.endsWith("-v") ? "video" : "audio", count })), peers: this.peers };
  }
}

/** Runs the check every MEDIA_EVERY_MS for `ms`, with `flow` deciding which tracks move at each step. */
function run(h: MediaHealth, wire: Wire, feeds: ExpectedFeed[], from: number, ms: number, flow: (t: number) => string[]) {
  let v = h.update(from, feeds, wire.sample());
  const seen: { t: number; call: string; stale: string[] }[] = [];
  for (let t = from + MEDIA_EVERY_MS; t <= from + ms; t += MEDIA_EVERY_MS) {
    wire.tick(...flow(t));
    v = h.update(t, feeds, wire.sample());
    seen.push({ t, call: v.call, stale: [...v.stale] });
  }
  return { v, seen };
}

describe("the stale-media check", () => {
  it("says stalled within 2 s of every feed stopping, and flowing again once media moves", () => {
    const h = new MediaHealth();
    const wire = new Wire();
    const feeds = [feed("b"), feed("c")];
    const all = ["b-a", "b-v", "c-a", "c-v"];
    expect(run(h, wire, feeds, 0, 3000, () => all).v.call).toBe("flowing");
    const stopAt = 3000;
    const { seen } = run(h, wire, feeds, stopAt, 4000, () => []);
    const first = seen.find((s) => s.call === "stalled")!;
    expect(first.t - stopAt).toBeLessThanOrEqual(2000);
    expect(first.t - stopAt).toBeGreaterThanOrEqual(STALE_MS);
    expect(first.stale.sort()).toEqual(["b", "c"]);
    const back = run(h, wire, feeds, stopAt + 4000, 500, () => all).v;
    expect(back.call).toBe("flowing");
    expect([...back.stale]).toEqual([]);
  });

  it("marks only the person whose media stopped", () => {
    const h = new MediaHealth();
    const wire = new Wire();
    const feeds = [feed("b"), feed("c")];
    run(h, wire, feeds, 0, 2000, () => ["b-a", "b-v", "c-a", "c-v"]);
    const { v } = run(h, wire, feeds, 2000, 2500, () => ["c-a", "c-v"]);
    expect(v.call).toBe("flowing");
    expect([...v.stale]).toEqual(["b"]);
    expect([...v.flowing]).toEqual(["c"]);
  });

  it("a camera turned off (the roster says muted) is no stop while DTX audio trickles in every 400 ms", () => {
    const h = new MediaHealth();
    const wire = new Wire();
    const feeds = [feed("b", { video: false })];
    // A packet every 400 ms: the silence of a quiet speaker with Opus DTX.
    const { seen } = run(h, wire, feeds, 0, 10_000, (t) => (Math.floor(t / 400) !== Math.floor((t - MEDIA_EVERY_MS) / 400) ? ["b-a"] : []));
    expect(seen.filter((s) => s.t > 1000).every((s) => s.call === "flowing" && s.stale.length === 0)).toBe(true);
  });

  it("someone muted in both sends nothing, and that is quiet, not stalled", () => {
    const h = new MediaHealth();
    const wire = new Wire();
    run(h, wire, [feed("b")], 0, 2000, () => ["b-a", "b-v"]);
    const { v } = run(h, wire, [feed("b", { audio: false, video: false })], 2000, 5000, () => []);
    expect(v.call).toBe("quiet");
    expect([...v.stale]).toEqual([]);
  });

  it("audio under a frozen picture still says the person is there", () => {
    const h = new MediaHealth();
    const wire = new Wire();
    run(h, wire, [feed("b")], 0, 2000, () => ["b-a", "b-v"]);
    const { v } = run(h, wire, [feed("b")], 2000, 3000, () => ["b-a"]);
    expect(v.call).toBe("flowing");
    expect([...v.stale]).toEqual([]);
  });

  it("alone: no feeds, nothing to judge", () => {
    expect(new MediaHealth().update(0, [], new Wire().sample()).call).toBe("alone");
  });

  it("a call that never got media is connecting, then stalled once every feed had its time to start", () => {
    const h = new MediaHealth({ connectMs: 5000 });
    const wire = new Wire();
    const { seen } = run(h, wire, [feed("b")], 0, 6000, () => []);
    expect(seen.find((s) => s.t === 4000)?.call).toBe("connecting");
    expect(seen.at(-1)).toMatchObject({ call: "stalled", stale: ["b"] });
  });

  it("after media flowed once, new tracks that do not move yet (media restarted) are still stalled", () => {
    const h = new MediaHealth();
    const wire = new Wire();
    run(h, wire, [feed("b")], 0, 2000, () => ["b-a", "b-v"]);
    const renewed: ExpectedFeed = { key: "b2", audio: { track: "b2-a", expected: true }, video: { track: "b2-v", expected: true } };
    const { v } = run(h, wire, [renewed], 2000, 1000, () => []);
    expect(v.call).toBe("stalled");
    expect(run(h, wire, [renewed], 3000, 500, () => ["b2-a"]).v.call).toBe("flowing");
  });

  it("a media connection whose ICE/DTLS is down stalls the call at once", () => {
    const h = new MediaHealth();
    const wire = new Wire();
    run(h, wire, [feed("b")], 0, 1000, () => ["b-a", "b-v"]);
    wire.peers = ["connected", "disconnected"];
    wire.tick("b-a");
    expect(h.update(1250, [feed("b")], wire.sample()).call).toBe("stalled");
  });

  it("a track reused for another feed starts from its counter, not from zero", () => {
    const h = new MediaHealth();
    const wire = new Wire();
    run(h, wire, [feed("b")], 0, 1000, () => ["b-a", "b-v"]);
    const moved: ExpectedFeed = { key: "c", audio: { track: "b-a", expected: true }, video: { track: "b-v", expected: true } };
    // The first look at "c" sees big counters but no growth yet.
    expect([...h.update(1250, [moved], wire.sample()).flowing]).toEqual([]);
  });

  it("reads inbound-rtp stats by track", () => {
    const report = new Map<string, Record<string, unknown>>([
      ["a", { type: "inbound-rtp", kind: "audio", trackIdentifier: "t1", packetsReceived: 3, bytesReceived: 100 }],
      ["v", { type: "inbound-rtp", kind: "video", trackIdentifier: "t2", packetsReceived: 5, bytesReceived: 900, framesDecoded: 2 }],
      ["o", { type: "outbound-rtp", kind: "video", packetsSent: 9 }],
    ]) as unknown as RTCStatsReport;
    expect(inboundSamples(report)).toEqual([
      { track: "t1", kind: "audio", count: 103 },
      { track: "t2", kind: "video", count: 907 },
    ]);
  });
});

describe("the E2EE badge", () => {
  const names = { failing: [], waiting: [] };
  it("claims encryption only for media that arrives", () => {
    expect(e2eeView("participant", null, names, null, "ok")).toMatchObject({ state: "encrypted", text: "Encrypted end to end" });
    expect(e2eeView("participant", null, names, null, "alone")).toMatchObject({ state: "alone", encrypted: false, text: NO_ONE_ELSE_TEXT });
    expect(e2eeView("participant", null, names, null, "none")).toMatchObject({ state: "no-media", encrypted: false, text: NO_MEDIA_TEXT });
    expect(e2eeView("participant", null, names, null, "connecting")).toMatchObject({ state: "no-media", encrypted: false });
    expect(e2eeView("participant", null, { failing: [], waiting: ["Bob"] }, null, "connecting")).toMatchObject({ state: "waiting", text: "Waiting for media keys from Bob" });
    expect(e2eeView("participant", null, { failing: ["Bob"], waiting: [] }, null, "ok")).toMatchObject({ state: "failing" });
  });
});
