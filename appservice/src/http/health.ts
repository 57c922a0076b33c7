// GET /health: each dependency Parley needs, checked for real, with an overall status a load
// balancer can act on (docs/health.md). The homeserver answers the as_token (the registration is
// accepted), the store takes a committed write, each Janus node is connected, the bot's Olm device
// answers. It needs no token (anyone may ask): a report is reused for `cacheMs` and concurrent
// requests share one check, so hammering /health costs the homeserver one request per period at
// most. A timer checks on its own too, so the dependency metrics count outages when nobody asks.
import type { RequestHandler } from "express";
import type { Counter, Gauge } from "prom-client";
import { ConnectionError, MatrixError } from "matrix-js-sdk";
import type { BotCrypto } from "../crypto/botCrypto.ts";
import { getLogger, type Logger } from "../log.ts";
import type { MatrixHomeserver } from "../matrix/homeserver.ts";
import type { Sfu } from "../sfu/index.ts";
import type { Store } from "../store/store.ts";
import { ParleyError, sendError } from "./errors.ts";

/** ok: all well. degraded: working, with less (a node of several, the bot's crypto). down: not working. */
export type HealthStatus = "ok" | "degraded" | "down";

export interface CheckResult {
  status: HealthStatus;
  /** Words for the operator: never a secret, a URL or an address. */
  detail: string;
  /** A short stable code when a probe failed: a Matrix errcode, an errno, an SQLite or SQLSTATE code, "timeout". */
  code?: string;
}

export interface SfuCheck extends CheckResult {
  /** Each configured Janus node by its id in sfu.nodes. */
  nodes: { id: string; state: string }[];
}

export interface HealthReport {
  status: HealthStatus;
  checks: {
    homeserver: CheckResult;
    store: CheckResult;
    /** Present when sfu.nodes is not empty. */
    sfu?: SfuCheck;
    /** Present when the crypto section is configured. */
    crypto?: CheckResult;
  };
  /** Calls the store holds as active (undefined when the store did not answer). */
  activeCalls?: number;
  /** When the checks ran (ISO 8601): a report may be up to `cacheMs` old. */
  checkedAt: string;
}

export interface HealthOptions {
  cacheMs: number;
  intervalMs: number;
  probeTimeoutMs: number;
}

/** The dependency metrics (http/metrics.ts); labels: dependency (homeserver, store, janus, crypto) and node (a Janus node id, else ""). */
export interface DependencyMetrics {
  up: Gauge<"dependency" | "node">;
  outages: Counter<"dependency" | "node">;
  recoveries: Counter<"dependency" | "node">;
}

export interface HealthDeps {
  homeserver: Pick<MatrixHomeserver, "whoami">;
  store: Pick<Store, "probeWrite" | "activeCalls">;
  sfu?: Pick<Sfu, "health" | "onNodeState"> | undefined;
  crypto?: Pick<BotCrypto, "status" | "probe"> | undefined;
  clock: { now(): number };
  metrics?: DependencyMetrics | undefined;
}

const RANK: Record<HealthStatus, number> = { ok: 0, degraded: 1, down: 2 };

/** The worst of the statuses (ok when there are none). */
export function worstOf(statuses: HealthStatus[]): HealthStatus {
  return statuses.reduce<HealthStatus>((w, s) => (RANK[s] > RANK[w] ? s : w), "ok");
}

/** HTTP status of a report: a load balancer sends traffic on 200 (ok, degraded), none on 503 (down). */
export function httpStatusOf(status: HealthStatus): 200 | 503 {
  return status === "down" ? 503 : 200;
}

class ProbeTimeout extends Error {
  constructor(ms: number) {
    super(`no answer within ${ms} ms`);
  }
}

/** `p`, or a ProbeTimeout after `ms`; the timer never outlives the race. */
async function within<T>(p: Promise<T>, ms: number): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new ProbeTimeout(ms)), ms)));
  try {
    return await Promise.race([p, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** A code safe to show: errcodes, errnos (ECONNREFUSED), SQLite and SQLSTATE codes; never a message. */
function codeOf(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e && depth < 4; e = (e as { cause?: unknown }).cause, depth++) {
    const code = (e as { code?: unknown; errcode?: unknown }).errcode ?? (e as { code?: unknown }).code;
    if (typeof code === "string" && /^[A-Z0-9_]{2,40}$/.test(code)) return code;
  }
  return undefined;
}

/** The homeserver check: down when it does not answer, answers with an error, or refuses the as_token. */
export function homeserverResult(err: unknown, timeoutMs: number): CheckResult {
  if (err === undefined) return { status: "ok", detail: "answers, and accepts Parley's registration (as_token)" };
  if (err instanceof ProbeTimeout || (err as Error).name === "AbortError" || (err as Error).name === "TimeoutError") {
    return { status: "down", detail: `homeserver unreachable: no answer within ${timeoutMs} ms`, code: "timeout" };
  }
  if (err instanceof MatrixError) {
    if (err.errcode === "M_UNKNOWN_TOKEN" || err.httpStatus === 401) {
      return { status: "down", detail: "registration not accepted: the homeserver does not know Parley's as_token (is the registration file loaded?)", code: err.errcode ?? "M_UNKNOWN_TOKEN" };
    }
    const status = err.httpStatus ?? 0;
    if (status >= 500) return { status: "down", detail: `homeserver failing: HTTP ${status}`, code: err.errcode ?? `HTTP_${status}` };
    return { status: "down", detail: `homeserver refused Parley's registration: HTTP ${status}`, code: err.errcode ?? `HTTP_${status}` };
  }
  const code = codeOf(err);
  if (err instanceof ConnectionError) return { status: "down", detail: "homeserver unreachable: the connection failed", ...(code ? { code } : {}) };
  return { status: "down", detail: "homeserver probe failed", ...(code ? { code } : {}) };
}

/** The store check: down when it does not take a write. */
export function storeResult(err: unknown): CheckResult {
  if (err === undefined) return { status: "ok", detail: "takes writes" };
  if (err instanceof ProbeTimeout) return { status: "down", detail: `store not writable: ${err.message}`, code: "timeout" };
  const code = codeOf(err);
  return { status: "down", detail: "store not writable: the write failed", ...(code ? { code } : {}) };
}

/** The Janus check: down when no node is up, degraded when some are not. */
export function sfuResult(nodes: { id: string; state: string }[]): SfuCheck {
  const up = nodes.filter((n) => n.state === "up").length;
  const list = nodes.map((n) => ({ id: n.id, state: n.state }));
  const counted = `${up} of ${nodes.length} Janus node${nodes.length === 1 ? "" : "s"} up`;
  if (up === 0) return { status: "down", detail: `no Janus node up (${counted}): calls cannot carry media`, nodes: list };
  if (up < nodes.length) return { status: "degraded", detail: `${counted}: new calls go to the others`, nodes: list };
  return { status: "ok", detail: counted, nodes: list };
}

/** The crypto check: degraded (not down) when the bot's device is not usable: calls carry media without it. */
export function cryptoResult(state: string, err: unknown): CheckResult {
  if (state !== "open") {
    const why = state === "stopped" ? "closed (it failed to open, or Parley is stopping)" : "still opening";
    return { status: "degraded", detail: `the bot's Olm device is ${why}: no commands or keys in encrypted rooms`, code: state };
  }
  if (err === undefined) return { status: "ok", detail: "the bot's Olm device is open and answers" };
  if (err instanceof ProbeTimeout) return { status: "degraded", detail: `the bot's Olm device is busy: ${err.message}`, code: "timeout" };
  return { status: "degraded", detail: "the bot's Olm device failed its probe", ...(codeOf(err) ? { code: codeOf(err)! } : {}) };
}

/** Runs the checks, keeps the last report, and turns changes into metrics and log lines. */
export class HealthMonitor {
  private readonly opts: HealthOptions;
  private readonly deps: HealthDeps;
  private readonly log: Logger = getLogger("health");
  private last: { at: number; report: HealthReport } | undefined;
  private inflight: Promise<HealthReport> | undefined;
  /** Whether each dependency was up when last seen (absent: never seen). */
  private readonly seen = new Map<string, boolean>();
  private timer: NodeJS.Timeout | undefined;
  private unwatch: (() => void) | undefined;
  private stopped = false;

  constructor(opts: HealthOptions, deps: HealthDeps) {
    this.opts = opts;
    this.deps = deps;
  }

  /** Starts the background checks (first one now) and listens for Janus restarts. */
  start(): void {
    // A Janus node's connection is watched as it changes: a restart quicker than the interval
    // between two checks is still an outage and a recovery.
    this.unwatch = this.deps.sfu?.onNodeState((nodeId, up) => this.observe("janus", nodeId, up, up ? "node up" : "node down"));
    const tick = () => void this.report().catch((err: unknown) => this.log.warn({ err }, "health check failed"));
    this.timer = setInterval(tick, this.opts.intervalMs);
    this.timer.unref();
    tick();
  }

  /** The last report while it is younger than cacheMs; else a fresh one (shared with concurrent callers). */
  report(): Promise<HealthReport> {
    const last = this.last;
    if (last && this.deps.clock.now() - last.at < this.opts.cacheMs) return Promise.resolve(last.report);
    this.inflight ??= this.check().finally(() => (this.inflight = undefined));
    return this.inflight;
  }

  /** Stops the timer and waits for a check in progress. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    this.unwatch?.();
    await this.inflight?.catch(() => undefined);
  }

  private async check(): Promise<HealthReport> {
    const { homeserver, store, sfu, crypto } = this.deps;
    const ms = this.opts.probeTimeoutMs;
    const failure = (p: Promise<unknown>) => within(p, ms).then(() => undefined, (err: unknown) => err ?? new Error("failed"));
    const [hsErr, storeErr, cryptoErr, activeCalls] = await Promise.all([
      failure(homeserver.whoami(ms)),
      failure(store.probeWrite()),
      crypto?.status === "open" ? failure(crypto.probe()) : Promise.resolve(undefined),
      within(store.activeCalls(), ms).then((c) => c.length, () => undefined),
    ]);
    const checks: HealthReport["checks"] = { homeserver: homeserverResult(hsErr, ms), store: storeResult(storeErr) };
    const nodes = sfu?.health() ?? [];
    if (nodes.length) checks.sfu = sfuResult(nodes);
    if (crypto) checks.crypto = cryptoResult(crypto.status, cryptoErr);
    const report: HealthReport = {
      status: worstOf(Object.values(checks).map((c) => c.status)),
      checks,
      ...(activeCalls === undefined ? {} : { activeCalls }),
      checkedAt: new Date(this.deps.clock.now()).toISOString(),
    };
    if (!this.stopped) this.record(report, { homeserver: hsErr, store: storeErr, crypto: cryptoErr });
    this.last = { at: this.deps.clock.now(), report };
    return report;
  }

  private record(report: HealthReport, errors: Record<string, unknown>): void {
    const { checks } = report;
    this.observe("homeserver", "", checks.homeserver.status === "ok", checks.homeserver.detail, errors["homeserver"]);
    this.observe("store", "", checks.store.status === "ok", checks.store.detail, errors["store"]);
    for (const n of checks.sfu?.nodes ?? []) this.observe("janus", n.id, n.state === "up", `node ${n.state}`);
    if (checks.crypto) this.observe("crypto", "", checks.crypto.status === "ok", checks.crypto.detail, errors["crypto"]);
  }

  /** One sighting of a dependency: the gauge, and a counted, logged transition when it changed. */
  private observe(dependency: string, node: string, up: boolean, detail: string, err?: unknown): void {
    const key = `${dependency}/${node}`;
    const before = this.seen.get(key);
    this.seen.set(key, up);
    const labels = { dependency, node };
    this.deps.metrics?.up.set(labels, up ? 1 : 0);
    if (before === up) return;
    // The first sighting counts as an outage only if the dependency is down then.
    if (!up) {
      this.deps.metrics?.outages.inc(labels);
      this.log.warn({ dependency, ...(node ? { sfuNode: node } : {}), detail, ...(err ? { err } : {}) }, "dependency down");
    } else if (before === false) {
      this.deps.metrics?.recoveries.inc(labels);
      this.log.info({ dependency, ...(node ? { sfuNode: node } : {}), detail }, "dependency recovered");
    }
  }
}

/**
 * GET /health: 503 M_UNAVAILABLE "starting" until `running()`, then the report, with 200 when ok
 * or degraded and 503 when down.
 */
export function healthRoute(monitor: Pick<HealthMonitor, "report">, running: () => boolean): RequestHandler {
  return (_req, res, next) => {
    if (!running()) return sendError(res, new ParleyError("M_UNAVAILABLE", "starting"));
    monitor.report().then((report) => {
      res.status(httpStatusOf(report.status)).setHeader("Cache-Control", "no-store").json(report);
    }, next);
  };
}
