import { describe, expect, it } from "vitest";
import { KeyframeGate } from "../../../appservice/src/calls/keyframes.ts";

describe("keyframe gate", () => {
  it("one batch per feed per interval: the same pass may ask again, a later one waits", () => {
    let now = 0;
    const gate = new KeyframeGate(1000, { now: () => now });
    gate.beginPass();
    expect(gate.take("a")).toBe(true);
    expect(gate.take("a")).toBe(true); // same pass: one batch
    expect(gate.take("b")).toBe(true);
    now = 400;
    gate.beginPass();
    expect(gate.take("a")).toBe(false);
    expect(gate.waitFor("a")).toBe(600);
    now = 1000;
    gate.beginPass();
    expect(gate.take("a")).toBe(true);
    expect(gate.waitFor("a")).toBe(1000);
    gate.forget("a");
    expect(gate.waitFor("a")).toBe(0);
  });
});
