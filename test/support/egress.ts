// Zero egress, observed: what the stack's processes tried to reach (from the strace files that
// scripts/stack/proc.ts writes when PARLEY_TRACE_NETWORK is set) and what a page requested (from
// Playwright's request events), each attempt named by process or page, address, port and protocol.
import fs from "node:fs";
import path from "node:path";
import type { BrowserContext } from "playwright-core";
import { NETWORK_TRACE_SUFFIX } from "../../scripts/stack/proc.ts";

export interface NetworkAttempt {
  /** The managed process, by its log file's place in the stack dir (e.g. "a/synapse/synapse"). */
  process: string;
  /** The thread that made the call. */
  pid: number;
  syscall: string;
  /** TCP, UDP, TCPv6, UDPv6... as strace's -yy names the socket ("?" when it could not). */
  protocol: string;
  address: string;
  port: number;
  /** The syscall's result as traced (e.g. "-1 ENETUNREACH (Network is unreachable)"), "" when unfinished. */
  result: string;
}

const LINE = /^(\d+)\s+(connect|sendto|sendmsg|sendmmsg)\((\d+)(?:<([A-Za-z0-9]+):[^>]*>)?/;
const V4 = /sa_family=AF_INET, sin_port=htons\((\d+)\), sin_addr=inet_addr\("([0-9.]+)"\)/g;
const V6 = /sa_family=AF_INET6, sin6_port=htons\((\d+)\), [^}]*?inet_pton\(AF_INET6, "([^"]+)"/g;

/** Every traced syscall under `dir` that named an IPv4 or IPv6 peer (Unix and netlink sockets are not network). */
export function readNetworkTraces(dir: string): NetworkAttempt[] {
  const files = (fs.readdirSync(dir, { recursive: true }) as string[]).filter((f) => f.endsWith(NETWORK_TRACE_SUFFIX));
  const out: NetworkAttempt[] = [];
  for (const rel of files) {
    const name = rel.slice(0, -NETWORK_TRACE_SUFFIX.length).replace(/\.log$/, "");
    for (const line of fs.readFileSync(path.join(dir, rel), "utf8").split("\n")) {
      const m = LINE.exec(line);
      if (!m) continue;
      const result = /\) = (.*)$/.exec(line)?.[1] ?? "";
      for (const re of [V4, V6]) {
        for (const a of line.matchAll(re)) {
          out.push({ process: name, pid: Number(m[1]), syscall: m[2]!, protocol: m[4] ?? "?", address: a[2]!, port: Number(a[1]), result });
        }
      }
    }
  }
  return out;
}

/** The processes that ran traced under `dir` (each has a trace file, empty if it addressed nobody). */
export function tracedProcesses(dir: string): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[])
    .filter((f) => f.endsWith(NETWORK_TRACE_SUFFIX))
    .map((f) => f.slice(0, -NETWORK_TRACE_SUFFIX.length).replace(/\.log$/, ""));
}

/**
 * The stack's own addresses: loopback (127.0.0.0/8, ::1, v4-mapped loopback), but not port 53:
 * nothing in the stack serves DNS, so a query to a local resolver is a name about to be looked up
 * outside.
 */
export function isStackAddress(a: { address: string; port: number }): boolean {
  if (a.port === 53) return false;
  return a.address.startsWith("127.") || a.address === "::1" || /^::ffff:127\./i.test(a.address);
}

/** Attempts outside the stack, one line each: process, address, port, protocol, syscall, result. */
export function describeEgress(attempts: NetworkAttempt[]): string[] {
  const seen = new Map<string, number>();
  for (const a of attempts.filter((x) => !isStackAddress(x))) {
    const key = `${a.process} (pid ${a.pid}) ${a.syscall} ${a.protocol} ${a.address.includes(":") ? `[${a.address}]` : a.address}:${a.port}${a.result ? ` -> ${a.result}` : ""}`;
    seen.set(key, (seen.get(key) ?? 0) + 1);
  }
  return [...seen].map(([k, n]) => (n > 1 ? `${k} (x${n})` : k));
}

/** Waits until no strace still writes a trace under `dir` (each exits just after its program; it flushes on exit). */
export async function tracersGone(dir: string, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const alive = fs.readdirSync("/proc").filter((p) => /^\d+$/.test(p)).some((p) => {
      try {
        const cmd = fs.readFileSync(`/proc/${p}/cmdline`, "utf8");
        return cmd.includes("strace") && cmd.includes(dir);
      } catch {
        return false;
      }
    });
    if (!alive) return;
    if (Date.now() > deadline) throw new Error(`strace still running under ${dir}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

/** Records every request (HTTP, fetch, workers, WebSockets) a browser context makes whose origin is not allowed. */
export function watchOrigins(context: BrowserContext, label: string, allowed: () => string[], into: string[]): void {
  const check = (url: string, kind: string) => {
    if (!/^(https?|wss?):/.test(url)) return; // data:, blob:, about: never leave the browser
    const u = new URL(url);
    const origin = `${u.protocol.replace(/^ws/, "http")}//${u.host}`;
    if (!allowed().includes(origin)) into.push(`${label} ${kind} ${url}`);
  };
  context.on("request", (r) => check(r.url(), r.resourceType()));
  context.on("page", (p) => p.on("websocket", (ws) => check(ws.url(), "websocket")));
  for (const p of context.pages()) p.on("websocket", (ws) => check(ws.url(), "websocket"));
}
