// The health checks with fake dependencies: each check's status and words, the overall status and
// its HTTP code, the cache that keeps a hammered /health from reaching the homeserver more than
// once per period, probe timeouts, and the outage/recovery metrics (also from the background timer).
import type { Server } from "node:http";
import express from "express";
import { ConnectionError, MatrixError } from "matrix-js-sdk";
import { afterEach, describe, expect, it, vi } from "vitest";
import {
  HealthMonitor,
  healthRoute,
  httpStatusOf,
  worstOf,
  type HealthDeps,
  type HealthOptions,
  type HealthReport,
} from "../../../appservice/src/http/health.ts";
import { createMetrics } from "../../../appservice/src/http/metrics.ts";

const OPTS: HealthOptions = { cacheMs: 2000, intervalMs: 5000, probeTimeoutMs: 1000 };

interface World {
  whoami: () => Promise<string>;
  write: () => Promise<void>;
  nodes: { id: string; state: string }[];
  crypto: { status: "new" | "opening" | "open" | "stopped"; probe: () => Promise<void> } | undefined;
  calls: { whoami: number; write: number };
  now: number;
  nodeState: ((nodeId: string, up: boolean) => void) | undefined;
}

function world(over: Partial<World> = {}): World {
  return {
    whoami: async () => "@parley:example.org",
    write: async () => undefined,
    nodes: [{ id: "janus-1", state: "up" }],
    crypto: { status: "open", probe: async () => undefined },
    calls: { whoami: 0, write: 0 },
    now: 1_000_000,
    nodeState: undefined,
    ...over,
  };
}

function deps(w: World, metrics?: HealthDeps["metrics"]): HealthDeps {
  return {
    homeserver: {
      whoami: () => {
        w.calls.whoami++;
        return w.whoami();
      },
    },
    store: {
      probeWrite: () => {
        w.calls.write++;
        return w.write();
      },
      activeCalls: async () => [],
    },
    sfu: {
      health: () => w.nodes.map((n) => ({ id: n.id, state: n.state as "up", rooms: 0, participants: 0, handles: 0, warm: 0 })),
      onNodeState: (l) => {
        w.nodeState = l;
        return () => (w.nodeState = undefined);
      },
    },
    crypto: w.crypto && {
      get status() {
        return w.crypto!.status;
      },
      probe: () => w.crypto!.probe(),
    },
    clock: { now: () => w.now },
    metrics,
  };
}

const monitors: HealthMonitor[] = [];
function monitor(w: World, metrics?: HealthDeps["metrics"], opts: HealthOptions = OPTS): HealthMonitor {
  const m = new HealthMonitor(opts, deps(w, metrics));
  monitors.push(m);
  return m;
}

afterEach(async () => {
  for (const m of monitors.splice(0)) await m.stop();
  vi.useRealTimers();
});

describe("status aggregation", () => {
  it("the overall status is the worst check's; only down is 503", () => {
    expect(worstOf([])).toBe("ok");
    expect(worstOf(["ok", "degraded", "ok"])).toBe("degraded");
    expect(worstOf(["degraded", "down", "ok"])).toBe("down");
    expect([httpStatusOf("ok"), httpStatusOf("degraded"), httpStatusOf("down")]).toEqual([200, 200, 503]);
  });

  it("all dependencies well: ok, each check named", async () => {
    const r = await monitor(world()).report();
    expect(r.status).toBe("ok");
    expect(r.checks.homeserver).toMatchObject({ status: "ok", detail: expect.stringContaining("registration") });
    expect(r.checks.store).toMatchObject({ status: "ok", detail: "takes writes" });
    expect(r.checks.sfu).toMatchObject({ status: "ok", nodes: [{ id: "janus-1", state: "up" }] });
    expect(r.checks.crypto).toMatchObject({ status: "ok" });
    expect(r.activeCalls).toBe(0);
  });

  it("a registration the homeserver refuses (M_UNKNOWN_TOKEN) is down, and named", async () => {
    const w = world({ whoami: async () => Promise.reject(new MatrixError({ errcode: "M_UNKNOWN_TOKEN", error: "Unknown token" }, 401)) });
    const r = await monitor(w).report();
    expect(r.status).toBe("down");
    expect(r.checks.homeserver).toMatchObject({ status: "down", code: "M_UNKNOWN_TOKEN", detail: expect.stringContaining("registration not accepted") });
  });

  it("an unreachable homeserver is down, and its URL and the error's words stay out of the report", async () => {
    const refused = Object.assign(new Error("connect ECONNREFUSED 10.1.2.3:8008"), { code: "ECONNREFUSED" });
    const w = world({ whoami: async () => Promise.reject(new ConnectionError("fetch failed http://10.1.2.3:8008/secret-path", Object.assign(new TypeError("fetch failed"), { cause: refused }))) });
    const r = await monitor(w).report();
    // matrix-js-sdk's ConnectionError keeps only the words of its cause, none of them shown.
    expect(r.checks.homeserver).toEqual({ status: "down", detail: "homeserver unreachable: the connection failed" });
    expect(JSON.stringify(r)).not.toMatch(/10\.1\.2\.3|secret-path|8008/);
  });

  it("a homeserver answering 502 (a proxy before a dead Synapse) is down", async () => {
    const w = world({ whoami: async () => Promise.reject(new MatrixError({}, 502)) });
    expect((await monitor(w).report()).checks.homeserver).toMatchObject({ status: "down", detail: "homeserver failing: HTTP 502" });
  });

  it("a store that refuses the write is down, with its code", async () => {
    const w = world({ write: async () => Promise.reject(Object.assign(new Error("attempt to write a readonly database"), { code: "SQLITE_READONLY" })) });
    const r = await monitor(w).report();
    expect(r.status).toBe("down");
    expect(r.checks.store).toEqual({ status: "down", detail: "store not writable: the write failed", code: "SQLITE_READONLY" });
  });

  it("Janus: no node up is down, some of several is degraded", async () => {
    expect((await monitor(world({ nodes: [{ id: "j1", state: "down" }] })).report()).status).toBe("down");
    const two = await monitor(world({ nodes: [{ id: "j1", state: "up" }, { id: "j2", state: "connecting" }] })).report();
    expect(two.status).toBe("degraded");
    expect(two.checks.sfu).toMatchObject({ status: "degraded", detail: expect.stringContaining("1 of 2 Janus nodes up"), nodes: [{ id: "j1", state: "up" }, { id: "j2", state: "connecting" }] });
  });

  it("the bot's crypto not open, or failing its probe, is degraded; without crypto configured there is no check", async () => {
    expect((await monitor(world({ crypto: { status: "opening", probe: async () => undefined } })).report()).checks.crypto).toMatchObject({ status: "degraded", code: "opening" });
    const failing = await monitor(world({ crypto: { status: "open", probe: async () => Promise.reject(new Error("the bot's Olm device is closed")) } })).report();
    expect(failing.status).toBe("degraded");
    const none = await monitor(world({ crypto: undefined })).report();
    expect(none.checks.crypto).toBeUndefined();
    expect(none.status).toBe("ok");
  });

  it("no Janus node configured: no Janus check", async () => {
    const r = await monitor(world({ nodes: [] })).report();
    expect(r.checks.sfu).toBeUndefined();
    expect(r.status).toBe("ok");
  });
});

describe("probe timeouts", () => {
  it("a probe that never answers counts as failed after probeTimeoutMs", async () => {
    vi.useFakeTimers();
    const never = () => new Promise<never>(() => undefined);
    const w = world({ whoami: never, write: never, crypto: { status: "open", probe: never } });
    const pending = monitor(w).report();
    await vi.advanceTimersByTimeAsync(OPTS.probeTimeoutMs);
    const r = await pending;
    expect(r.checks.homeserver).toMatchObject({ status: "down", code: "timeout", detail: "homeserver unreachable: no answer within 1000 ms" });
    expect(r.checks.store).toMatchObject({ status: "down", code: "timeout" });
    expect(r.checks.crypto).toMatchObject({ status: "degraded", code: "timeout" });
  });
});

describe("caching: /health cannot amplify load onto the homeserver", () => {
  it("concurrent requests share one check; later ones reuse it for cacheMs, then a new check runs", async () => {
    const w = world();
    const m = monitor(w);
    const burst = await Promise.all(Array.from({ length: 200 }, () => m.report()));
    expect(new Set(burst).size).toBe(1);
    expect(w.calls).toEqual({ whoami: 1, write: 1 });
    w.now += OPTS.cacheMs - 1;
    await m.report();
    expect(w.calls.whoami).toBe(1);
    w.now += 1;
    await m.report();
    expect(w.calls.whoami).toBe(2);
  });

  it("the cache period is the config's", async () => {
    const w = world();
    const m = monitor(w, undefined, { ...OPTS, cacheMs: 100 });
    await m.report();
    w.now += 100;
    await m.report();
    expect(w.calls.whoami).toBe(2);
  });
});

/** A metric's value in the registry (0 when absent). */
async function value(metrics: ReturnType<typeof createMetrics>, name: string, labels: Record<string, string>): Promise<number> {
  const m = (await metrics.registry.getMetricsAsJSON()).find((x) => x.name === name);
  const v = (m?.values ?? []).find((x) => Object.entries(labels).every(([k, l]) => x.labels[k] === l));
  return v?.value ?? 0;
}

describe("dependency metrics", () => {
  it("an outage and a recovery are counted once each, and the up gauge follows", async () => {
    const metrics = createMetrics();
    const w = world();
    const m = monitor(w, metrics.dependencies);
    const hs = { dependency: "homeserver", node: "" };
    await m.report();
    expect(await value(metrics, "parley_dependency_up", hs)).toBe(1);
    expect(await value(metrics, "parley_dependency_outages_total", hs)).toBe(0);

    w.whoami = async () => Promise.reject(new ConnectionError("fetch failed"));
    for (let i = 0; i < 3; i++) {
      w.now += OPTS.cacheMs;
      await m.report();
    }
    expect(await value(metrics, "parley_dependency_up", hs)).toBe(0);
    expect(await value(metrics, "parley_dependency_outages_total", hs)).toBe(1);

    w.whoami = async () => "@parley:example.org";
    w.now += OPTS.cacheMs;
    await m.report();
    w.now += OPTS.cacheMs;
    await m.report();
    expect(await value(metrics, "parley_dependency_up", hs)).toBe(1);
    expect(await value(metrics, "parley_dependency_recoveries_total", hs)).toBe(1);
    expect(await value(metrics, "parley_dependency_outages_total", hs)).toBe(1);
  });

  it("a dependency down at the first check is an outage; per Janus node by id", async () => {
    const metrics = createMetrics();
    const w = world({ nodes: [{ id: "j1", state: "up" }, { id: "j2", state: "down" }] });
    await monitor(w, metrics.dependencies).report();
    expect(await value(metrics, "parley_dependency_outages_total", { dependency: "janus", node: "j2" })).toBe(1);
    expect(await value(metrics, "parley_dependency_outages_total", { dependency: "janus", node: "j1" })).toBe(0);
    expect(await value(metrics, "parley_dependency_up", { dependency: "janus", node: "j1" })).toBe(1);
  });

  it("a Janus restart between two checks is counted as it happens, once, whenever the checks look", async () => {
    const metrics = createMetrics();
    const w = world();
    const m = monitor(w, metrics.dependencies);
    m.start();
    await m.report();
    const janus = { dependency: "janus", node: "janus-1" };
    // Down and up again before any check: counted from the node's events.
    w.nodeState!("janus-1", false);
    expect(await value(metrics, "parley_dependency_up", janus)).toBe(0);
    w.nodeState!("janus-1", true);
    expect(await value(metrics, "parley_dependency_outages_total", janus)).toBe(1);
    expect(await value(metrics, "parley_dependency_recoveries_total", janus)).toBe(1);
    // Down again, and a check sees it down too, then up: still one more outage and one recovery.
    w.nodeState!("janus-1", false);
    w.nodes = [{ id: "janus-1", state: "down" }];
    w.now += OPTS.cacheMs;
    await m.report();
    w.nodes = [{ id: "janus-1", state: "up" }];
    w.nodeState!("janus-1", true);
    w.now += OPTS.cacheMs;
    await m.report();
    expect(await value(metrics, "parley_dependency_outages_total", janus)).toBe(2);
    expect(await value(metrics, "parley_dependency_recoveries_total", janus)).toBe(2);
  });

  it("the background timer checks without anyone asking, every intervalMs, and stops on stop()", async () => {
    vi.useFakeTimers();
    const metrics = createMetrics();
    const w = world();
    const m = monitor(w, metrics.dependencies);
    m.start();
    await vi.advanceTimersByTimeAsync(0);
    expect(w.calls.whoami).toBe(1);
    w.whoami = async () => Promise.reject(new ConnectionError("fetch failed"));
    w.now += OPTS.intervalMs;
    await vi.advanceTimersByTimeAsync(OPTS.intervalMs);
    expect(w.calls.whoami).toBe(2);
    expect(await value(metrics, "parley_dependency_outages_total", { dependency: "homeserver", node: "" })).toBe(1);
    await m.stop();
    expect(w.nodeState).toBeUndefined();
    w.now += 10 * OPTS.intervalMs;
    await vi.advanceTimersByTimeAsync(10 * OPTS.intervalMs);
    expect(w.calls.whoami).toBe(2);
  });
});

describe("GET /health", () => {
  async function serve(m: Pick<HealthMonitor, "report">, running: () => boolean): Promise<{ base: string; server: Server }> {
    const app = express();
    app.get("/health", healthRoute(m, running));
    const server = await new Promise<Server>((resolve) => {
      const s = app.listen(0, "127.0.0.1", () => resolve(s));
    });
    const address = server.address();
    return { base: `http://127.0.0.1:${typeof address === "object" && address ? address.port : 0}`, server };
  }

  it("503 M_UNAVAILABLE while starting; then 200 for ok and degraded, 503 with the report for down", async () => {
    let running = false;
    let status: HealthReport["status"] = "ok";
    const report = (): Promise<HealthReport> => Promise.resolve({ status, checks: { homeserver: { status, detail: "x" }, store: { status: "ok", detail: "y" } }, checkedAt: "now" });
    const { base, server } = await serve({ report }, () => running);
    try {
      const starting = await fetch(`${base}/health`);
      expect(starting.status).toBe(503);
      expect(await starting.json()).toMatchObject({ errcode: "M_UNAVAILABLE", error: "starting" });
      running = true;
      for (const [s, code] of [["ok", 200], ["degraded", 200], ["down", 503]] as const) {
        status = s;
        const res = await fetch(`${base}/health`);
        expect(res.status).toBe(code);
        expect(res.headers.get("cache-control")).toBe("no-store");
        expect(await res.json()).toMatchObject({ status: s, checks: { homeserver: { status: s } } });
      }
    } finally {
      server.closeAllConnections();
      server.close();
    }
  });
});
