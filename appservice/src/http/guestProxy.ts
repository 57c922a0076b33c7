// The guest proxy: a Matrix client-server API at /_parley/guest for guests' browsers (their
// matrix-js-sdk uses it as its homeserver). Each request is checked in this order, each refusal
// answered before the body is read: the guest token (Authorization header only: a token in a URL
// ends up in logs), the guest's request rate and requests in flight, the route's allow-list
// (guestProxyRules.ts); then the body is read within its limit, the route's rules decide, and the
// request goes to the homeserver as the guest's device. The answer streams back with only its
// content headers. A guest's /sync long poll is aborted upstream when its connection closes.
import type { Request, Response, Router } from "express";
import express from "express";
import { pipeline } from "node:stream/promises";
import type { GuestService } from "../calls/guests.ts";
import { ParleyError } from "../errors.ts";
import { getLogger } from "../log.ts";
import type { ForwardRequest, ForwardResponse } from "../matrix/guestAccounts.ts";
import type { GuestRecord } from "../store/store.ts";
import { jsonBody, refuseUnread } from "./body.ts";
import { sendError } from "./errors.ts";
import { decideGuestRequest, familyOf, matchGuestRoute, type ProxyContext, type RouteMatch } from "./guestProxyRules.ts";
import type { AddressRateLimiter } from "./rateLimit.ts";

export const GUEST_PROXY_PREFIX = "/_parley/guest";
/** Response headers passed back to the guest (the rest stay with the homeserver). */
const PASSED_HEADERS = ["content-type", "content-length", "content-disposition", "cache-control", "retry-after"];

export interface GuestProxyOptions {
  guests: Pick<GuestService, "authenticate" | "signOut">;
  forward(guest: { userId: string; deviceId: string } | undefined, req: ForwardRequest): Promise<ForwardResponse>;
  ctx: ProxyContext;
  /** Requests per guest (keyed by user id). */
  limiter: AddressRateLimiter;
  concurrent: number;
  maxBodyBytes: number;
  onRefused?: (family: string) => void;
}

interface Located {
  guest: GuestRecord;
  match: RouteMatch;
}

export function guestProxyRouter(opts: GuestProxyOptions): Router {
  const log = getLogger("http.guests");
  const inFlight = new Map<string, number>();
  const router = express.Router();
  const refuse = (req: Request, res: Response, family: string, err: ParleyError) => {
    opts.onRefused?.(family);
    log.debug({ family, method: req.method, errcode: err.errcode }, "guest request refused");
    refuseUnread(req, res, err);
  };

  router.get(`${GUEST_PROXY_PREFIX}/_matrix/client/versions`, (req, res) => void relay(req, res, undefined, { path: "/_matrix/client/versions", query: [], timeoutMs: 10_000 }));

  router.use(GUEST_PROXY_PREFIX, async (req, res, next) => {
    const header = req.headers.authorization;
    const token = header?.startsWith("Bearer ") ? header.slice(7).trim() : undefined;
    if (!token) return refuse(req, res, "token", new ParleyError("M_MISSING_TOKEN", "send the guest token as Authorization: Bearer"));
    let guest;
    try {
      guest = await opts.guests.authenticate(token);
    } catch (err) {
      log.error({ err }, "guest token not checked");
      return refuse(req, res, "token", new ParleyError("M_UNAVAILABLE", "the guest token cannot be checked now; retry"));
    }
    if (!guest) return refuse(req, res, "token", new ParleyError("M_UNKNOWN_TOKEN", "unknown or expired guest token"));
    const waitMs = opts.limiter.take(guest.userId);
    if (waitMs) {
      res.setHeader("Retry-After", String(Math.ceil(waitMs / 1000)));
      return refuse(req, res, "rate", new ParleyError("M_LIMIT_EXCEEDED", `too many requests; retry in ${waitMs} ms`));
    }
    const busy = inFlight.get(guest.userId) ?? 0;
    if (busy >= opts.concurrent) return refuse(req, res, "concurrency", new ParleyError("M_LIMIT_EXCEEDED", `at most ${opts.concurrent} requests at once`));
    let match: RouteMatch;
    try {
      match = matchGuestRoute(req.method, req.path);
    } catch (err) {
      return refuse(req, res, familyOf(req.path), err instanceof ParleyError ? err : new ParleyError("M_FORBIDDEN", "not allowed"));
    }
    inFlight.set(guest.userId, busy + 1);
    res.once("close", () => {
      const n = (inFlight.get(guest.userId) ?? 1) - 1;
      if (n > 0) inFlight.set(guest.userId, n);
      else inFlight.delete(guest.userId);
    });
    res.locals.guest = { guest, match } satisfies Located;
    next();
  });
  router.use(GUEST_PROXY_PREFIX, jsonBody(opts.maxBodyBytes));
  router.use(GUEST_PROXY_PREFIX, async (req, res) => {
    const { guest, match } = res.locals.guest as Located;
    try {
      const query = new URL(req.originalUrl, "http://guest.invalid").searchParams;
      const decision = await decideGuestRequest(match, query, req.body, guest, opts.ctx);
      if (decision.kind === "answer") return void res.status(decision.status).json(decision.body);
      if (decision.kind === "logout") {
        await opts.guests.signOut(guest.userId);
        log.info({ userId: guest.userId }, "guest signed out");
        return void res.json({});
      }
      await relay(req, res, guest, decision);
    } catch (err) {
      if (!(err instanceof ParleyError)) throw err;
      opts.onRefused?.(match.route.family);
      log.debug({ family: match.route.family, errcode: err.errcode, why: err.message }, "guest request refused");
      sendError(res, err);
    }
  });

  async function relay(req: Request, res: Response, guest: GuestRecord | undefined, f: Omit<ForwardRequest, "method" | "signal"> & { body?: unknown }): Promise<void> {
    const abort = new AbortController();
    res.once("close", () => abort.abort());
    let upstream: ForwardResponse;
    try {
      upstream = await opts.forward(guest, { method: req.method, path: f.path, query: f.query, body: f.body, timeoutMs: f.timeoutMs, signal: abort.signal });
    } catch (err) {
      if (abort.signal.aborted) return;
      log.warn({ err, path: f.path }, "homeserver unreachable for a guest request");
      return sendError(res, new ParleyError("M_UNAVAILABLE", "the homeserver did not answer; retry shortly"));
    }
    res.status(upstream.status);
    for (const h of PASSED_HEADERS) {
      const v = upstream.headers.get(h);
      if (v !== null) res.setHeader(h, v);
    }
    if (!upstream.body) return void res.end();
    await pipeline(upstream.body, res).catch(() => undefined);
  }

  return router;
}
