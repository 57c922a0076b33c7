// Per-address rate limits: one token bucket per client address (an IPv6 address counts by its
// /64, which one host usually holds whole), refilled continuously. A refused request gets
// 429 M_LIMIT_EXCEEDED with retry_after_ms before anything costly happens (its body unread, no
// OpenID check sent to a homeserver). The table of buckets is bounded: the least recently
// seen address goes first. The address is the socket's peer: behind a reverse proxy every
// client shares the proxy's address, so the limit must then be set for the proxy.
import { isIPv6 } from "node:net";
import type { Request, RequestHandler } from "express";
import type { Clock } from "../calls/ports.ts";
import { TokenBucket } from "../calls/rateLimit.ts";
import { ParleyError } from "../errors.ts";
import { refuseUnread } from "./body.ts";

export interface RateLimit {
  /** Requests per minute an address may make in the long run. */
  perMinute: number;
  /** Requests an address may make at once after a quiet spell. */
  burst: number;
}

/** Addresses tracked at most; beyond, the least recently seen is forgotten (its bucket refills). */
export const MAX_TRACKED_ADDRESSES = 10_000;

export class AddressRateLimiter {
  /** One bucket per address key, least recently seen first (a Map keeps insertion order). */
  private readonly buckets = new Map<string, TokenBucket>();
  private readonly limit: RateLimit;
  private readonly clock: Clock;
  private readonly maxTracked: number;

  constructor(limit: RateLimit, now: () => number = Date.now, maxTracked = MAX_TRACKED_ADDRESSES) {
    this.limit = limit;
    this.clock = { now };
    this.maxTracked = maxTracked;
  }

  /** Takes one request from the address's bucket: 0 when allowed, else the ms until it would be. */
  take(address: string): number {
    const key = addressKey(address);
    const bucket = this.buckets.get(key) ?? new TokenBucket(this.limit, this.clock);
    this.buckets.delete(key); // re-inserted last: the most recently seen
    this.buckets.set(key, bucket);
    if (this.buckets.size > this.maxTracked) this.buckets.delete(this.buckets.keys().next().value!);
    return bucket.take();
  }

  get tracked(): number {
    return this.buckets.size;
  }
}

/** The bucket an address counts in: IPv4 (also IPv4-mapped) whole, IPv6 by its /64. */
export function addressKey(address: string): string {
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped) return mapped[1]!;
  if (!isIPv6(address)) return address;
  const [head = "", tail] = address.split("::");
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  const groups = tail === undefined ? left : [...left, ...Array<string>(8 - left.length - right.length).fill("0"), ...right];
  return `${groups.slice(0, 4).map((g) => g.toLowerCase().replace(/^0+(?=.)/, "")).join(":")}::/64`;
}

/** Refuses requests over the limit of their address with 429 M_LIMIT_EXCEEDED. */
export function rateLimited(limiter: AddressRateLimiter, what: string, onRefused?: (req: Request) => void): RequestHandler {
  return (req, res, next) => {
    const waitMs = limiter.take(req.socket.remoteAddress ?? "unknown");
    if (!waitMs) return next();
    onRefused?.(req);
    res.setHeader("Retry-After", String(Math.ceil(waitMs / 1000)));
    refuseUnread(req, res, new ParleyError("M_LIMIT_EXCEEDED", `too many ${what} from this address; retry in ${waitMs} ms`));
  };
}
