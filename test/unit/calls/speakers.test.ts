import { beforeEach, describe, expect, it } from "vitest";
import { Coalescer, SpeakerOrder } from "../../../appservice/src/calls/speakers.ts";
import { FakeTime } from "./fakeTimers.ts";

let time: FakeTime;
let changes: string[];
let order: SpeakerOrder;

beforeEach(() => {
  time = new FakeTime();
  changes = [];
  order = new SpeakerOrder({ holdMs: 1500, gapMs: 600, recentMax: 3 }, { clock: time.clock, timers: time }, (w) => changes.push(w));
});

describe("speaker order", () => {
  it("a feed that talks past the hold becomes the newest speaker", () => {
    order.talking("a");
    expect(order.snapshot()).toEqual({ talking: ["a"], speaking: [], recent: [] });
    time.advance(1499);
    expect(order.snapshot().recent).toEqual([]);
    time.advance(1);
    expect(order.snapshot()).toEqual({ talking: ["a"], speaking: ["a"], recent: ["a"] });
    expect(changes).toEqual(["talking", "order"]);
  });

  it("a one-word interjection shows as talking but reorders nobody", () => {
    order.talking("a");
    time.advance(2000);
    order.talking("b");
    time.advance(600);
    order.stopped("b");
    time.advance(5000);
    expect(order.snapshot()).toEqual({ talking: ["a"], speaking: ["a"], recent: ["a"] });
    expect(changes).toEqual(["talking", "order", "talking", "talking"]);
  });

  it("a new speaker goes to the front; one who stops stays in recent; talking lists newest first", () => {
    order.talking("a");
    time.advance(1500);
    order.talking("b");
    time.advance(1500);
    expect(order.snapshot()).toEqual({ talking: ["b", "a"], speaking: ["b", "a"], recent: ["b", "a"] });
    order.stopped("b");
    // a pause: b's turn goes on for the gap, then ends (b stays in recent)
    expect(order.snapshot()).toEqual({ talking: ["a"], speaking: ["b", "a"], recent: ["b", "a"] });
    time.advance(600);
    expect(order.snapshot()).toEqual({ talking: ["a"], speaking: ["a"], recent: ["b", "a"] });
    expect(changes.at(-1)).toBe("order");
    // a new turn of a past the hold: to the front again
    order.stopped("a");
    time.advance(600);
    order.talking("a");
    time.advance(1500);
    expect(order.snapshot().recent).toEqual(["a", "b"]);
  });

  it("recent keeps recentMax entries; a feed that left is gone from every list", () => {
    for (const f of ["a", "b", "c", "d"]) {
      order.talking(f);
      time.advance(1500);
      order.stopped(f);
    }
    time.advance(600);
    expect(order.snapshot().recent).toEqual(["d", "c", "b"]);
    order.talking("c");
    order.remove("c");
    expect(order.snapshot()).toEqual({ talking: [], speaking: [], recent: ["d", "b"] });
    order.talking("x");
    order.close();
    expect(time.timers).toBe(0);
  });

  it("pauses between words do not end a turn: a speaker who pauses every 400 ms still takes the floor", () => {
    order.talking("a");
    for (let i = 0; i < 4; i++) {
      time.advance(300);
      order.stopped("a");
      time.advance(100);
      order.talking("a");
    }
    expect(order.snapshot().recent).toEqual(["a"]);
    // the hold ending during a pause counts once the feed talks again within the gap
    order.talking("b");
    time.advance(1400);
    order.stopped("b");
    time.advance(300);
    expect(order.snapshot().recent).toEqual(["a"]);
    order.talking("b");
    expect(order.snapshot().recent).toEqual(["b", "a"]);
    // a longer pause ends the turn: no longer among the speaking, still recent
    order.stopped("b");
    time.advance(600);
    expect(order.snapshot()).toEqual({ talking: ["a"], speaking: ["a"], recent: ["b", "a"] });
  });

  it("a muted feed's turn ends at once, without waiting for the gap", () => {
    order.talking("a");
    time.advance(1500);
    order.silenced("a");
    expect(order.snapshot()).toEqual({ talking: [], speaking: [], recent: ["a"] });
    expect(time.timers).toBe(0);
  });

  it("repeated talking events are one; a stop without a start is nothing", () => {
    order.talking("a");
    order.talking("a");
    order.stopped("zz");
    expect(changes).toEqual(["talking"]);
  });

  it("holdMs 0 promotes at once", () => {
    const o = new SpeakerOrder({ holdMs: 0, gapMs: 0, recentMax: 50 }, { clock: time.clock, timers: time }, () => undefined);
    o.talking("a");
    expect(o.snapshot().recent).toEqual(["a"]);
  });
});

describe("coalescer", () => {
  it("runs on the next tick, then at most once per interval, folding pokes", () => {
    let runs = 0;
    const c = new Coalescer(300, { clock: time.clock, timers: time }, () => runs++);
    c.poke();
    c.poke();
    time.advance(0);
    expect(runs).toBe(1);
    c.poke();
    time.advance(100);
    c.poke();
    expect(runs).toBe(1);
    time.advance(199);
    expect(runs).toBe(1);
    time.advance(1);
    expect(runs).toBe(2);
    // 10 pokes in 1 s: at most 4 runs
    for (let i = 0; i < 10; i++) {
      c.poke();
      time.advance(100);
    }
    expect(runs).toBeLessThanOrEqual(2 + 4);
    c.poke();
    c.close();
    expect(time.timers).toBe(0);
  });
});
