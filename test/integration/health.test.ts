// /health on the real stack (Synapse, Janus, Parley): every check ok; hundreds of requests cost
// Synapse one probe per cache period; Janus SIGKILLed makes the Janus check and the whole report
// down (503, one node), and ok again once it is back; Synapse SIGKILLed makes the homeserver check
// down, and ok again after its restart; a registration the homeserver no longer accepts is named;
// the outages and recoveries are counted in the metrics, also when nobody asks /health (Janus's
// connection watched, the homeserver by the background check).
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { HealthReport } from "../../appservice/src/http/health.ts";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { waitFor } from "../support/matrix.ts";
import { metric } from "../support/metrics.ts";

let stack: Stack;
let A: Institution;
let node: string;
let failed = false;

beforeAll(async () => {
  stack = await startInstitutions({ count: 1, allow: () => [], janus: true, turn: false });
  A = stack.institutions[0]!;
  node = A.parley.config.sfu.nodes[0]!.id;
});

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  await stack?.stop({ keep: failed || undefined });
});

async function health(): Promise<{ status: number; report: HealthReport }> {
  const res = await fetch(`${A.parley.url}/health`);
  return { status: res.status, report: (await res.json()) as HealthReport };
}

/** Polls /health until `ok` holds for its answer; returns that answer. */
const healthUntil = (what: string, ok: (h: { status: number; report: HealthReport }) => boolean, timeoutMs = 30_000) =>
  waitFor(`/health: ${what}`, async () => {
    const h = await health();
    return ok(h) ? h : undefined;
  }, timeoutMs);

/** Waits until the metric has the value (read from the scrape only: /health is not asked). */
const metricUntil = (name: string, labels: Record<string, string>, value: number, timeoutMs = 30_000) =>
  waitFor(`${name}${JSON.stringify(labels)} = ${value}`, async () => ((await metric(A, name, labels)) === value ? true : undefined), timeoutMs);

const janus = () => ({ dependency: "janus", node });
const homeserver = { dependency: "homeserver", node: "" };

describe("/health on the real stack", () => {
  it("reports every dependency ok, with nothing secret or internal in it", async () => {
    const { status, report } = await health();
    expect(status).toBe(200);
    expect(report).toMatchObject({
      status: "ok",
      activeCalls: 0,
      checks: {
        homeserver: { status: "ok" },
        store: { status: "ok", detail: "takes writes" },
        sfu: { status: "ok", nodes: [{ id: node, state: "up" }] },
        crypto: { status: "ok" },
      },
    });
    const text = JSON.stringify(report);
    const cfg = A.parley.config;
    for (const secret of [cfg.appservice.asToken, cfg.appservice.hsToken, cfg.sfu.nodes[0]!.apiSecret, cfg.crypto!.storeKey]) expect(text).not.toContain(secret);
    for (const internal of [cfg.homeserver.url, cfg.sfu.nodes[0]!.url, cfg.store.path]) expect(text).not.toContain(internal);
    expect(await metric(A, "parley_dependency_up", homeserver)).toBe(1);
    expect(await metric(A, "parley_dependency_up", { dependency: "store", node: "" })).toBe(1);
    expect(await metric(A, "parley_dependency_up", { dependency: "crypto", node: "" })).toBe(1);
  });

  it("a hammered /health reaches the homeserver once per health.cacheMs at most (counted in Synapse's access log)", async () => {
    const whoamis = async () => (await readFile(A.synapse.logFile, "utf8")).split("\n").filter((l) => l.includes("/account/whoami")).length;
    const before = await whoamis();
    const t0 = Date.now();
    const { cacheMs, intervalMs } = A.parley.config.health;
    // Bursts of 25 for over two cache periods: a fresh check is due at least once meanwhile.
    let requests = 0;
    while (requests < 500 || Date.now() - t0 < 2.5 * cacheMs) {
      const answers = await Promise.all(Array.from({ length: 25 }, () => fetch(`${A.parley.url}/health`).then((r) => r.status)));
      expect(answers.every((s) => s === 200)).toBe(true);
      requests += answers.length;
    }
    const elapsed = Date.now() - t0;
    const asked = (await whoamis()) - before;
    // One per cache period, plus the background checks, plus one of each in flight at either end.
    expect(asked).toBeGreaterThan(0);
    expect(asked).toBeLessThanOrEqual(Math.ceil(elapsed / cacheMs) + Math.ceil(elapsed / intervalMs) + 2);
  });

  it("Janus SIGKILLed: the Janus check and the report are down (503, the only node); ok again after its restart; counted", async () => {
    expect(await metric(A, "parley_dependency_outages_total", janus())).toBe(0);
    await A.janus!.kill9();
    const down = await healthUntil("Janus down", (h) => h.report.checks.sfu?.status === "down");
    expect(down.status).toBe(503);
    expect(down.report.status).toBe("down");
    expect(down.report.checks.sfu!.nodes).toEqual([{ id: node, state: expect.not.stringMatching(/^up$/) }]);
    expect(down.report.checks.homeserver.status).toBe("ok");

    await A.janus!.restart();
    const ok = await healthUntil("ok after the Janus restart", (h) => h.report.status === "ok");
    expect(ok.status).toBe(200);
    expect(ok.report.checks.sfu).toMatchObject({ status: "ok", nodes: [{ id: node, state: "up" }] });
    expect(await metric(A, "parley_dependency_outages_total", janus())).toBe(1);
    expect(await metric(A, "parley_dependency_recoveries_total", janus())).toBe(1);
    expect(await metric(A, "parley_dependency_up", janus())).toBe(1);
  });

  it("with nobody asking /health, outages are counted: Janus as its connection drops, the homeserver by the background check", async () => {
    await A.janus!.kill9();
    await metricUntil("parley_dependency_up", janus(), 0);
    expect(await metric(A, "parley_dependency_outages_total", janus())).toBe(2);
    await A.janus!.restart();
    await metricUntil("parley_dependency_up", janus(), 1);
    expect(await metric(A, "parley_dependency_recoveries_total", janus())).toBe(2);

    // The homeserver has no connection to watch: only the timer (health.intervalMs) can see it go.
    await A.synapse.kill9();
    await metricUntil("parley_dependency_up", homeserver, 0);
    expect(await metric(A, "parley_dependency_outages_total", homeserver)).toBe(1);
    await A.synapse.restart();
    await metricUntil("parley_dependency_up", homeserver, 1);
    expect(await metric(A, "parley_dependency_recoveries_total", homeserver)).toBe(1);
  });

  it("Synapse SIGKILLed: the homeserver check is down (503); ok again after its restart; counted", async () => {
    await A.synapse.kill9();
    const down = await healthUntil("homeserver down", (h) => h.report.checks.homeserver.status === "down");
    expect(down.status).toBe(503);
    expect(down.report.checks.homeserver.detail).toMatch(/^homeserver unreachable/);
    expect(down.report.checks.store.status).toBe("ok");

    await A.synapse.restart();
    const ok = await healthUntil("ok after the Synapse restart", (h) => h.report.status === "ok", 60_000);
    expect(ok.status).toBe(200);
    expect(await metric(A, "parley_dependency_outages_total", homeserver)).toBe(2);
    expect(await metric(A, "parley_dependency_recoveries_total", homeserver)).toBe(2);
  });

  it("a registration the homeserver no longer accepts is down, and named (M_UNKNOWN_TOKEN)", async () => {
    const file = path.join(A.dir, "registration.yaml");
    const original = await readFile(file, "utf8");
    const asToken = A.parley.config.appservice.asToken;
    try {
      // Synapse reads the registration at start: another as_token there, and Parley's is unknown.
      await writeFile(file, original.replace(asToken, `not-${asToken.slice(4)}`), { mode: 0o600 });
      await A.synapse.restart();
      const refused = await healthUntil("registration refused", (h) => h.report.checks.homeserver.code === "M_UNKNOWN_TOKEN", 60_000);
      expect(refused.status).toBe(503);
      expect(refused.report.checks.homeserver).toMatchObject({ status: "down", detail: expect.stringMatching(/^registration not accepted/) });
    } finally {
      await writeFile(file, original, { mode: 0o600 });
      await A.synapse.restart();
    }
    await healthUntil("ok with the registration back", (h) => h.report.status === "ok", 60_000);
  });
});
