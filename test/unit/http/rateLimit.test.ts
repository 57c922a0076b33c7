import { describe, expect, it } from "vitest";
import { AddressRateLimiter, addressKey } from "../../../appservice/src/http/rateLimit.ts";

describe("AddressRateLimiter", () => {
  it("allows a burst, then one request per interval, per address", () => {
    let now = 0;
    const limiter = new AddressRateLimiter({ perMinute: 60, burst: 3 }, () => now);
    expect([1, 2, 3].map(() => limiter.take("10.0.0.1"))).toEqual([0, 0, 0]);
    expect(limiter.take("10.0.0.1")).toBe(1000); // one token a second
    expect(limiter.take("10.0.0.2")).toBe(0); // another address has its own bucket
    now += 1000;
    expect(limiter.take("10.0.0.1")).toBe(0);
    expect(limiter.take("10.0.0.1")).toBeGreaterThan(0);
    now += 60_000;
    expect([1, 2, 3, 4].map(() => limiter.take("10.0.0.1") === 0)).toEqual([true, true, true, false]); // refilled to the burst, no more
  });

  it("tracks a bounded number of addresses, forgetting the least recently seen", () => {
    const limiter = new AddressRateLimiter({ perMinute: 1, burst: 1 }, () => 0, 3);
    for (const a of ["1.1.1.1", "2.2.2.2", "3.3.3.3"]) limiter.take(a);
    expect(limiter.take("1.1.1.1")).toBeGreaterThan(0); // seen again: now the most recent
    limiter.take("4.4.4.4");
    expect(limiter.tracked).toBe(3);
    expect(limiter.take("2.2.2.2")).toBe(0); // forgotten, so a fresh bucket
    expect(limiter.take("1.1.1.1")).toBeGreaterThan(0);
  });

  it("counts IPv6 addresses by their /64 and IPv4-mapped addresses as IPv4", () => {
    expect(addressKey("2001:db8:1:2:aaaa::1")).toBe("2001:db8:1:2::/64");
    expect(addressKey("2001:DB8:0001:0002:ffff:1:2:3")).toBe("2001:db8:1:2::/64");
    expect(addressKey("2001:db8::1")).toBe("2001:db8:0:0::/64");
    expect(addressKey("::1")).toBe("0:0:0:0::/64");
    expect(addressKey("::ffff:192.0.2.7")).toBe("192.0.2.7");
    expect(addressKey("192.0.2.7")).toBe("192.0.2.7");
  });
});
