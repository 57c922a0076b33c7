// K institutions on loopback, each a Synapse, a Parley appservice (its own process and SQLite
// file) and optionally a Janus running Parley's generated config, with a coturn beside it. Institution i (0-based) lives
// on 127.0.0.(11+i), so server ACLs (which ignore ports) can tell institutions apart.
// Used by the dev deployment (scripts/dev.ts), the integration tests and the benchmarks.
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { stringify } from "yaml";
import { parseConfig } from "../../appservice/src/config/load.ts";
import type { ParleyConfig, ParleyConfigInput } from "../../appservice/src/config/schema.ts";
import { botUserId } from "../../appservice/src/matrix/botUser.ts";
import { registrationYaml } from "../../appservice/src/matrix/registration.ts";
import { SqliteStore } from "../../appservice/src/store/sqlite.ts";
import { startCoturn, type CoturnHandle } from "./coturn.ts";
import { startGeneratedJanus, type GeneratedJanus } from "./janus.ts";
import { freePort, waitForHttp } from "./ports.ts";
import { startProcess, type ManagedProcess } from "./proc.ts";
import { startSynapse, type SynapseHandle } from "./synapse.ts";
import { registerUser, type RegisteredUser } from "./users.ts";

const ROOT = path.resolve(import.meta.dirname, "../..");
// PARLEY_MAIN: run another build of Parley, e.g. dist/ copied away from the sources (scripts/dist-check.sh).
const MAIN = process.env["PARLEY_MAIN"] ?? path.join(ROOT, "appservice/src/app/main.ts");

export interface StackOptions {
  count: number;
  /** Parley's federation allow-list for institution i, given every institution's host. */
  allow: (index: number, hosts: string[]) => string[];
  /** Start a Janus per institution (default true). */
  janus?: boolean;
  /** Janus nodes institution i runs, each in its sfu.nodes (default 1; at most 4). */
  janusNodes?: (index: number) => number;
  /** More of the `sfu` config section for institution i (e.g. deadNodeSeconds). */
  sfu?: (index: number) => { deadNodeSeconds?: number; warmSessions?: number };
  /** Start a coturn beside each Janus, handed to browsers in call grants (default true). */
  turn?: boolean;
  /** Browsers in the calls institution i hosts may use only TURN relay candidates (default false). */
  relayOnly?: (index: number) => boolean;
  /** Where data and logs go (default: a fresh temp dir). */
  dir?: string;
  logLevel?: string;
  /** Parley's per-address call join limit (default: none to speak of; test clients share one address). */
  joinRateLimit?: { perMinute: number; burst: number };
  /** Who makes media keys in the calls institution i hosts (default: each participant). */
  e2eeKeys?: (index: number) => "participant" | "provisioned";
  /** More of the `calls` config section for institution i (limits, idle end). */
  calls?: (index: number) => Omit<NonNullable<ParleyConfigInput["calls"]>, "e2ee">;
  /** Limits on meeting rooms made from aliases by institution i (default: the config's). */
  aliasRooms?: (index: number) => { perMinute?: number; burst?: number; max?: number };
  /** Meeting governance of institution i (default access level, trusted and external servers...). */
  governance?: (index: number, hosts: string[]) => NonNullable<NonNullable<ParleyConfigInput["meetings"]>["governance"]>;
  /** The `guests` config section of institution i (default: the config's, guests off). */
  guests?: (index: number) => ParleyConfigInput["guests"];
  /** Institution i's store section (default: SQLite in its folder), e.g. a PostgreSQL database. */
  store?: (index: number) => Omit<NonNullable<ParleyConfigInput["store"]>, "path"> | undefined;
}

export interface ParleyProcess {
  readonly url: string;
  /** GET /metrics, on Parley's separate metrics listener. */
  readonly metricsUrl: string;
  readonly config: ParleyConfig;
  readonly configFile: string;
  readonly logFile: string;
  /** The running process's id (for CPU readings from /proc; -1 if it never started). */
  readonly pid: number;
  /** The running process (a new one after restart()). */
  readonly process: ManagedProcess;
  /** SIGKILL, no cleanup. */
  kill9(): Promise<void>;
  /** Stops (if running) and starts again with the same config and store. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

export interface Institution {
  readonly index: number;
  readonly name: string;
  readonly ip: string;
  /** The host part of the server name (what m.room.server_acl compares). */
  readonly host: string;
  readonly serverName: string;
  readonly botUserId: string;
  readonly dir: string;
  readonly synapse: SynapseHandle;
  /** The first of its Janus nodes (sfu node id `janus-<name>`). */
  readonly janus: GeneratedJanus | undefined;
  /** Every Janus node of the institution, in sfu.nodes order (ids janus-<name>, janus-<name>2, ...). */
  readonly januses: GeneratedJanus[];
  readonly coturn: CoturnHandle | undefined;
  readonly parley: ParleyProcess;
  /** "#meet-<slug>:<serverName>" */
  alias(slug: string): string;
  registerUser(localpart: string, opts?: { password?: string; admin?: boolean }): Promise<RegisteredUser>;
  /** A second connection to Parley's SQLite file (WAL: reads see committed writes). */
  parleyStore(): SqliteStore;
}

export interface Stack {
  readonly dir: string;
  readonly institutions: Institution[];
  /** Stops everything; removes the data dir unless `keep` (or PARLEY_KEEP_STACK=1). */
  stop(opts?: { keep?: boolean }): Promise<void>;
}

const secret = () => randomBytes(32).toString("hex");

/**
 * Where coturn listens and which peers it may relay to: the addresses Janus gathers on. Inside
 * scripts/isolated.sh that is the media address (127.77.0.1), where the browsers gather too.
 * Outside (the dev deployment) Janus gathers on the machine's interfaces: coturn listens on the
 * institution's loopback address and may relay to those interfaces' addresses.
 */
function turnAddresses(ip: string): { ip: string; allowedPeerIps: string[] } {
  const media = process.env.PARLEY_MEDIA_ADDR;
  if (media) return { ip: media, allowedPeerIps: [media] };
  const local = Object.values(os.networkInterfaces())
    .flat()
    .filter((a) => a && !a.internal && a.family === "IPv4")
    .map((a) => a!.address);
  return { ip, allowedPeerIps: local.length ? local : [ip] };
}

async function startParley(configFile: string, config: ParleyConfig, dir: string): Promise<ManagedProcess> {
  return startProcess({
    name: "parley",
    command: process.execPath,
    args: [MAIN, "-c", configFile],
    dir,
    cwd: ROOT,
    env: { ...process.env, PARLEY_LOG_LEVEL: config.logging.level },
    ready: ({ signal }) => waitForHttp(`http://${config.appservice.bindAddress}:${config.appservice.port}/health`, 60_000, { signal }),
    readyTimeoutMs: 90_000,
  });
}

async function startInstitution(index: number, hosts: string[], opts: StackOptions, base: string): Promise<Institution> {
  const name = String.fromCharCode(97 + index);
  const ip = hosts[index]!;
  const dir = path.join(base, name);
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const parleyPort = await freePort(ip);
  const metricsPort = await freePort(ip);
  const configFile = path.join(dir, "parley.yaml");
  const registrationFile = path.join(dir, "registration.yaml");
  let config: ParleyConfig | undefined;

  const synapse = await startSynapse({
    ip,
    dir: path.join(dir, "synapse"),
    appserviceRegistrationFiles: [registrationFile],
    signingKey: "node",
    onServerName: async (serverName) => {
      const raw: ParleyConfigInput = {
        homeserver: { url: `http://${ip}:0`, domain: serverName },
        appservice: {
          bindAddress: ip,
          port: parleyPort,
          url: `http://${ip}:${parleyPort}`,
          asToken: secret(),
          hsToken: secret(),
        },
        meetings: {
          publicUrl: `http://${ip}:${parleyPort}`,
          aliasRooms: opts.aliasRooms?.(index) ?? {},
          governance: opts.governance?.(index, hosts) ?? {},
        },
        ...(opts.guests ? { guests: opts.guests(index) } : {}),
        // Every call API of the stack is plain http on loopback.
        client: { insecureLoopbackCallApis: true },
        // The stack's homeservers use self-signed certificates on 127.0.0.x (not public addresses).
        federation: { allow: opts.allow(index, hosts), tlsVerify: false, allowPrivateAddresses: true },
        store: { path: path.join(dir, "parley.db"), ...opts.store?.(index) },
        metrics: { bindAddress: ip, port: metricsPort },
        calls: {
          ...opts.calls?.(index),
          e2ee: { keys: opts.e2eeKeys?.(index) ?? "participant" },
          joinRateLimit: opts.joinRateLimit ?? { perMinute: 100_000, burst: 10_000 },
        },
        crypto: { storeKey: secret(), path: path.join(dir, "parley-crypto.bin") },
        logging: { level: (opts.logLevel ?? "info") as "info" },
      };
      config = parseConfig(raw, configFile);
      await fs.writeFile(registrationFile, registrationYaml(config), { mode: 0o600 });
    },
  });
  // The first node keeps the ports it always had; more nodes take 500 ports each above 50000.
  const nodeCount = (opts.janus ?? true) ? (opts.janusNodes?.(index) ?? 1) : 0;
  if (nodeCount > 4) throw new Error("startInstitutions: at most 4 Janus nodes per institution");
  const januses: GeneratedJanus[] = [];
  for (let k = 0; k < nodeCount; k++) {
    const base = k === 0 ? 20000 + index * 1000 : 50000 + index * 2000 + (k - 1) * 500;
    const size = k === 0 ? 1000 : 500;
    januses.push(await startGeneratedJanus({ dir: path.join(dir, k === 0 ? "janus" : `janus${k + 1}`), rtpPortRange: [base, base + size - 1] }));
  }
  const janus = januses[0];
  const coturn =
    janus && (opts.turn ?? true)
      ? await startCoturn({
          dir: path.join(dir, "coturn"),
          ...turnAddresses(ip),
          realm: synapse.serverName,
          relayPortRange: [40000 + index * 1000, 40999 + index * 1000],
        })
      : undefined;

  // The client URL and the Janus are known only now; the config file is written once, complete.
  const cfg: ParleyConfig = {
    ...config!,
    // Browsers reach the same Synapse listener (client-config never hands out homeserver.url).
    homeserver: { ...config!.homeserver, url: synapse.clientUrl, publicUrl: synapse.clientUrl },
    sfu: {
      ...config!.sfu,
      ...opts.sfu?.(index),
      nodes: januses.map((j, k) => ({ id: `janus-${name}${k ? k + 1 : ""}`, url: j.wsUrl, apiSecret: j.apiSecret, adminKey: j.videoroomAdminKey })),
    },
    ...(coturn ? { turn: { urls: coturn.urls, secretFile: coturn.secretFile, ttlSeconds: 3600, relayOnly: opts.relayOnly?.(index) ?? false } } : {}),
  };
  await fs.writeFile(configFile, stringify(cfg), { mode: 0o600 });

  let proc = await startParley(configFile, cfg, dir);
  let store: SqliteStore | undefined;
  const parley: ParleyProcess = {
    url: `http://${ip}:${parleyPort}`,
    metricsUrl: `http://${ip}:${metricsPort}/metrics`,
    config: cfg,
    configFile,
    logFile: proc.logFile,
    get pid() {
      return proc.pid;
    },
    get process() {
      return proc;
    },
    async kill9() {
      await proc.kill9();
    },
    async restart() {
      if (!proc.hasExited) await proc.stop();
      proc = await startParley(configFile, cfg, dir);
    },
    async stop() {
      await store?.close();
      if (!proc.hasExited) await proc.stop();
    },
  };

  return {
    index,
    name,
    ip,
    host: ip,
    serverName: synapse.serverName,
    botUserId: botUserId(cfg),
    dir,
    synapse,
    janus,
    januses,
    coturn,
    parley,
    alias: (slug) => `#${cfg.meetings.aliasPrefix}${slug}:${synapse.serverName}`,
    registerUser: (localpart, o) => registerUser(synapse, localpart, o),
    parleyStore: () => {
      if (cfg.store.backend !== "sqlite") throw new Error("parleyStore(): this institution's store is not SQLite; open it with PostgresStore");
      return (store ??= new SqliteStore(cfg.store.path));
    },
  };
}

export async function startInstitutions(opts: StackOptions): Promise<Stack> {
  if (opts.count < 1 || opts.count > 3) throw new Error("startInstitutions: count must be 1..3");
  const dir = opts.dir ?? (await fs.mkdtemp(path.join(os.tmpdir(), "parley-stack-")));
  const hosts = Array.from({ length: opts.count }, (_, i) => `127.0.0.${11 + i}`);
  const settled = await Promise.allSettled(hosts.map((_, i) => startInstitution(i, hosts, opts, dir)));
  const institutions = settled.flatMap((s) => (s.status === "fulfilled" ? [s.value] : []));

  const stop = async (o: { keep?: boolean } = {}) => {
    await Promise.all(
      institutions.map(async (inst) => {
        await inst.parley.stop();
        await Promise.all([...inst.januses.map((j) => j.stop()), inst.coturn?.stop(), inst.synapse.stop()]);
      }),
    );
    const keep = o.keep ?? process.env.PARLEY_KEEP_STACK === "1";
    if (keep) console.error(`stack data and logs kept in ${dir}`);
    else await fs.rm(dir, { recursive: true, force: true });
  };

  const failed = settled.find((s) => s.status === "rejected");
  if (failed) {
    await stop({ keep: true });
    throw failed.reason;
  }
  return { dir, institutions, stop };
}
