// The guest wiring of start(): the guest service, its homeserver door, the guest API and proxy
// routers, the membership hook and the deactivation sweep (a timer; the schedule itself is in the
// store, so a restart loses nothing). With guests off the routers still answer: the API says
// {mode: "off"} and refuses to make guests, the proxy knows no token.
import { createHash, randomBytes } from "node:crypto";
import type { Router } from "express";
import { Counter } from "prom-client";
import { GuestService } from "../calls/guests.ts";
import type { Homeserver } from "../calls/ports.ts";
import type { ParleyConfig } from "../config/schema.ts";
import { guestApiRouter } from "../http/guestApi.ts";
import { GUEST_PROXY_PREFIX, guestProxyRouter } from "../http/guestProxy.ts";
import { GUEST_ROUTE_FAMILIES } from "../http/guestProxyRules.ts";
import type { Metrics } from "../http/metrics.ts";
import { AddressRateLimiter } from "../http/rateLimit.ts";
import { getLogger } from "../log.ts";
import type { RawEvent } from "../matrix/events.ts";
import { MatrixGuestAccounts } from "../matrix/guestAccounts.ts";
import type { Audit } from "../privacy/auditLog.ts";
import type { GuestStore } from "../store/store.ts";

/** The limits whose refusals are counted by name (guestApi.ts, guestProxy.ts). */
const REFUSAL_LIMITS: ReadonlySet<string> = new Set(["rate", "concurrency", "token", "guest_rate", "guest_max_live"]);

/** A refused guest request's label: a route family or a limit's name, anything else "unlisted". */
export function guestRefusalLabel(family: string): string {
  return GUEST_ROUTE_FAMILIES.has(family) || REFUSAL_LIMITS.has(family) ? family : "unlisted";
}

export interface RunningGuests {
  readonly service: GuestService;
  /** The guest API (/_parley/v1/guests) and the guest proxy (/_parley/guest). */
  readonly routers: Router[];
  /** Every event of a transaction, in order: a guest's membership changes its schedule. */
  onEvent(event: RawEvent): Promise<void>;
  stop(): void;
}

/** `chars` random lower-case letters and digits (base32: 5 bits each). */
function base32(chars: number): string {
  const alphabet = "abcdefghijklmnopqrstuvwxyz234567";
  return Array.from(randomBytes(chars), (b) => alphabet[b & 31]).join("");
}

export function startGuests(
  config: ParleyConfig,
  deps: { homeserver: Pick<Homeserver, "resolveAlias" | "stateEvent" | "getMembership">; store: GuestStore; metrics: Metrics; audit?: Audit },
): RunningGuests {
  const log = getLogger("app.guests");
  const g = config.guests;
  const made = new Counter({ name: "parley_guests_total", help: "Guest accounts: made, deactivated, deactivation_failed", labelNames: ["outcome"], registers: [deps.metrics.registry] });
  const refused = new Counter({
    name: "parley_guest_refusals_total",
    help: "Guest requests refused, by route family (createRoom, rooms/invite, …) or limit (rate, concurrency, token, guest_rate, guest_max_live)",
    labelNames: ["family"],
    registers: [deps.metrics.registry],
  });
  const accounts = new MatrixGuestAccounts({ url: config.homeserver.url, asToken: config.appservice.asToken, homeserver: deps.homeserver });
  const service = new GuestService(
    {
      mode: g.mode,
      deactivateAfterMs: g.deactivateAfterSeconds * 1000,
      lobbyWaitMs: g.lobbyWaitSeconds * 1000,
      maxLifetimeMs: g.maxLifetimeSeconds * 1000,
      maxLive: g.maxLive,
      userPrefix: config.appservice.userPrefix,
      domain: config.homeserver.domain,
      publicUrl: config.meetings.publicUrl,
    },
    {
      accounts,
      store: deps.store,
      clock: { now: () => Date.now() },
      ids: {
        localpart: () => base32(20),
        deviceId: () => `PG${base32(10).toUpperCase()}`,
        token: () => `pg_${randomBytes(32).toString("base64url")}`,
        hash: (token) => createHash("sha256").update(token).digest("hex"),
      },
      note: (what, details) => {
        const target = typeof details.userId === "string" ? details.userId : undefined;
        const roomId = typeof details.roomId === "string" ? details.roomId : undefined;
        if (what === "guest made") {
          made.inc({ outcome: "made" });
          deps.audit?.({ action: "guest_created", roomId, target });
        } else if (what === "guest deactivated") {
          made.inc({ outcome: "deactivated" });
          deps.audit?.({ action: "guest_deactivated", roomId, target, outcome: typeof details.outcome === "string" ? details.outcome : undefined });
        }
        else if (what.startsWith("guest deactivation failed")) made.inc({ outcome: "deactivation_failed" });
        log.info(details, what);
      },
    },
  );
  // A refused path's family comes from the guest's request: only the route table's families and
  // the limits' names become labels (a guest must not be able to add series).
  const onRefused = (family: string) => refused.inc({ family: guestRefusalLabel(family) });
  const publicUrl = config.meetings.publicUrl.replace(/\/+$/, "");
  const routers = [
    guestApiRouter({ guests: service, limiter: new AddressRateLimiter(g.createRateLimit), proxyUrl: `${publicUrl}${GUEST_PROXY_PREFIX}`, onRefused }),
    guestProxyRouter({
      guests: service,
      forward: (guest, req) => accounts.forward(guest, req),
      ctx: {
        domain: config.homeserver.domain,
        syncTimeoutMs: g.proxy.syncTimeoutSeconds * 1000,
        resolveAlias: (alias) => deps.homeserver.resolveAlias(alias),
        membership: (roomId, userId) => deps.homeserver.getMembership(roomId, userId),
        members: (roomId) => accounts.members(roomId),
      },
      limiter: new AddressRateLimiter({ perMinute: g.proxy.requestsPerMinute, burst: g.proxy.burst }),
      concurrent: g.proxy.concurrent,
      maxBodyBytes: g.proxy.maxBodyBytes,
      onRefused,
    }),
  ];

  let sweeping = false;
  const sweep = async () => {
    if (sweeping) return;
    sweeping = true;
    try {
      await service.sweep();
    } catch (err) {
      log.error({ err }, "guest sweep failed");
    } finally {
      sweeping = false;
    }
  };
  // Also with guests off: guests made before the mode was switched off still go. The first sweep
  // comes one period after start, once the homeserver is reachable.
  const timer = setInterval(() => void sweep(), service.periodMs());
  timer.unref();

  return {
    service,
    routers,
    async onEvent(event) {
      if (event.type !== "m.room.member" || typeof event.state_key !== "string" || typeof event.room_id !== "string") return;
      const membership = (event.content as { membership?: unknown } | undefined)?.membership;
      if (typeof membership === "string") await service.onMembership(event.room_id, event.state_key, membership);
    },
    stop() {
      clearInterval(timer);
    },
  };
}
