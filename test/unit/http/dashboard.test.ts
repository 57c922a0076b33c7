// The Grafana dashboard and the example alert rules name only metrics Parley exports: a renamed
// metric must not leave an empty panel or an alert that can never fire.
import { readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { parse } from "yaml";
import { createMetrics } from "../../../appservice/src/http/metrics.ts";

const ROOT = path.resolve(import.meta.dirname, "../../..");

/** Every series name a scrape can show: histograms add _bucket, _sum and _count. */
async function exported(): Promise<Set<string>> {
  const names = new Set<string>();
  for (const m of await createMetrics().registry.getMetricsAsJSON()) {
    names.add(m.name);
    if (String(m.type) === "histogram") for (const s of ["_bucket", "_sum", "_count"]) names.add(`${m.name}${s}`);
  }
  return names;
}

/** The parley_ metric names an expression reads (label values are in quotes, skipped). */
function metricNames(expr: string): string[] {
  return [...expr.replace(/"[^"]*"/g, '""').matchAll(/\bparley_[a-zA-Z0-9_:]*/g)].map((m) => m[0]);
}

function dashboardExprs(): string[] {
  const dashboard = JSON.parse(readFileSync(path.join(ROOT, "deploy/grafana/parley-dashboard.json"), "utf8")) as {
    panels: { type: string; targets?: { expr: string }[] }[];
  };
  return dashboard.panels.flatMap((p) => (p.targets ?? []).map((t) => t.expr));
}

function alertExprs(): string[] {
  const rules = parse(readFileSync(path.join(ROOT, "deploy/prometheus/parley-alerts.yml"), "utf8")) as { groups: { rules: { expr: string }[] }[] };
  return rules.groups.flatMap((g) => g.rules.map((r) => String(r.expr)));
}

describe("the dashboard and the alert rules", () => {
  it("name only metrics the registry exports, and every panel reads one", async () => {
    const names = await exported();
    const exprs = dashboardExprs();
    expect(exprs.length).toBeGreaterThan(20);
    const unknown = exprs.flatMap(metricNames).filter((n) => !names.has(n));
    expect(unknown).toEqual([]);
    expect(exprs.filter((e) => metricNames(e).length === 0)).toEqual([]);
  });

  it("show each group of call metrics somewhere", async () => {
    const used = new Set(dashboardExprs().flatMap(metricNames));
    const groups = ["parley_calls_", "parley_participant_", "parley_lobby_", "parley_moderation_", "parley_provisioned_key_", "parley_e2ee_", "parley_janus_", "parley_signalling_", "parley_dependency_"];
    expect(groups.filter((g) => ![...used].some((n) => n.startsWith(g)))).toEqual([]);
    // Every metric of the call groups has a panel (a histogram through its buckets).
    const metrics = (await createMetrics().registry.getMetricsAsJSON()).map((m) => m.name).filter((n) => groups.some((g) => n.startsWith(g)));
    expect(metrics.filter((n) => !used.has(n) && !used.has(`${n}_bucket`))).toEqual([]);
  });

  it("the alert rules name only exported metrics (besides Prometheus's own up)", async () => {
    const names = await exported();
    const exprs = alertExprs();
    expect(exprs.length).toBeGreaterThan(5);
    expect(exprs.flatMap(metricNames).filter((n) => !names.has(n))).toEqual([]);
  });

  it("the data source is the ${DS_PROMETHEUS} variable everywhere", () => {
    const dashboard = JSON.parse(readFileSync(path.join(ROOT, "deploy/grafana/parley-dashboard.json"), "utf8")) as { panels: { type: string; datasource?: { uid: string } }[] };
    expect(dashboard.panels.filter((p) => p.type !== "row" && p.datasource?.uid !== "${DS_PROMETHEUS}")).toEqual([]);
  });
});
