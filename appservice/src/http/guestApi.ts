// The guest door of the call API:
//   GET  /_parley/v1/guests  -> {mode: "off" | "lobby"}   (whether the sign-in page offers "Join as guest")
//   POST /_parley/v1/guests  {name, meeting}              -> a guest for that meeting:
//        {user_id, device_id, access_token, home_server_url, room_id, display_name}
// `access_token` is Parley's opaque guest token and `home_server_url` Parley's guest proxy
// (guestProxy.ts): the browser uses them as a Matrix session. Refusals: 429 M_LIMIT_EXCEEDED
// (this address made too many guests: before the body is read; or too many guests live),
// 403 M_FORBIDDEN (guests off, or not in this meeting), 404 M_NOT_FOUND (no such meeting),
// 400 M_INVALID_PARAM (name, meeting), 413 M_TOO_LARGE.
import express, { type Router } from "express";
import type { GuestService } from "../calls/guests.ts";
import { ParleyError } from "../errors.ts";
import { BODY_LIMITS, jsonBody } from "./body.ts";
import { sendError } from "./errors.ts";
import { rateLimited, type AddressRateLimiter } from "./rateLimit.ts";

export const GUESTS_PATH = "/_parley/v1/guests";

export function guestApiRouter(opts: {
  guests: Pick<GuestService, "mode" | "create">;
  /** Guests made per client address. */
  limiter: AddressRateLimiter;
  /** The guest proxy's base URL as browsers reach it (…/_parley/guest). */
  proxyUrl: string;
  onRefused?: (what: string) => void;
}): Router {
  const router = express.Router();
  router.get(GUESTS_PATH, (_req, res) => {
    res.setHeader("Cache-Control", "no-store");
    res.json({ mode: opts.guests.mode });
  });
  router.post(GUESTS_PATH, rateLimited(opts.limiter, "guests", () => opts.onRefused?.("guest_rate")), jsonBody(BODY_LIMITS.guestCreate), async (req, res) => {
    res.setHeader("Cache-Control", "no-store");
    try {
      const body = (req.body ?? {}) as { name?: unknown; meeting?: unknown };
      if (typeof body !== "object" || Array.isArray(body)) throw new ParleyError("M_BAD_JSON", "expected {name, meeting}");
      const g = await opts.guests.create({ name: body.name, meeting: body.meeting });
      res.json({
        user_id: g.userId,
        device_id: g.deviceId,
        access_token: g.token,
        home_server_url: opts.proxyUrl,
        room_id: g.roomId,
        display_name: g.displayName,
      });
    } catch (err) {
      if (!(err instanceof ParleyError)) throw err;
      if (err.errcode === "M_LIMIT_EXCEEDED") opts.onRefused?.("guest_max_live");
      sendError(res, err);
    }
  });
  return router;
}
