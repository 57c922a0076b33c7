// The systemd units of deploy/systemd restart what dies: every long-running service has
// Restart=on-failure (or always) with a delay, and a start limit that only a crash loop can reach
// (a broken config or binary), never a dependency's outage that makes each run last a while.
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import { describe, expect, it } from "vitest";

const DIR = path.resolve(import.meta.dirname, "../../../deploy/systemd");

/** section -> key -> value (the last one when a key repeats), comments and blank lines skipped. */
function parseUnit(text: string): Record<string, Record<string, string>> {
  const out: Record<string, Record<string, string>> = {};
  let section = "";
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (!line || line.startsWith("#") || line.startsWith(";")) continue;
    const head = /^\[(.+)\]$/.exec(line);
    if (head) {
      section = head[1]!;
      out[section] ??= {};
      continue;
    }
    const eq = line.indexOf("=");
    if (eq > 0) (out[section] ??= {})[line.slice(0, eq).trim()] = line.slice(eq + 1).trim();
  }
  return out;
}

/** systemd time spans as Parley's units write them: plain seconds, or "<n>s" / "<n>min". */
function seconds(v: string | undefined): number {
  const m = /^(\d+)(s|min)?$/.exec(v ?? "");
  if (!m) return NaN;
  return Number(m[1]) * (m[2] === "min" ? 60 : 1);
}

const services = readdirSync(DIR)
  .filter((f) => f.endsWith(".service"))
  .map((f) => ({ file: f, unit: parseUnit(readFileSync(path.join(DIR, f), "utf8")) }));
const longRunning = services.filter((s) => (s.unit["Service"]?.["Type"] ?? "simple") !== "oneshot");

describe("deploy/systemd units", () => {
  it("the long-running services are Parley, its Janus and its coturn", () => {
    expect(longRunning.map((s) => s.file).sort()).toEqual(["parley-coturn.service", "parley-janus.service", "parley.service"]);
  });

  it("parley.service keeps Node's compile cache in its own cache directory, where restarts find it", () => {
    const text = readFileSync(path.join(DIR, "parley.service"), "utf8");
    const service = parseUnit(text)["Service"]!;
    const env = [...text.matchAll(/^Environment=(.*)$/gm)].flatMap((m) => m[1]!.split(/\s+/));
    const cache = env.find((e) => e.startsWith("NODE_COMPILE_CACHE="))?.slice("NODE_COMPILE_CACHE=".length);
    // Under ProtectSystem=strict only the unit's own directories are writable, and PrivateTmp=
    // empties /tmp at every start: the cache must live in CacheDirectory=.
    expect(service["CacheDirectory"]).toBe("parley");
    expect(cache).toMatch(/^\/var\/cache\/parley\//);
    expect(env).not.toContain("NODE_DISABLE_COMPILE_CACHE=1");
  });

  it.each(longRunning.map((s) => [s.file, s.unit] as const))("%s restarts on failure, after a delay, and gives up only on a crash loop", (_file, unit) => {
    const service = unit["Service"]!;
    expect(["on-failure", "always"]).toContain(service["Restart"]);
    const delay = seconds(service["RestartSec"]);
    expect(delay).toBeGreaterThanOrEqual(1);
    expect(delay).toBeLessThanOrEqual(30);
    // Start limits belong to [Unit] (systemd ignores StartLimitIntervalSec in [Service]).
    expect(service["StartLimitIntervalSec"]).toBeUndefined();
    const interval = seconds(unit["Unit"]?.["StartLimitIntervalSec"]);
    const burst = Number(unit["Unit"]?.["StartLimitBurst"]);
    expect(burst).toBeGreaterThanOrEqual(5);
    // Reaching the limit takes `burst` runs shorter than interval/burst - delay on average: a
    // crash loop. With burst x delay >= interval it could never be reached at all (a unit that
    // never gives up), with a run allowance under 5 s it would stop a service that merely restarts.
    const allowance = interval / burst - delay;
    expect(allowance).toBeGreaterThanOrEqual(5);
    expect(burst * delay).toBeLessThan(interval);
  });
});
