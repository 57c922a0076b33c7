import { describe, expect, it } from "vitest";
import { TokenBucket } from "../../../appservice/src/calls/rateLimit.ts";

describe("TokenBucket", () => {
  it("allows the burst at once, then one token per 60000/perMinute ms, never more than the burst", () => {
    let now = 0;
    const bucket = new TokenBucket({ perMinute: 30, burst: 3 }, { now: () => now });
    expect([bucket.take(), bucket.take(), bucket.take()]).toEqual([0, 0, 0]);
    expect(bucket.take()).toBe(2000);
    now += 1999;
    expect(bucket.take()).toBe(1);
    now += 1;
    expect(bucket.take()).toBe(0);
    now += 3_600_000; // an hour idle refills to the burst, not beyond
    expect([bucket.take(), bucket.take(), bucket.take(), bucket.take()]).toEqual([0, 0, 0, 2000]);
  });

  it("with a rate of 0, the burst is all there is", () => {
    const bucket = new TokenBucket({ perMinute: 0, burst: 1 }, { now: () => 0 });
    expect(bucket.take()).toBe(0);
    expect(bucket.take()).toBe(Number.POSITIVE_INFINITY);
  });
});
