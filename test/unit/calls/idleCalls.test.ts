import { describe, expect, it } from "vitest";
import { IdleCalls } from "../../../appservice/src/calls/idleCalls.ts";
import type { CallRecord } from "../../../appservice/src/store/store.ts";

const call = (callId: string, sfu = true): CallRecord => ({
  callId, roomId: `!${callId}:x`, origin: "alias", startedBy: "@a:x", startedAt: 0, startEventId: null, widgetId: null,
  endedAt: null, endedBy: null, endEventId: null, sfu: sfu ? { node: "n", room: `r-${callId}`, secret: "s" } : null,
});

function harness(calls: CallRecord[]) {
  let now = 0;
  const occupied = new Set<string>();
  const ended: string[] = [];
  const idle = new IdleCalls(300_000, {
    clock: { now: () => now },
    activeCalls: async () => calls,
    occupied: (id) => occupied.has(id),
    endIdle: async (c) => void ended.push(c.callId),
  });
  return { idle, occupied, ended, advance: (ms: number) => (now += ms) };
}

describe("IdleCalls", () => {
  it("ends a call with an SFU room once it has been empty for the idle time, not before", async () => {
    const h = harness([call("c1"), call("c2", false)]);
    await h.idle.sweep();
    h.advance(299_999);
    await h.idle.sweep();
    expect(h.ended).toEqual([]);
    h.advance(1);
    expect((await h.idle.sweep()).map((c) => c.callId)).toEqual(["c1"]);
    expect(h.ended).toEqual(["c1"]);
  });

  it("restarts the count when someone was in the call", async () => {
    const h = harness([call("c1")]);
    await h.idle.sweep();
    h.advance(200_000);
    h.occupied.add("c1");
    await h.idle.sweep();
    h.occupied.delete("c1");
    await h.idle.sweep();
    h.advance(299_000);
    await h.idle.sweep();
    expect(h.ended).toEqual([]);
    h.advance(1_000);
    await h.idle.sweep();
    expect(h.ended).toEqual(["c1"]);
  });

  it("sweeps often enough: half the idle time, between 1 s and 30 s", () => {
    expect(IdleCalls.periodMs(1000)).toBe(1000);
    expect(IdleCalls.periodMs(10_000)).toBe(5000);
    expect(IdleCalls.periodMs(300_000)).toBe(30_000);
  });
});
