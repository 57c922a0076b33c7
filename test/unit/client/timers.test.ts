import { describe, expect, it } from "vitest";
import { MinuteBudget } from "../../../client/src/timers.ts";

describe("MinuteBudget", () => {
  it("gives at most perMinute takes in any minute, and more as the oldest fall out of it", () => {
    let now = 0;
    const budget = new MinuteBudget(3, () => now);
    expect([budget.take(), budget.take()]).toEqual([true, true]);
    now = 30_000;
    expect([budget.take(), budget.take()]).toEqual([true, false]);
    now = 59_999;
    expect(budget.take()).toBe(false);
    now = 60_000; // the two at 0 are a minute old
    expect([budget.take(), budget.take(), budget.take()]).toEqual([true, true, false]);
    now = 90_000; // the one at 30 s too
    expect([budget.take(), budget.take()]).toEqual([true, false]);
  });

  it("with 0, gives none", () => {
    expect(new MinuteBudget(0, () => 0).take()).toBe(false);
  });
});
