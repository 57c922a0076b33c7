// Reading Parley's /metrics in integration tests.
import type { Institution } from "../../scripts/stack/institutions.ts";

/** A metric's value from Parley's /metrics (0 when absent). */
export async function metric(inst: Institution, name: string, labels: Record<string, string> = {}): Promise<number> {
  const text = await (await fetch(inst.parley.metricsUrl)).text();
  const want = Object.entries(labels).map(([k, v]) => `${k}="${v}"`);
  for (const line of text.split("\n")) {
    if (!line.startsWith(name)) continue;
    const m = /^([^{\s]+)(\{[^}]*\})?\s+(\S+)/.exec(line);
    if (m?.[1] === name && want.every((w) => (m[2] ?? "").includes(w))) return Number(m[3]);
  }
  return 0;
}
