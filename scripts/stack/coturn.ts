// Starts coturn for the loopback dev/test stack with the config Parley generates
// (renderCoturnConfig): a fresh shared secret in a 0600 file, TURN on one address and a free port,
// relays on a per-institution UDP range, peers limited to the SFU's media addresses.
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { renderCoturnConfig } from "../../appservice/src/turn/coturnConfig.ts";
import { freePort, waitForTcp } from "./ports.ts";
import { startProcess, type ManagedProcess } from "./proc.ts";

export interface CoturnHandle {
  /** turn:IP:PORT?transport=udp and ?transport=tcp */
  urls: string[];
  ip: string;
  port: number;
  /** File holding the shared secret (what Parley's turn.secretFile points at). */
  secretFile: string;
  secret: string;
  realm: string;
  relayPortRange: [number, number];
  logFile: string;
  /** The running process (a new one after restart()). */
  readonly process: ManagedProcess;
  stop(): Promise<void>;
  /** Stops it (SIGKILL) and starts it again: same config, port and secret. */
  restart(): Promise<void>;
}

export interface CoturnOptions {
  dir: string;
  /** Address coturn listens and relays on (inside scripts/isolated.sh: the media address). */
  ip: string;
  realm: string;
  relayPortRange: [number, number];
  /** The SFU's media addresses (default: ip). */
  allowedPeerIps?: string[];
  /** Default $PARLEY_TURNSERVER_BIN or /usr/bin/turnserver. */
  bin?: string;
}

export async function startCoturn(opts: CoturnOptions): Promise<CoturnHandle> {
  const dir = path.resolve(opts.dir);
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const secret = randomBytes(32).toString("hex");
  const secretFile = path.join(dir, "turn-secret");
  await fs.writeFile(secretFile, `${secret}\n`, { mode: 0o600 });
  const port = await freePort(opts.ip);
  const configFile = path.join(dir, "turnserver.conf");
  const logFile = path.join(dir, "coturn.log");
  await fs.writeFile(
    configFile,
    renderCoturnConfig({
      listeningIps: [opts.ip],
      port,
      relayIp: opts.ip,
      relayPortRange: opts.relayPortRange,
      realm: opts.realm,
      secret,
      allowedPeerIps: opts.allowedPeerIps ?? [opts.ip],
      userQuota: 12,
      totalQuota: 1000,
      maxBytesPerSecond: 0,
      logFile: "stdout",
      pidFile: path.join(dir, "turnserver.pid"),
      userDbFile: path.join(dir, "turndb"),
    }),
    { mode: 0o600 },
  );
  const launch = () => startProcess({
    name: "coturn",
    command: opts.bin ?? process.env["PARLEY_TURNSERVER_BIN"] ?? "/usr/bin/turnserver",
    // -c alone: coturn reads this file and no other (-n would make it ignore every file).
    args: ["-c", configFile],
    dir,
    cwd: dir,
    logFile,
    stopTimeoutMs: 5_000,
    ready: ({ signal }) => waitForTcp(opts.ip, port, 20_000, { signal, intervalMs: 25 }),
    readyTimeoutMs: 20_000,
  });
  let proc = await launch();
  return {
    urls: [`turn:${opts.ip}:${port}?transport=udp`, `turn:${opts.ip}:${port}?transport=tcp`],
    ip: opts.ip,
    port,
    secretFile,
    secret,
    realm: opts.realm,
    relayPortRange: opts.relayPortRange,
    logFile,
    get process() {
      return proc;
    },
    stop: () => proc.stop().then(() => undefined),
    async restart() {
      await proc.kill9();
      proc = await launch();
    },
  };
}
