// The application service API the homeserver calls (spec: Application Service API).
//  - Transactions are acknowledged only after their events are handled, and their txnId is
//    recorded in the store: the same txnId is processed once, across restarts too.
//  - An event whose effects are done is recorded too, so a transaction redelivered after a
//    crash part-way through resumes where it stopped.
//  - A transient failure (homeserver down, store busy) answers 500: the homeserver retries.
//    An event that keeps failing is given up after a few tries rather than blocking the queue.
//  - The E2EE extensions of a transaction (MSC2409/MSC4203 to-device messages, MSC3202 device
//    lists and key counts; Synapse's unstable names below) go to `onTransactionParts` before its
//    events (a room key may come with the event it opens), once per txnId.
// matrix-appservice's AppService is not used for this: it acknowledges before async handlers
// finish, remembers only the last txnId in memory, and answers failed alias queries with 200.
import { createHash, timingSafeEqual } from "node:crypto";
import express, { type ErrorRequestHandler, type Request, type Response, type NextFunction, type Router } from "express";
import { MatrixError } from "matrix-js-sdk";
import { z } from "zod";
import type { TransactionStore } from "../store/store.ts";
import { BODY_LIMITS, jsonBody, refuseUnread } from "../http/body.ts";
import { ParleyError, sendError } from "../http/errors.ts";
import { getLogger } from "../log.ts";
import { eventTypeLabel, type Metrics } from "../http/metrics.ts";
import { transactionBody, describeZodError, type RawEvent } from "./events.ts";

/** Who changed a membership (the event's sender) and the reason they gave. */
export interface MembershipCause {
  by?: string;
  reason?: string;
}

export interface AppserviceHandlers {
  onEvent(event: RawEvent): Promise<void>;
  /** Returns true when the alias now exists (Parley created it). */
  onAliasQuery(alias: string): Promise<boolean>;
  /**
   * A user's membership is no longer "join" (leave, kick, ban): called synchronously when the
   * transaction arrives, before it is queued. Must be idempotent.
   */
  onMembershipLost?(roomId: string, userId: string, membership: string, cause?: MembershipCause): void;
  /** A transaction's E2EE parts, before its events; not called again for the txnId once it returned. */
  onTransactionParts?(parts: TransactionParts): Promise<void>;
}

/** What Synapse adds to a transaction for appservice E2EE, keyed by recipient user and device. */
export interface TransactionParts {
  /** Each with `to_user_id` and `to_device_id` naming the recipient. */
  toDevice: RawEvent[];
  deviceLists: { changed: string[]; left: string[] };
  /** user -> device -> algorithm -> unused one-time keys (a device listed without an algorithm has none). */
  oneTimeKeyCounts: Record<string, Record<string, Record<string, number>>>;
  /** user -> device -> algorithms of unused fallback keys. */
  unusedFallbackKeyTypes: Record<string, Record<string, string[]>>;
}

const byUserDevice = <T extends z.ZodType>(inner: T) => z.record(z.string(), z.record(z.string(), inner));
const transactionParts = z.object({
  "de.sorunome.msc2409.to_device": z.array(z.record(z.string(), z.unknown())).default([]),
  "org.matrix.msc3202.device_lists": z
    .object({ changed: z.array(z.string()).default([]), left: z.array(z.string()).default([]) })
    .default({ changed: [], left: [] }),
  "org.matrix.msc3202.device_one_time_keys_count": byUserDevice(z.record(z.string(), z.number())).default({}),
  "org.matrix.msc3202.device_unused_fallback_key_types": byUserDevice(z.array(z.string())).default({}),
});

/** The E2EE parts of a transaction body, or undefined when it has none. */
export function parseTransactionParts(body: unknown): TransactionParts | undefined {
  const parsed = transactionParts.safeParse(body);
  if (!parsed.success) {
    getLogger("matrix.appservice").warn({ why: describeZodError(parsed.error) }, "ignoring malformed E2EE parts of a transaction");
    return undefined;
  }
  const p = parsed.data;
  const parts: TransactionParts = {
    toDevice: p["de.sorunome.msc2409.to_device"],
    deviceLists: p["org.matrix.msc3202.device_lists"],
    oneTimeKeyCounts: p["org.matrix.msc3202.device_one_time_keys_count"],
    unusedFallbackKeyTypes: p["org.matrix.msc3202.device_unused_fallback_key_types"],
  };
  const empty =
    !parts.toDevice.length && !parts.deviceLists.changed.length && !parts.deviceLists.left.length &&
    !Object.keys(parts.oneTimeKeyCounts).length && !Object.keys(parts.unusedFallbackKeyTypes).length;
  return empty ? undefined : parts;
}

const MAX_ATTEMPTS = 5;
/** Events handled between two turns of the event loop while a transaction is processed. */
const YIELD_EVERY = 16;

/** Calls `hook` for an m.room.member event whose membership is not "join"; never throws. */
function evictEarly(event: RawEvent, hook: NonNullable<AppserviceHandlers["onMembershipLost"]>): void {
  if (event.type !== "m.room.member") return;
  const { room_id: roomId, state_key: userId } = event;
  const content = event.content as { membership?: unknown; reason?: unknown } | undefined;
  const membership = content?.membership;
  if (typeof roomId !== "string" || typeof userId !== "string" || typeof membership !== "string" || membership === "join") return;
  const by = typeof event.sender === "string" ? event.sender : undefined;
  const reason = typeof content?.reason === "string" ? content.reason.slice(0, 500) : undefined;
  try {
    hook(roomId, userId, membership, { ...(by ? { by } : {}), ...(reason ? { reason } : {}) });
  } catch (err) {
    getLogger("matrix.appservice").error({ err, roomId }, "early eviction failed; the queued event will retry it");
  }
}

/** Worth retrying: the homeserver or the network failed, not the request. */
export function isTransient(err: unknown): boolean {
  if (err instanceof MatrixError) return err.httpStatus === undefined || err.httpStatus >= 500 || err.httpStatus === 429;
  return true;
}

function digest(s: string): Buffer {
  return createHash("sha256").update(s).digest();
}

export function appserviceRouter(opts: {
  hsToken: string;
  store: TransactionStore;
  handlers: AppserviceHandlers;
  metrics: Metrics;
}): Router {
  const log = getLogger("matrix.appservice");
  const expected = digest(opts.hsToken);
  const attempts = new Map<string, number>();
  let queue: Promise<unknown> = Promise.resolve();

  // Synapse 1.163 sends the hs token as `Authorization: Bearer` on every request
  // (synapse/appservice/api.py); it adds `?access_token=` only with the deprecated, off by
  // default `use_appservice_legacy_authorization`. The query parameter is not accepted: a token
  // in a URL ends up in access logs. A refusal is answered before the body is read.
  const authenticate = (req: Request, res: Response, next: NextFunction) => {
    const header = req.headers.authorization;
    const token = header?.startsWith("Bearer ") ? header.slice(7) : undefined;
    if (!token) return refuseUnread(req, res, new ParleyError("M_UNAUTHORIZED", "missing homeserver token"));
    if (!timingSafeEqual(digest(token), expected)) return refuseUnread(req, res, new ParleyError("M_FORBIDDEN", "bad homeserver token"));
    next();
  };

  async function processEvent(event: RawEvent): Promise<void> {
    const eventId = typeof event.event_id === "string" ? event.event_id : undefined;
    if (eventId && (await opts.store.isEventProcessed(eventId))) return;
    try {
      await opts.handlers.onEvent(event);
      opts.metrics.events.inc({ type: eventTypeLabel(event.type), result: "ok" });
    } catch (err) {
      const tries = (eventId ? attempts.get(eventId) ?? 0 : 0) + 1;
      if (isTransient(err) && eventId && tries < MAX_ATTEMPTS) {
        attempts.set(eventId, tries);
        throw err;
      }
      opts.metrics.events.inc({ type: eventTypeLabel(event.type), result: "failed" });
      log.error({ err, eventId, roomId: event.room_id, tries }, "giving up on event");
    }
    if (eventId) {
      attempts.delete(eventId);
      await opts.store.markEventProcessed(eventId);
    }
  }

  async function processTransaction(txnId: string, events: RawEvent[], parts: TransactionParts | undefined): Promise<"done" | "duplicate"> {
    if (await opts.store.isTxnDone(txnId)) return "duplicate";
    // Recorded like an event: a redelivery after a failed event must not feed Olm the same
    // to-device messages twice (their one-time keys are spent).
    const partsId = `txn-parts:${txnId}`;
    if (parts && opts.handlers.onTransactionParts && !(await opts.store.isEventProcessed(partsId))) {
      await opts.handlers.onTransactionParts(parts);
      await opts.store.markEventProcessed(partsId);
    }
    for (let i = 0; i < events.length; i++) {
      await processEvent(events[i]!);
      // Handlers that finish without I/O would run the whole transaction as one microtask
      // chain: yield now and then, so that sockets, timers and the next request (an eviction)
      // are served while a bulk transaction is processed.
      if (i % YIELD_EVERY === YIELD_EVERY - 1) await new Promise((r) => setImmediate(r));
    }
    await opts.store.markTxnDone(txnId);
    return "done";
  }

  async function evictOnArrival(txnId: string, events: RawEvent[], hook: NonNullable<AppserviceHandlers["onMembershipLost"]>): Promise<void> {
    try {
      if (await opts.store.isTxnDone(txnId)) return;
      for (const e of events) {
        if (e.type !== "m.room.member") continue; // the only events evicted early; spares a query each
        if (typeof e.event_id === "string" && (await opts.store.isEventProcessed(e.event_id))) continue;
        evictEarly(e, hook);
      }
    } catch (err) {
      log.error({ err, txnId }, "early eviction failed; the queued events will retry it");
    }
  }

  const router = express.Router();
  router.use("/_matrix/app/v1", authenticate);
  // Bodies are read only once the token checked out, each route with its own limit.
  router.put("/_matrix/app/v1/transactions/:txnId", jsonBody(BODY_LIMITS.transaction));
  router.use("/_matrix/app/v1", jsonBody(BODY_LIMITS.appserviceSmall));

  router.put("/_matrix/app/v1/transactions/:txnId", (req, res) => {
    const txnId = req.params.txnId!;
    const parsed = transactionBody.safeParse(req.body);
    if (!parsed.success) {
      return sendError(res, new ParleyError("M_BAD_JSON", `transaction body: ${describeZodError(parsed.error)}`));
    }
    // Evictions do not wait behind bulk work: a membership loss takes effect on arrival, even
    // while an earlier transaction is still being processed (the hook is idempotent; the event
    // is handled again, in order, by the queue below). Only the store's answer is awaited, not
    // the queue.
    const lost = opts.handlers.onMembershipLost;
    const early = lost ? evictOnArrival(txnId, parsed.data.events, lost) : Promise.resolve();
    // One transaction at a time, in arrival order (the place in the queue is taken now, at
    // arrival); a duplicate waits for its twin to finish.
    const parts = opts.handlers.onTransactionParts ? parseTransactionParts(req.body) : undefined;
    const run = queue.then(async () => {
      await early;
      return processTransaction(txnId, parsed.data.events, parts);
    });
    queue = run.catch(() => undefined);
    run.then(
      (outcome) => {
        opts.metrics.transactions.inc({ result: outcome });
        res.json({});
      },
      (err: unknown) => {
        opts.metrics.transactions.inc({ result: "retry" });
        log.warn({ err, txnId }, "transaction failed; the homeserver will retry it");
        sendError(res, new ParleyError("M_UNKNOWN", "transaction not processed; retry"));
      },
    );
  });

  // Synapse 1.163 (synapse/appservice/api.py query_alias) treats any answer but 200 as "no such
  // alias": the user is told M_NOT_FOUND whether Parley answers 404, 429 or 500. The answer still
  // says why, for the homeserver's log and for other homeservers.
  router.get("/_matrix/app/v1/rooms/:alias", async (req, res) => {
    const alias = req.params.alias!;
    const stop = opts.metrics.aliasQuerySeconds.startTimer();
    try {
      const created = await opts.handlers.onAliasQuery(alias);
      stop({ result: created ? "created" : "not_ours" });
      if (created) res.json({});
      else sendError(res, new ParleyError("M_NOT_FOUND", `Parley does not provide ${alias}`));
    } catch (err) {
      if (err instanceof ParleyError && err.status < 500) {
        stop({ result: err.errcode === "M_LIMIT_EXCEEDED" ? "refused" : "not_ours" });
        const retry = (err as { retryAfterMs?: unknown }).retryAfterMs;
        const body: Record<string, unknown> = { errcode: err.errcode, error: err.message };
        if (typeof retry === "number" && Number.isFinite(retry)) {
          body.retry_after_ms = retry;
          res.setHeader("Retry-After", String(Math.ceil(retry / 1000)));
        }
        return void res.status(err.status).json(body);
      }
      stop({ result: "failed" });
      if (err instanceof ParleyError) log.warn({ alias, errcode: err.errcode, why: err.message }, "alias query not answered");
      else log.error({ err, alias }, "alias query failed");
      sendError(res, err instanceof ParleyError ? err : new ParleyError("M_UNKNOWN", "could not create the meeting room"));
    }
  });

  // Parley does not create users on demand (yet): every query is a miss.
  router.get("/_matrix/app/v1/users/:userId", (req, res) => {
    sendError(res, new ParleyError("M_NOT_FOUND", `Parley does not provide ${req.params.userId}`));
  });

  router.post("/_matrix/app/v1/ping", (_req, res) => {
    res.json({});
  });

  // A path parameter that is not percent-encoded UTF-8 (e.g. half of a full-width colon's
  // bytes) fails to decode before any handler runs: the caller's mistake, not a 500.
  router.use("/_matrix/app/v1/rooms", ((err, _req, res, next) => {
    if (!(err instanceof URIError)) return next(err);
    sendError(res, new ParleyError("M_INVALID_PARAM", "the alias is not percent-encoded UTF-8"));
  }) as ErrorRequestHandler);

  return router;
}
