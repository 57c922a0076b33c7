// The view reporter (fake timers): debounced, spaced, sent only on change, again after a
// reconnect, harmless when an older server refuses it; and the downlink estimate it carries.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ParleyClientError } from "../../../client/src/errors.ts";
import type { CallSnapshot } from "../../../client/src/rtc/call.ts";
import type { ViewRequest } from "../../../client/src/rtc/protocol.ts";
import { DownlinkEstimator, receiveSample, ViewReporter } from "../../../client/src/rtc/view.ts";
import type { ViewReport } from "../../../client/src/state/layoutModel.ts";
import { Store } from "../../../client/src/state/store.ts";

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

const report = (videos: number, height = 360): ViewReport => ({
  videos,
  pinned: [],
  tiles: Array.from({ length: videos }, (_, i) => ({ feed: String(i + 1), height })),
});

function setup(opts: { refuse?: ParleyClientError | null; stats?: () => RTCStatsReport | null } = {}) {
  const state = new Store<CallSnapshot>({ phase: "joining", error: null, roomId: null, ownFeed: null, remotes: [] });
  const layout = new Store<{ report: ViewReport | null }>({ report: null });
  const sent: ViewRequest[] = [];
  const call = {
    state,
    refuse: opts.refuse ?? null,
    send: vi.fn(async (r: ViewRequest) => {
      if (call.refuse) throw call.refuse;
      sent.push(r);
    }),
    receiveStats: async () => opts.stats?.() ?? null,
  };
  const reporter = new ViewReporter({ call, layout, debounceMs: 300, maxWaitMs: 2000, minIntervalMs: 1000, statsEveryMs: opts.stats ? 1000 : 0 });
  const show = (r: ViewReport | null) => layout.set({ report: r });
  return { reporter, call, state, show, sent };
}

/** Two layouts, 2 s apart, reported to a server that refuses `view` with `err` (console.warn caught). */
async function twoLayoutsRefused(err: ParleyClientError) {
  const warn = vi.spyOn(console, "warn").mockImplementation(() => undefined);
  const s = setup({ refuse: err });
  s.state.update({ phase: "connected" });
  s.show(report(2));
  await vi.advanceTimersByTimeAsync(2000);
  s.show(report(3));
  await vi.advanceTimersByTimeAsync(2000);
  return { ...s, warn };
}

describe("ViewReporter", () => {
  it("sends nothing before the call is connected and the stage has a size, then the layout once", async () => {
    const { state, show, sent } = setup();
    show(report(4));
    await vi.advanceTimersByTimeAsync(1000);
    expect(sent).toEqual([]);
    state.update({ phase: "connected" });
    await vi.advanceTimersByTimeAsync(299);
    expect(sent).toEqual([]);
    await vi.advanceTimersByTimeAsync(1);
    expect(sent).toEqual([{ type: "view", videos: 4, tiles: report(4).tiles }]);
  });

  it("sends one request for a resize storm, and none when the layout comes back to what was sent", async () => {
    const { state, show, sent } = setup();
    state.update({ phase: "connected" });
    show(report(4));
    await vi.advanceTimersByTimeAsync(1000);
    for (let h = 100; h < 400; h += 10) {
      show(report(4, h));
      await vi.advanceTimersByTimeAsync(16);
    }
    await vi.advanceTimersByTimeAsync(1000);
    expect(sent.map((r) => r.tiles![0]!.height)).toEqual([360, 390]);
    show(report(4, 200));
    await vi.advanceTimersByTimeAsync(100);
    show(report(4, 390)); // back before the debounce ran out
    await vi.advanceTimersByTimeAsync(2000);
    expect(sent).toHaveLength(2);
  });

  it("reports a layout that never settles every maxWait, and never twice within minInterval", async () => {
    const { state, show, sent } = setup();
    state.update({ phase: "connected" });
    const at: number[] = [];
    const t0 = Date.now();
    for (let i = 0; i < 60; i++) {
      show(report(1 + i));
      await vi.advanceTimersByTimeAsync(100);
      while (at.length < sent.length) at.push(Date.now() - t0);
    }
    expect(sent.length).toBeGreaterThanOrEqual(2);
    expect(sent.length).toBeLessThanOrEqual(4);
    for (let i = 1; i < at.length; i++) expect(at[i]! - at[i - 1]!).toBeGreaterThanOrEqual(1000);
  });

  it("sends the view again after a reconnect", async () => {
    const { state, show, sent } = setup();
    state.update({ phase: "connected" });
    show(report(2));
    await vi.advanceTimersByTimeAsync(2000);
    state.update({ phase: "reconnecting" });
    await vi.advanceTimersByTimeAsync(2000);
    expect(sent).toHaveLength(1);
    state.update({ phase: "connected" });
    await vi.advanceTimersByTimeAsync(2000);
    expect(sent).toHaveLength(2);
    expect(sent[1]).toEqual(sent[0]);
  });

  it("is harmless when the server does not know view: logs once, stops asking until the next session", async () => {
    const { warn, call, state, sent } = await twoLayoutsRefused(new ParleyClientError("M_BAD_JSON", "signalling", { detail: "view: type invalid" }));
    expect(call.send).toHaveBeenCalledTimes(1);
    expect(warn.mock.calls.filter((c) => String(c[0]).includes("view"))).toHaveLength(1);
    // A reconnect may land on an upgraded server: try again.
    call.refuse = null;
    state.update({ phase: "reconnecting" });
    state.update({ phase: "connected" });
    await vi.advanceTimersByTimeAsync(2000);
    expect(sent).toEqual([{ type: "view", videos: 3, tiles: report(3).tiles }]);
    warn.mockRestore();
  });

  it("keeps reporting changes after another refusal, logging it once", async () => {
    const { warn, call } = await twoLayoutsRefused(new ParleyClientError("M_INVALID_PARAM", "signalling"));
    expect(call.send).toHaveBeenCalledTimes(2);
    expect(warn).toHaveBeenCalledTimes(1);
    warn.mockRestore();
  });

  it("sends nothing more once stopped", async () => {
    const { reporter, state, show, sent } = setup();
    state.update({ phase: "connected" });
    show(report(2));
    reporter.stop();
    await vi.advanceTimersByTimeAsync(5000);
    expect(sent).toEqual([]);
  });

  it("adds the downlink estimate when the receive stats show heavy loss", async () => {
    let bytes = 0, packets = 0, lost = 0;
    const stats = () => {
      // 1 Mbit/s arriving, 20 % of the packets lost
      bytes += 125_000;
      packets += 80;
      lost += 20;
      return new Map([["in", { type: "inbound-rtp", bytesReceived: bytes, packetsReceived: packets, packetsLost: lost }]]) as unknown as RTCStatsReport;
    };
    const { state, show, sent } = setup({ stats });
    state.update({ phase: "connected" });
    show(report(2));
    await vi.advanceTimersByTimeAsync(5000);
    expect(sent[0]).not.toHaveProperty("downlink_kbps");
    expect(sent.at(-1)!.downlink_kbps).toBeGreaterThan(700);
    expect(sent.at(-1)!.downlink_kbps).toBeLessThan(1000);
  });
});

describe("DownlinkEstimator", () => {
  const s = (at: number, kbits: number, packets: number, lost: number) => ({ at, bytes: kbits * 125, packets, lost });
  it("knows no limit while nothing is lost", () => {
    const d = new DownlinkEstimator();
    d.add(s(0, 0, 0, 0));
    d.add(s(1000, 3000, 300, 0));
    expect(d.kbps()).toBeNull();
  });
  it("drops to about what arrives under heavy loss, then grows back to no limit", () => {
    const d = new DownlinkEstimator({ growth: 2, maxKbps: 20_000, windowMs: 1000 });
    d.add(s(0, 0, 0, 0));
    d.add(s(1000, 2000, 90, 10)); // 2 Mbit/s, 10 % lost
    expect(d.kbps()).toBeGreaterThan(1500);
    expect(d.kbps()).toBeLessThan(1800);
    let at = 1000, kbits = 2000, packets = 90;
    for (let i = 0; i < 5; i++) d.add(s((at += 1000), (kbits += 2000), (packets += 100), 10));
    expect(d.kbps()).toBeNull();
  });
  it("starts again when the counters go back (a new peer connection)", () => {
    const d = new DownlinkEstimator({ windowMs: 1000 });
    d.add(s(0, 0, 0, 0));
    d.add(s(1000, 1000, 50, 50));
    expect(d.kbps()).not.toBeNull();
    d.add(s(2000, 10, 1, 0));
    d.add(s(3000, 1000, 100, 0));
    expect(d.kbps()).not.toBeNull(); // held (growing slowly), not recomputed from a negative rate
  });
  it("sums the inbound RTP streams of a stats report", () => {
    const report = new Map<string, Record<string, unknown>>([
      ["a", { type: "inbound-rtp", bytesReceived: 10, packetsReceived: 2, packetsLost: 1 }],
      ["v", { type: "inbound-rtp", bytesReceived: 30, packetsReceived: 3, packetsLost: -1 }],
      ["o", { type: "outbound-rtp", bytesSent: 99 }],
    ]) as unknown as RTCStatsReport;
    expect(receiveSample(report, 5)).toEqual({ at: 5, bytes: 40, packets: 5, lost: 1 });
    expect(receiveSample(null, 5)).toBeNull();
  });
});
