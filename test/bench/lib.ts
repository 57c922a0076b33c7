// Helpers every benchmark shares: figures are printed as `BENCH <name> <value> <unit>`.
import { readFileSync } from "node:fs";

/** The p-th percentile (nearest rank) of the samples. */
export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export function bench(name: string, value: number, unit: string): void {
  console.log(`BENCH ${name} ${value.toFixed(2)} ${unit}`);
}

/** Milliseconds one run of `fn` takes. */
export async function timed<T>(fn: () => Promise<T>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/** Linux's USER_HZ: /proc tick counts per second. */
export const CLOCK_TICKS = 100;

/** CPU seconds (user + system) a process has used, from /proc/<pid>/stat. */
export function processCpuSeconds(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** The machine's busy and total CPU ticks over all cores, from /proc/stat. */
export function machineTicks(): { busy: number; total: number } {
  const cpu = readFileSync("/proc/stat", "utf8").split("\n")[0]!.split(/\s+/).slice(1).map(Number);
  const idle = cpu[3]! + cpu[4]!;
  const total = cpu.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/**
 * CPU use over a window: `cores(pid)` for another process, `self()` for this one (every thread,
 * workers included), `machine()` as the busy share of all cores (0..1).
 */
export class CpuWindow {
  private readonly t0 = performance.now();
  private readonly self0 = process.cpuUsage();
  private readonly machine0 = machineTicks();
  private readonly procs0 = new Map<number, number>();

  constructor(pids: number[]) {
    for (const pid of pids) this.procs0.set(pid, processCpuSeconds(pid));
  }

  seconds(): number {
    return (performance.now() - this.t0) / 1000;
  }

  /** Cores (1 = one core busy all the time) a process used since the window opened. */
  cores(pid: number): number {
    return (processCpuSeconds(pid) - (this.procs0.get(pid) ?? 0)) / this.seconds();
  }

  self(): number {
    const u = process.cpuUsage(this.self0);
    return (u.user + u.system) / 1e6 / this.seconds();
  }

  machine(): number {
    const m = machineTicks();
    return (m.busy - this.machine0.busy) / Math.max(1, m.total - this.machine0.total);
  }
}

/**
 * UDP counters of this network namespace (/proc/net/snmp): datagrams the kernel dropped because a
 * socket's receive buffer was full, or could not send. Inside scripts/isolated.sh only this run's
 * Janus and synthetic participants are counted.
 */
export function udpDrops(): { rcvbuf: number; sndbuf: number } {
  const lines = readFileSync("/proc/net/snmp", "utf8").split("\n").filter((l) => l.startsWith("Udp:"));
  const names = lines[0]?.split(/\s+/) ?? [];
  const vals = lines[1]?.split(/\s+/).map(Number) ?? [];
  const get = (name: string) => vals[names.indexOf(name)] ?? 0;
  return { rcvbuf: get("RcvbufErrors"), sndbuf: get("SndbufErrors") };
}
