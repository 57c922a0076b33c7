// Port helpers for the loopback dev/test stack: free-port search and readiness polling.
import net from "node:net";
import { setTimeout as sleep } from "node:timers/promises";

// Ports handed out by this process, so that two freePort() calls made before either port is
// bound never return the same number.
const handedOut = new Set<string>();

/** Binds port 0 on `host`, reads the port the kernel chose, closes the socket and returns it. */
export async function freePort(host: string): Promise<number> {
  for (let attempt = 0; attempt < 50; attempt++) {
    const port = await new Promise<number>((resolve, reject) => {
      const server = net.createServer();
      server.unref();
      server.once("error", reject);
      server.listen({ host, port: 0, exclusive: true }, () => {
        const address = server.address();
        const chosen = typeof address === "object" && address !== null ? address.port : 0;
        server.close((err) => (err ? reject(err) : resolve(chosen)));
      });
    });
    const key = `${host}:${port}`;
    if (port > 0 && !handedOut.has(key)) {
      handedOut.add(key);
      return port;
    }
  }
  throw new Error(`freePort: no free port found on ${host}`);
}

/** True when `port` can be bound on `host` right now (it is closed again before returning). */
export function portIsFree(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.unref();
    server.once("error", () => resolve(false));
    server.listen({ host, port, exclusive: true }, () => server.close(() => resolve(true)));
  });
}

export interface WaitOptions {
  /** Delay between attempts, in ms (default 100). */
  intervalMs?: number | undefined;
  /** Stops waiting early (e.g. when the process being waited for has exited). */
  signal?: AbortSignal | undefined;
}

function checkAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) {
    throw signal.reason instanceof Error ? signal.reason : new Error("wait aborted");
  }
}

/**
 * Polls `url` with GET until it answers with a 2xx status. Rejects after `timeoutMs`, with the
 * last error or status seen.
 */
export async function waitForHttp(
  url: string,
  timeoutMs: number,
  opts: WaitOptions = {},
): Promise<void> {
  const interval = opts.intervalMs ?? 100;
  const deadline = Date.now() + timeoutMs;
  let last: string;
  for (;;) {
    checkAborted(opts.signal);
    try {
      const remaining = Math.max(1, deadline - Date.now());
      const res = await fetch(url, {
        signal: AbortSignal.timeout(Math.min(2000, remaining)),
      });
      await res.body?.cancel();
      if (res.ok) return;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err);
    }
    if (Date.now() + interval > deadline) {
      throw new Error(`waitForHttp: ${url} not ready after ${timeoutMs} ms (last: ${last})`);
    }
    await sleep(interval);
  }
}

/** Attempts a single TCP connection; resolves true when it is accepted. */
export function tcpConnects(host: string, port: number, timeoutMs = 1000): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean): void => {
      socket.removeAllListeners();
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once("connect", () => done(true));
    socket.once("error", () => done(false));
  });
}

/** Polls until a TCP connection to host:port is accepted. Rejects after `timeoutMs`. */
export async function waitForTcp(
  host: string,
  port: number,
  timeoutMs: number,
  opts: WaitOptions = {},
): Promise<void> {
  const interval = opts.intervalMs ?? 50;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    checkAborted(opts.signal);
    if (await tcpConnects(host, port, Math.min(1000, Math.max(1, deadline - Date.now())))) return;
    if (Date.now() + interval > deadline) {
      throw new Error(`waitForTcp: ${host}:${port} not accepting connections after ${timeoutMs} ms`);
    }
    await sleep(interval);
  }
}
