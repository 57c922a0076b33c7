// The checks of `parley doctor`, one function per part of a deployment: the config (loaded by
// the caller), the homeserver (registration ping, bot, clock), each Janus node, TURN, TLS of the
// public URLs and the store. Each only reads, except the store check (a write rolled back) and
// the Janus check (a session and a throwaway room, destroyed at once).
import { randomBytes } from "node:crypto";
import { existsSync, statSync } from "node:fs";
import { access, constants, readFile } from "node:fs/promises";
import net from "node:net";
import path from "node:path";
import tls from "node:tls";
import Database from "better-sqlite3";
import pg from "pg";
import { postgresOptions } from "../store/open.ts";
import { connectionConfig } from "../store/postgres.ts";
import type { ParleyConfig } from "../config/schema.ts";
import { blockedReason } from "../matrix/addressGuard.ts";
import { botUserId } from "../matrix/botUser.ts";
import { JanusSession } from "../sfu/session.ts";
import { JanusTransport } from "../sfu/transport.ts";
import { VIDEOROOM_PLUGIN, VideoRoomAdmin } from "../sfu/videoroom.ts";
import { checkSealed } from "./backup.ts";
import type { Check, Endpoint, Finding } from "./doctor.ts";

/** Thresholds; every one is an option so that an operator (and a test) can move it. */
export interface DoctorLimits {
  /** Timeout of each network request (default 10 s). */
  requestTimeoutMs: number;
  /** Clock difference with the homeserver that is a warning (default 5 s) and an error (default 60 s). */
  clockWarnMs: number;
  clockErrorMs: number;
  /** A certificate expiring within this many days is a warning (default 21). */
  certWarnDays: number;
}

export const DEFAULT_LIMITS: DoctorLimits = { requestTimeoutMs: 10_000, clockWarnMs: 5_000, clockErrorMs: 60_000, certWarnDays: 21 };

/**
 * TURN, as the coturn work will provide it: the servers the deployment hands out and a probe
 * that allocates a relay with fresh (REST-scheme) credentials. Until the config has a turn
 * section, doctor reports TURN as not configured.
 */
export interface TurnProbe {
  endpoints(): Endpoint[];
  check(): Promise<Finding[]>;
}

const REGISTRATION_FIX = "run 'parley -g -c CONFIG' to write the registration from this config, put it into Synapse's app_service_config_files, restart Synapse";

function isLoopbackHost(host: string): boolean {
  const bare = host.replace(/^\[|\]$/g, "");
  return bare === "localhost" || blockedReason(bare) === "loopback";
}

async function fetchWithTimeout(url: string, init: RequestInit, timeoutMs: number): Promise<Response> {
  return fetch(url, { ...init, signal: AbortSignal.timeout(timeoutMs), redirect: "manual" });
}

async function jsonOf(res: Response): Promise<Record<string, unknown>> {
  try {
    const body: unknown = await res.json();
    return typeof body === "object" && body !== null ? (body as Record<string, unknown>) : {};
  } catch {
    return {};
  }
}

function reason(err: unknown): string {
  const e = err as Error & { cause?: { code?: string; message?: string } };
  if (e.name === "TimeoutError") return "timed out";
  return e.cause?.code ?? e.cause?.message ?? e.message;
}

/** The clock check's verdict from the homeserver's Date header (1 s resolution: 1 s is noise). */
export function clockFinding(serverDate: string | null, localMs: number, limits: Pick<DoctorLimits, "clockWarnMs" | "clockErrorMs">): Finding {
  const serverMs = serverDate ? Date.parse(serverDate) : NaN;
  if (Number.isNaN(serverMs)) return { check: "clock", status: "warn", message: "the homeserver sent no usable Date header; clock skew unknown", fix: "check the reverse proxy in front of the homeserver keeps the Date header" };
  const skew = localMs - serverMs;
  const words = `this machine's clock is ${Math.abs(skew / 1000).toFixed(0)} s ${skew >= 0 ? "ahead of" : "behind"} the homeserver's`;
  const fix = "run NTP on both machines (systemd-timesyncd or chrony); tokens, TURN credentials and certificates depend on the time";
  if (Math.abs(skew) >= limits.clockErrorMs) return { check: "clock", status: "error", message: words, fix };
  if (Math.abs(skew) >= limits.clockWarnMs) return { check: "clock", status: "warn", message: words, fix };
  return { check: "clock", status: "ok", message: `within ${Math.max(1, Math.ceil(Math.abs(skew) / 1000))} s of the homeserver's clock` };
}

/** The registration ping's answer (MSC2659) turned into words and a fix. */
export function pingFinding(status: number, body: Record<string, unknown>, config: ParleyConfig): Finding {
  const check = "registration";
  const errcode = typeof body["errcode"] === "string" ? body["errcode"] : undefined;
  if (status === 200) return { check, status: "ok", message: `the homeserver reached Parley with the registration's hs_token (round trip ${String(body["duration_ms"] ?? "?")} ms)` };
  if (status === 401 || errcode === "M_UNKNOWN_TOKEN") return { check, status: "error", message: "the homeserver does not know appservice.asToken: the registration it loaded is not this config's", fix: REGISTRATION_FIX };
  if (status === 403 || errcode === "M_FORBIDDEN") return { check, status: "error", message: `the homeserver's registration for this as_token has another id than appservice.id '${config.appservice.id}'`, fix: REGISTRATION_FIX };
  if (status === 404 || errcode === "M_UNRECOGNIZED") return { check, status: "warn", message: "the homeserver does not implement the appservice ping (MSC2659); registration not verified", fix: "upgrade Synapse (1.84 or later)" };
  if (errcode === "M_BAD_STATUS" && (body["status"] === 401 || body["status"] === 403)) {
    return { check, status: "error", message: "Parley refused the homeserver's hs_token: the registration the homeserver loaded has another hs_token than appservice.hsToken of the running Parley", fix: REGISTRATION_FIX };
  }
  if (errcode === "M_BAD_STATUS") return { check, status: "error", message: `Parley answered the homeserver's ping with HTTP ${String(body["status"])}`, fix: "read Parley's log" };
  if (errcode === "M_CONNECTION_FAILED" || errcode === "M_CONNECTION_TIMEOUT") {
    return { check, status: "error", message: `the homeserver cannot reach Parley at appservice.url ${config.appservice.url} (${errcode})`, fix: "start Parley (systemctl start parley); check that appservice.url is what the homeserver can connect to and that Parley listens there" };
  }
  return { check, status: "error", message: `unexpected answer to the appservice ping: HTTP ${status}${errcode ? ` ${errcode}` : ""}`, fix: REGISTRATION_FIX };
}

/** Homeserver reachable, clock, registration (ping), bot (whoami as the bot). */
export function homeserverChecks(config: ParleyConfig, limits: DoctorLimits): Check[] {
  const base = config.homeserver.url.replace(/\/+$/, "");
  const auth = { authorization: `Bearer ${config.appservice.asToken}` };
  let reachable = false;
  return [
    {
      id: "homeserver",
      async run() {
        let res: Response;
        try {
          res = await fetchWithTimeout(`${base}/_matrix/client/versions`, {}, limits.requestTimeoutMs);
        } catch (err) {
          return [{ check: "homeserver", status: "error", message: `${base} cannot be reached: ${reason(err)}`, fix: "start the homeserver; check homeserver.url (Parley's way to the client-server API)" }];
        }
        const localMs = Date.now();
        if (!res.ok) return [{ check: "homeserver", status: "error", message: `${base}/_matrix/client/versions answered HTTP ${res.status}`, fix: "check homeserver.url points at the client-server API" }];
        reachable = true;
        const versions = (await jsonOf(res))["versions"];
        const latest = Array.isArray(versions) ? String(versions.at(-1)) : "?";
        return [
          { check: "homeserver", status: "ok", message: `${base} answers (client-server API up to ${latest})` },
          clockFinding(res.headers.get("date"), localMs, limits),
        ];
      },
    },
    {
      id: "registration",
      async run() {
        if (!reachable) return [{ check: "registration", status: "skip", message: "homeserver not reachable" }];
        const url = `${base}/_matrix/client/v1/appservice/${encodeURIComponent(config.appservice.id)}/ping`;
        const res = await fetchWithTimeout(url, {
          method: "POST",
          headers: { ...auth, "content-type": "application/json" },
          body: JSON.stringify({ transaction_id: `parley-doctor-${randomBytes(8).toString("hex")}` }),
        }, limits.requestTimeoutMs);
        return [pingFinding(res.status, await jsonOf(res), config)];
      },
    },
    {
      id: "bot",
      async run() {
        if (!reachable) return [{ check: "bot", status: "skip", message: "homeserver not reachable" }];
        const bot = botUserId(config);
        const res = await fetchWithTimeout(`${base}/_matrix/client/v3/account/whoami?user_id=${encodeURIComponent(bot)}`, { headers: auth }, limits.requestTimeoutMs);
        const body = await jsonOf(res);
        if (res.ok && body["user_id"] === bot) return [{ check: "bot", status: "ok", message: `the homeserver answers whoami as ${bot}` }];
        return [{
          check: "bot",
          status: "error",
          message: `whoami as ${bot} failed: HTTP ${res.status} ${String(body["errcode"] ?? "")}`.trim(),
          fix: `the registration must claim ${bot} (appservice.botLocalpart) and homeserver.domain must be the server_name; ${REGISTRATION_FIX}`,
        }];
      },
    },
  ];
}

type ServerInfo = Record<string, unknown>;

/** What Parley's generated Janus config would make `info` say, compared with what the node says. */
export function janusInfoFindings(check: string, info: ServerInfo): Finding[] {
  const findings: Finding[] = [];
  const keys = (v: unknown) => (typeof v === "object" && v !== null ? Object.keys(v) : []);
  const fix = "run Janus with the config 'parley janus-config' writes (docs/deployment.md)";
  if (info["api_secret"] !== true) findings.push({ check, status: "error", message: "Janus has no api_secret: anyone who reaches its API can create sessions", fix });
  const plugins = keys(info["plugins"]);
  if (!plugins.includes(VIDEOROOM_PLUGIN)) findings.push({ check, status: "error", message: "Janus has no VideoRoom plugin loaded", fix });
  const extraPlugins = plugins.filter((p) => p !== VIDEOROOM_PLUGIN);
  const extraTransports = keys(info["transports"]).filter((t) => t !== "janus.transport.websockets");
  if (extraPlugins.length || extraTransports.length) {
    findings.push({ check, status: "warn", message: `Janus loads modules Parley's config disables: ${[...extraPlugins, ...extraTransports].join(", ")}`, fix });
  }
  const reclaim = info["reclaim-session-timeout"];
  if (reclaim === 0) findings.push({ check, status: "warn", message: "reclaim_session_timeout is 0: a dropped connection to Parley ends every call on this node", fix });
  return findings;
}

/** One Janus node: address, reachability, api_secret (a session), admin_key (a throwaway room), modules. */
export function janusCheck(node: ParleyConfig["sfu"]["nodes"][number], limits: DoctorLimits): Check {
  const check = `janus.${node.id}`;
  return {
    id: check,
    async run() {
      const findings: Finding[] = [];
      const host = new URL(node.url).hostname;
      if (!isLoopbackHost(host)) {
        const where = blockedReason(host.replace(/^\[|\]$/g, ""));
        if (where === undefined) {
          findings.push({ check, status: "error", message: `${node.url} is a public address: the Janus API must never be reachable from outside`, fix: "bind Janus's API to loopback (or a private network) and point sfu.nodes[].url there" });
        } else {
          findings.push({ check, status: "warn", message: `${node.url} is not loopback: Parley's generated config binds the API on 127.0.0.1 only`, fix: "run Janus on Parley's machine with 'parley janus-config', or keep this node on a private network only Parley reaches" });
        }
      }
      let transport: JanusTransport;
      try {
        transport = await JanusTransport.connect({ url: node.url, apiSecret: node.apiSecret, connectTimeoutMs: limits.requestTimeoutMs, requestTimeoutMs: limits.requestTimeoutMs });
      } catch (err) {
        return [...findings, { check, status: "error", message: `Janus not reachable at ${node.url}: ${reason(err)}`, fix: "start Janus (systemctl start parley-janus); its ws_port in janus.transport.websockets.jcfg must match the URL's port" }];
      }
      try {
        const info = await transport.request({ janus: "info" });
        findings.push(...janusInfoFindings(check, info as ServerInfo));
        let session: JanusSession;
        try {
          session = await JanusSession.create(transport);
        } catch (err) {
          return [...findings, { check, status: "error", message: `Janus refused a session: ${reason(err)} (sfu.nodes[].apiSecret differs from its api_secret)`, fix: "write Janus's config again with 'parley janus-config' and restart Janus" }];
        }
        try {
          const admin = new VideoRoomAdmin(await session.attach(VIDEOROOM_PLUGIN), node.adminKey);
          const room = `parley-doctor-${randomBytes(6).toString("hex")}`;
          const secret = randomBytes(16).toString("hex");
          try {
            await admin.create({ room, secret, requireE2ee: true, publishers: 1 });
          } catch (err) {
            return [...findings, { check, status: "error", message: `the VideoRoom refused to create a room: ${reason(err)} (sfu.nodes[].adminKey differs from its admin_key?)`, fix: "write Janus's config again with 'parley janus-config' and restart Janus" }];
          }
          await admin.destroy(room, secret);
        } finally {
          await session.destroy();
        }
        if (!findings.some((f) => f.status === "error")) {
          findings.push({ check, status: "ok", message: `Janus ${String(info["version_string"] ?? "?")} at ${node.url}: api_secret accepted, VideoRoom admin_key accepted` });
        }
        return findings;
      } finally {
        await transport.close();
      }
    },
  };
}

export function turnCheck(probe: TurnProbe | undefined): Check {
  return {
    id: "turn",
    async run() {
      if (!probe) return [{ check: "turn", status: "skip", message: "not configured (the config has no turn section): browsers behind strict NATs or firewalls may get no media" }];
      return probe.check();
    },
  };
}

/** The URLs whose certificates matter: what browsers and the homeserver open. */
export function tlsTargets(config: ParleyConfig): { what: string; url: string }[] {
  const targets = [
    { what: "meetings.publicUrl", url: config.meetings.publicUrl },
    { what: "homeserver.publicUrl", url: config.homeserver.publicUrl },
    { what: "homeserver.url", url: config.homeserver.url },
    { what: "appservice.url", url: config.appservice.url },
  ].filter((t): t is { what: string; url: string } => t.url !== undefined);
  const seen = new Set<string>();
  return targets.filter((t) => {
    const origin = new URL(t.url).origin;
    if (seen.has(origin)) return false;
    seen.add(origin);
    return true;
  });
}

interface PeerCert {
  validTo: Date;
  subject: string;
  authorized: boolean;
  authorizationError: string | undefined;
}

function peerCertificate(host: string, port: number, timeoutMs: number): Promise<PeerCert> {
  return new Promise((resolve, reject) => {
    const socket = tls.connect({ host, port, servername: net.isIP(host) ? undefined : host, rejectUnauthorized: false, ALPNProtocols: ["http/1.1"] });
    socket.setTimeout(timeoutMs, () => socket.destroy(new Error("timed out")));
    socket.once("error", reject);
    socket.once("secureConnect", () => {
      const cert = socket.getPeerCertificate();
      socket.end();
      resolve({
        validTo: new Date(cert.valid_to),
        subject: typeof cert.subject?.CN === "string" ? cert.subject.CN : "?",
        authorized: socket.authorized,
        authorizationError: socket.authorizationError ? String(socket.authorizationError) : undefined,
      });
    });
  });
}

/** Certificate validity and expiry of each https URL; plain http is info on loopback, a warning elsewhere. */
export function tlsCheck(config: ParleyConfig, limits: DoctorLimits, now: () => number = Date.now): Check {
  return {
    id: "tls",
    async run() {
      const findings: Finding[] = [];
      for (const { what, url } of tlsTargets(config)) {
        const u = new URL(url);
        const check = `tls.${what}`;
        if (u.protocol !== "https:") {
          const browsers = what.endsWith("publicUrl");
          findings.push(isLoopbackHost(u.hostname) || !browsers
            ? { check, status: "info", message: `${u.origin}: not TLS` }
            : { check, status: "warn", message: `${u.origin}: not TLS, but browsers use it (media and E2EE need a secure context)`, fix: "serve it through the reverse proxy with a certificate (deploy/nginx/parley.conf)" });
          continue;
        }
        let cert: PeerCert;
        try {
          cert = await peerCertificate(u.hostname.replace(/^\[|\]$/g, ""), Number(u.port || 443), limits.requestTimeoutMs);
        } catch (err) {
          findings.push({ check, status: "error", message: `${u.origin}: TLS handshake failed: ${reason(err)}`, fix: "check the reverse proxy listens there with a certificate" });
          continue;
        }
        const days = Math.floor((cert.validTo.getTime() - now()) / 86_400_000);
        const when = `expires ${cert.validTo.toISOString().slice(0, 10)} (${days} days)`;
        if (!cert.authorized) findings.push({ check, status: "error", message: `${u.origin}: certificate not trusted (${cert.authorizationError ?? "unknown"}), ${when}`, fix: "install a certificate from a CA the browsers and servers trust, with the full chain" });
        else if (days < 0) findings.push({ check, status: "error", message: `${u.origin}: certificate expired ${cert.validTo.toISOString().slice(0, 10)}`, fix: "renew it (certbot renew) and reload nginx" });
        else if (days < limits.certWarnDays) findings.push({ check, status: "warn", message: `${u.origin}: certificate ${when}`, fix: "renew it (certbot renew) and reload nginx" });
        else findings.push({ check, status: "ok", message: `${u.origin}: certificate for ${cert.subject} ${when}` });
      }
      return findings;
    },
  };
}

/**
 * The store takes a write: opened as Parley opens it, a table created and a row written in a
 * transaction that is rolled back. A store that does not exist yet is judged by its folder.
 */
/**
 * A PostgreSQL store: connects with the config's options, reads the schema version and makes a
 * write in a transaction it rolls back (nothing migrated: that is Parley's start's to do).
 */
export async function postgresStoreFinding(cfg: NonNullable<ParleyConfig["store"]["postgres"]>): Promise<Finding> {
  const check = "store";
  let client: pg.Client | undefined;
  try {
    client = new pg.Client(connectionConfig(postgresOptions(cfg), "parley-doctor"));
    await client.connect();
    const version = await client
      .query<{ version: number }>("SELECT version FROM parley_schema")
      .then((r) => r.rows[0]?.version ?? 0, () => 0);
    await client.query("BEGIN");
    try {
      await client.query("CREATE TABLE parley_doctor_write_probe (at BIGINT)");
    } finally {
      await client.query("ROLLBACK");
    }
    return { check, status: "ok", message: `PostgreSQL takes writes (schema version ${version}${version ? "" : ": Parley creates the schema on first start"})` };
  } catch (err) {
    return { check, status: "error", message: `PostgreSQL store: ${(err as Error).message}`, fix: "check store.postgres (address, user, database, password file) and that the user may create tables in the database" };
  } finally {
    await client?.end().catch(() => undefined);
  }
}

export async function storeFinding(file: string): Promise<Finding> {
  const check = "store";
  if (!existsSync(file)) {
    try {
      await access(path.dirname(file), constants.W_OK);
      return { check, status: "info", message: `${file} does not exist yet; Parley creates it on first start` };
    } catch (err) {
      return { check, status: "error", message: `${file} does not exist and its folder is not writable: ${(err as NodeJS.ErrnoException).code ?? reason(err)}`, fix: "create the folder and give it to the user Parley runs as (StateDirectory= in the systemd unit)" };
    }
  }
  if (!statSync(file).isFile()) return { check, status: "error", message: `${file} is not a file`, fix: "point store.path at the SQLite file" };
  let db: Database.Database | undefined;
  try {
    db = new Database(file, { fileMustExist: true });
    db.pragma("busy_timeout = 5000");
    const version = db.pragma("user_version", { simple: true }) as number;
    db.exec("BEGIN IMMEDIATE");
    try {
      db.exec("CREATE TABLE parley_doctor_probe (at INTEGER)");
      db.prepare("INSERT INTO parley_doctor_probe (at) VALUES (?)").run(Date.now());
    } finally {
      db.exec("ROLLBACK");
    }
    return { check, status: "ok", message: `${file} takes writes (schema version ${version})` };
  } catch (err) {
    // SQLite says "unable to open database file" or "attempt to write a readonly database";
    // the file system says why (a WAL store needs its folder writable for the -wal/-shm files).
    const why = (await Promise.all([file, path.dirname(file)].map(async (f) => {
      try {
        await access(f, constants.W_OK);
        return undefined;
      } catch (e) {
        return `${f}: ${(e as NodeJS.ErrnoException).code ?? "not writable"}`;
      }
    }))).filter((w) => w !== undefined);
    return { check, status: "error", message: `${file} is not writable: ${(err as Error).message}${why.length ? ` (${why.join(", ")})` : ""}`, fix: "the file, its folder and its -wal/-shm files must be writable by the user Parley runs as (ReadWritePaths=/StateDirectory= in the systemd unit)" };
  } finally {
    db?.close();
  }
}

/** The bot's sealed crypto file opens with crypto.storeKey (else the bot would make a new device). */
export async function cryptoFinding(crypto: { path: string; storeKey: string } | undefined): Promise<Finding> {
  const check = "crypto";
  if (!crypto) return { check, status: "info", message: "no crypto section: the bot ignores encrypted rooms" };
  let data: Buffer;
  try {
    data = await readFile(crypto.path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === "ENOENT") return { check, status: "info", message: `${crypto.path} does not exist yet; the bot makes its device on first start` };
    return { check, status: "error", message: `${crypto.path}: ${(err as Error).message}`, fix: "the file must be readable and writable by the user Parley runs as" };
  }
  try {
    checkSealed(data, crypto.storeKey, crypto.path);
  } catch (err) {
    return { check, status: "error", message: (err as Error).message, fix: "put back the crypto.storeKey this file was made with (from the config's backup); only if it is lost, move the file away: the bot then starts as a new device" };
  }
  return { check, status: "ok", message: `${crypto.path} opens with crypto.storeKey` };
}

/** Everything the deployment contacts: its own parts, TURN, and the partner servers. */
export function endpoints(config: ParleyConfig, turn: TurnProbe | undefined): Endpoint[] {
  const list: Endpoint[] = [
    { kind: "homeserver", address: config.homeserver.url, why: "Parley's client-server API requests" },
  ];
  if (config.homeserver.publicUrl && config.homeserver.publicUrl !== config.homeserver.url) {
    list.push({ kind: "homeserver", address: config.homeserver.publicUrl, why: "users' browsers" });
  }
  list.push({ kind: "appservice", address: config.appservice.url, why: "the homeserver pushes transactions to Parley" });
  list.push({ kind: "client", address: config.meetings.publicUrl, why: "web client and call API, as users reach them" });
  for (const node of config.sfu.nodes) list.push({ kind: "janus", address: node.url, why: `SFU node ${node.id}` });
  if (turn) list.push(...turn.endpoints());
  for (const server of config.calls.iceServers) {
    for (const url of [server.urls].flat()) list.push({ kind: /^turns?:/.test(url) ? "turn" : "stun", address: url, why: "calls.iceServers, handed to browsers" });
  }
  const partners = new Map<string, string>();
  const add = (server: string, why: string) => partners.set(server, partners.has(server) ? `${partners.get(server)!}; ${why}` : why);
  for (const s of config.federation.allow) add(s, "federation.allow");
  for (const s of config.meetings.governance.trustedServers) add(s, "trusted server");
  for (const s of config.meetings.governance.externalServers) add(s, "external server");
  for (const [server, url] of Object.entries(config.federation.openidOverrides)) add(server, `OpenID checks at ${url}`);
  for (const [server, why] of partners) {
    list.push({ kind: "federation", address: server, why: `${/[*?]/.test(server) ? "every server matching; " : ""}${why}: OpenID token checks, and its homeserver federates with yours` });
  }
  return list;
}
