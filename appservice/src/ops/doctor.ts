// `parley doctor`: the checks a deployment is judged by, their results and how they are printed.
// Each check returns findings (what was looked at, its status, and for a problem how to fix it);
// a check that throws is itself a finding, so one broken part never hides the others. The human
// output reads top to bottom like an operator's checklist; --json is the same data for monitoring.

export type Status = "ok" | "info" | "warn" | "error" | "skip";

export interface Finding {
  /** Stable id of the check, e.g. "janus.janus-a" or "registration" (monitoring keys on it). */
  check: string;
  status: Status;
  /** What was found, in words. */
  message: string;
  /** For warn and error: what to do about it. */
  fix?: string | undefined;
}

/** A place the deployment contacts, and why. */
export interface Endpoint {
  kind: "homeserver" | "appservice" | "janus" | "turn" | "stun" | "federation" | "client";
  address: string;
  why: string;
}

export interface Check {
  id: string;
  run(): Promise<Finding[]>;
}

export interface DoctorReport {
  findings: Finding[];
  endpoints: Endpoint[];
  counts: Record<Status, number>;
  ok: boolean;
}

/** Runs every check (in order: later ones read better after earlier ones) and tallies them. */
export async function runChecks(checks: Check[], endpoints: Endpoint[]): Promise<DoctorReport> {
  const findings: Finding[] = [];
  for (const check of checks) {
    try {
      findings.push(...(await check.run()));
    } catch (err) {
      findings.push({ check: check.id, status: "error", message: `the check failed: ${(err as Error).message}`, fix: "see the message; run doctor again" });
    }
  }
  const counts: Record<Status, number> = { ok: 0, info: 0, warn: 0, error: 0, skip: 0 };
  for (const f of findings) counts[f.status]++;
  return { findings, endpoints, counts, ok: counts.error === 0 };
}

const MARK: Record<Status, string> = { ok: "ok   ", info: "info ", warn: "WARN ", error: "ERROR", skip: "skip " };

/** The human report: one line per finding, its fix indented under it, then the endpoints. */
export function formatHuman(report: DoctorReport): string {
  const width = Math.max(...report.findings.map((f) => f.check.length), 5);
  const lines: string[] = [];
  for (const f of report.findings) {
    lines.push(`${MARK[f.status]}  ${f.check.padEnd(width)}  ${f.message}`);
    if (f.fix && (f.status === "warn" || f.status === "error")) lines.push(`${" ".repeat(width + 9)}fix: ${f.fix}`);
  }
  lines.push("", "External endpoints this deployment contacts:");
  if (!report.endpoints.length) lines.push("  (none)");
  const kindWidth = Math.max(...report.endpoints.map((e) => e.kind.length), 4);
  for (const e of report.endpoints) lines.push(`  ${e.kind.padEnd(kindWidth)}  ${e.address}  (${e.why})`);
  const { error, warn } = report.counts;
  lines.push("", report.ok ? `No errors${warn ? `, ${warn} warning${warn > 1 ? "s" : ""}` : ""}.` : `${error} error${error > 1 ? "s" : ""}, ${warn} warning${warn === 1 ? "" : "s"}.`);
  return `${lines.join("\n")}\n`;
}

export function formatJson(report: DoctorReport): string {
  return `${JSON.stringify(report, null, 2)}\n`;
}

/** Exit status: 0 healthy (warnings allowed), 1 any error. */
export function exitCode(report: DoctorReport): number {
  return report.ok ? 0 : 1;
}
