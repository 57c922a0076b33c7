// Finding and reaching another homeserver's federation API: server discovery exactly as the
// Matrix server-server spec says ("Resolving server names", v1.8+), and the one HTTP transport
// Parley uses towards remote homeservers (node:https, because a discovery target may need a
// connection to one host while the certificate and Host header name another, which fetch
// cannot express).
//
// A discovery result says where to open the connection (host, port), which Host header to send
// and which name the TLS certificate must be valid for:
//   1. IP literal, with or without port      -> that address, port or 8448; Host = the server name
//   2. hostname with explicit port           -> hostname:port; Host = the server name
//   3. GET https://<hostname>/.well-known/matrix/server, when valid, names <delegated>[:<port>]:
//      3.1 IP literal                        -> that address, port or 8448
//      3.2 hostname with port                -> hostname:port
//      3.3 SRV _matrix-fed._tcp.<delegated>  -> SRV target:port; Host and TLS name = delegated
//      3.4 SRV _matrix._tcp.<delegated>      -> (deprecated) likewise
//      3.5 otherwise                         -> delegated:8448
//   4./5. no valid well-known: SRV _matrix-fed._tcp.<hostname>, then _matrix._tcp.<hostname>
//   6. otherwise                             -> hostname:8448
// Well-known answers are cached as the spec recommends (Cache-Control/Expires within 5 min..48 h,
// default 24 h; invalid answers and failures 1 h), SRV answers for SRV_CACHE_MS.
import type { SrvRecord } from "node:dns";
import { Resolver } from "node:dns/promises";
import http from "node:http";
import https from "node:https";
import net from "node:net";
import tls from "node:tls";
import { z } from "zod";
import { getLogger, type Logger } from "../log.ts";
import { BlockedAddressError, blockedReason, guardedLookup } from "./addressGuard.ts";

export const DEFAULT_FEDERATION_PORT = 8448;

const MINUTE = 60_000;
const HOUR = 60 * MINUTE;
export const WELL_KNOWN_DEFAULT_CACHE_MS = 24 * HOUR;
export const WELL_KNOWN_MIN_CACHE_MS = 5 * MINUTE;
export const WELL_KNOWN_MAX_CACHE_MS = 48 * HOUR;
/** Invalid answers (404, bad JSON, no m.server) and unreachable well-known hosts. */
export const WELL_KNOWN_INVALID_CACHE_MS = HOUR;
/** How long a previous valid answer is reused when refreshing it fails for a temporary reason. */
export const WELL_KNOWN_DOWN_CACHE_MS = 2 * MINUTE;
/** ...as long as the previous answer expired no longer ago than this. */
export const WELL_KNOWN_STALE_LIMIT_MS = 2 * HOUR;
export const WELL_KNOWN_MAX_REDIRECTS = 5;
/** node:dns gives no TTLs; SRV answers (and their absence) are kept this long. */
export const SRV_CACHE_MS = 10 * MINUTE;
/** Cached entries per cache; the oldest go first. Server names come from callers. */
export const MAX_CACHE_ENTRIES = 1000;

// ---------------------------------------------------------------------------------------------
// Server names

export interface ParsedServerName {
  /** Host without brackets: "example.org", "1.2.3.4", "::1". */
  host: string;
  port: number | undefined;
  ip: boolean;
}

const DNS_NAME = /^(?=.{1,255}$)[A-Za-z0-9-]{1,63}(\.[A-Za-z0-9-]{1,63})*$/;
const IPV4_SHAPE = /^\d{1,3}(\.\d{1,3}){3}$/;

/**
 * Parses a server name by the spec's grammar (`hostname [":" port]`, hostname an IPv4 address,
 * a bracketed IPv6 address or a DNS name). Undefined when it is not one.
 */
export function parseServerName(name: string): ParsedServerName | undefined {
  if (typeof name !== "string" || name.length === 0 || name.length > 262) return undefined;
  let host: string;
  let portText: string | undefined;
  let ip: boolean;
  if (name.startsWith("[")) {
    const end = name.indexOf("]");
    if (end === -1) return undefined;
    host = name.slice(1, end);
    const rest = name.slice(end + 1);
    if (rest !== "" && !rest.startsWith(":")) return undefined;
    portText = rest === "" ? undefined : rest.slice(1);
    if (!/^[0-9A-Fa-f:.]{2,45}$/.test(host) || !net.isIPv6(host)) return undefined;
    ip = true;
  } else {
    const colon = name.indexOf(":");
    if (colon !== name.lastIndexOf(":")) return undefined;
    host = colon === -1 ? name : name.slice(0, colon);
    portText = colon === -1 ? undefined : name.slice(colon + 1);
    if (IPV4_SHAPE.test(host)) {
      if (!net.isIPv4(host)) return undefined;
      ip = true;
    } else {
      if (!DNS_NAME.test(host)) return undefined;
      ip = false;
    }
  }
  let port: number | undefined;
  if (portText !== undefined) {
    if (!/^\d{1,5}$/.test(portText)) return undefined;
    port = Number(portText);
    if (port < 1 || port > 65535) return undefined;
  }
  return { host, port, ip };
}

/** "::1" -> "[::1]", anything else unchanged: the host as it appears in a URL or Host header. */
export function urlHost(host: string): string {
  return net.isIPv6(host) ? `[${host}]` : host;
}

// ---------------------------------------------------------------------------------------------
// Transport

/** Where and how to reach one federation endpoint. */
export interface ServerTarget {
  /** "http" only for an explicitly configured override URL. */
  scheme: "https" | "http";
  /** Where the connection goes: a hostname (resolved by the OS: CNAME, AAAA, A) or an IP address, no brackets. */
  host: string;
  port: number;
  /** The Host header. */
  hostHeader: string;
  /** The name the TLS certificate must be valid for (also the SNI when it is a hostname). */
  tlsName: string;
  /** Prepended to request paths (an override URL's path); "" otherwise. */
  pathPrefix: string;
  /** The operator named this target (an override URL): it may be a loopback or private address. */
  configured?: boolean | undefined;
}

export interface HttpAnswer {
  status: number;
  /** Lower-case header names. */
  headers: Readonly<Record<string, string | undefined>>;
  body: string;
}

/**
 * The I/O seam towards remote homeservers: one GET. `path` may carry secrets in its query
 * string; implementations never put it in errors or logs. Failures before an HTTP answer
 * reject with a TransportError.
 */
export interface FederationHttp {
  get(target: ServerTarget, path: string): Promise<HttpAnswer>;
  close(): void;
}

/** "blocked": the target resolved only to addresses Parley does not connect to (addressGuard.ts). */
export type TransportErrorKind = "connect" | "tls" | "timeout" | "too-large" | "protocol" | "blocked";

export class TransportError extends Error {
  readonly kind: TransportErrorKind;
  constructor(kind: TransportErrorKind, message: string) {
    super(message);
    this.name = "TransportError";
    this.kind = kind;
  }
}

export interface NodeFederationHttpOptions {
  /** Verify certificates (default true). */
  tlsVerify?: boolean | undefined;
  /** Extra trusted CA certificates (PEM), added to Node's bundled roots. */
  ca?: string | undefined;
  /** Until the TLS handshake is done (default 5000). */
  connectTimeoutMs?: number | undefined;
  /** For the whole request, connecting included (default 5000). */
  timeoutMs?: number | undefined;
  /** Largest response body accepted (default 64 KiB). */
  maxBodyBytes?: number | undefined;
  /** Connect to loopback, private, link-local and other non-public addresses too (default false);
   *  targets marked `configured` may always. */
  allowPrivateAddresses?: boolean | undefined;
}

const TLS_CODE = /CERT|SELF_SIGNED|UNABLE_TO_|^ERR_TLS_|^ERR_SSL_|^EPROTO$|HOSTNAME_MISMATCH/;

export function describeTarget(target: Pick<ServerTarget, "host" | "port">): string {
  return `${urlHost(target.host)}:${target.port}`;
}

function classify(err: unknown, where: string): TransportError {
  if (err instanceof TransportError) return err;
  const e = err as { code?: unknown; message?: unknown };
  const code = typeof e.code === "string" ? e.code : "";
  if (err instanceof BlockedAddressError) return new TransportError("blocked", err.message);
  // Node's socket and TLS messages name the address, never the request path.
  const detail = typeof e.message === "string" ? e.message : String(err);
  if (TLS_CODE.test(code)) {
    // Node appends advice about --use-system-ca to certificate errors; Parley's advice is caFile.
    const reason = detail.split(";")[0];
    return new TransportError("tls", `TLS with ${where} failed: ${reason}${code ? ` (${code})` : ""}`);
  }
  if (code.startsWith("HPE_")) return new TransportError("protocol", `${where} sent an invalid HTTP answer (${code})`);
  return new TransportError("connect", `could not connect to ${where}: ${detail}`);
}

/**
 * The production transport: node:https (node:http for http override URLs) with keep-alive
 * agents, the TLS settings from config, connect and total timeouts and a body size bound.
 * Unless private addresses are allowed, connections that are not to a `configured` target go
 * through agents whose DNS lookup refuses non-public addresses (and IP literals are checked
 * before connecting); those agents keep their own connection pools, so a socket opened for an
 * override is never reused for a discovered target.
 */
export function nodeFederationHttp(opts: NodeFederationHttpOptions = {}): FederationHttp {
  const connectTimeoutMs = opts.connectTimeoutMs ?? 5000;
  const timeoutMs = opts.timeoutMs ?? 5000;
  const maxBodyBytes = opts.maxBodyBytes ?? 64 * 1024;
  const allowPrivate = opts.allowPrivateAddresses ?? false;
  const agents = (guarded: boolean) => {
    const lookup = guarded ? { lookup: guardedLookup() } : {};
    return {
      https: new https.Agent({
        keepAlive: true,
        maxSockets: 32,
        rejectUnauthorized: opts.tlsVerify ?? true,
        // `ca` replaces Node's roots, so they are passed along: caFile adds, it does not narrow.
        ...(opts.ca === undefined ? {} : { ca: [...tls.rootCertificates, opts.ca] }),
        ...lookup,
      }),
      http: new http.Agent({ keepAlive: true, maxSockets: 32, ...lookup }),
    };
  };
  const open = agents(false);
  const guarded = allowPrivate ? open : agents(true);

  function get(target: ServerTarget, path: string): Promise<HttpAnswer> {
    const where = describeTarget(target);
    const secure = target.scheme === "https";
    const checked = !allowPrivate && !target.configured;
    // IP literals never reach the lookup hook: judged here.
    const literalBlocked = checked && net.isIP(target.host) !== 0 ? blockedReason(target.host) : undefined;
    if (literalBlocked !== undefined) {
      return Promise.reject(new TransportError("blocked", `${where} is not a public address (${literalBlocked}); Parley does not connect there`));
    }
    const pool = checked ? guarded : open;
    return new Promise<HttpAnswer>((resolve, reject) => {
      let settled = false;
      let connectTimer: NodeJS.Timeout | undefined;
      const finish = (err: TransportError | undefined, answer?: HttpAnswer) => {
        if (settled) return;
        settled = true;
        clearTimeout(totalTimer);
        clearTimeout(connectTimer);
        if (err) reject(err);
        else resolve(answer!);
      };
      const options: https.RequestOptions = {
        agent: secure ? pool.https : pool.http,
        host: target.host,
        port: target.port,
        method: "GET",
        path: target.pathPrefix + path,
        headers: { host: target.hostHeader, accept: "application/json", "user-agent": "Parley" },
      };
      if (secure) {
        // SNI carries hostnames only (RFC 6066); the certificate is checked against tlsName
        // whichever host the connection went to (an SRV target, a resolved address). Kept-alive
        // sockets are pooled by host, port and servername: tlsName differs from host only when
        // it is a hostname, so it is in the pool key and a socket is never reused unchecked.
        if (net.isIP(target.tlsName) === 0) options.servername = target.tlsName;
        options.checkServerIdentity = (_host, cert) => tls.checkServerIdentity(target.tlsName, cert);
      }
      const req = (secure ? https : http).request(options);
      const abort = (err: TransportError) => {
        finish(err);
        req.destroy(err);
      };
      const totalTimer = setTimeout(
        () => abort(new TransportError("timeout", `no answer from ${where} within ${timeoutMs} ms`)),
        timeoutMs,
      );
      req.on("socket", (socket) => {
        if (!socket.connecting) return; // a kept-alive connection
        connectTimer = setTimeout(
          () => abort(new TransportError("timeout", `could not connect to ${where} within ${connectTimeoutMs} ms`)),
          connectTimeoutMs,
        );
        socket.once(secure ? "secureConnect" : "connect", () => clearTimeout(connectTimer));
      });
      req.on("error", (err) => finish(classify(err, where)));
      req.on("response", (res) => {
        const tooLarge = () => new TransportError("too-large", `${where} sent an answer larger than ${maxBodyBytes} bytes`);
        const declared = Number(res.headers["content-length"]);
        if (Number.isFinite(declared) && declared > maxBodyBytes) return abort(tooLarge());
        const chunks: Buffer[] = [];
        let size = 0;
        res.on("data", (chunk: Buffer) => {
          size += chunk.length;
          if (size > maxBodyBytes) abort(tooLarge());
          else chunks.push(chunk);
        });
        res.on("error", (err) => finish(classify(err, where)));
        res.on("end", () => {
          const headers: Record<string, string | undefined> = {};
          for (const [k, v] of Object.entries(res.headers)) headers[k] = Array.isArray(v) ? v.join(", ") : v;
          finish(undefined, { status: res.statusCode ?? 0, headers, body: Buffer.concat(chunks).toString("utf8") });
        });
      });
      req.end();
    });
  }

  return {
    get,
    close() {
      for (const pool of new Set([open, guarded])) {
        pool.https.destroy();
        pool.http.destroy();
      }
    },
  };
}

// ---------------------------------------------------------------------------------------------
// Discovery

/** Thrown when discovery itself fails (DNS errors, an SRV record saying "no service"). */
export class DiscoveryError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "DiscoveryError";
  }
}

export type SrvResolver = Pick<Resolver, "resolveSrv">;

export interface Resolution {
  /** In the order to try (SRV priority and weight); one entry except for SRV answers. */
  targets: ServerTarget[];
  /** How the targets were found, for logs: "ip literal", "well-known -> SRV _matrix-fed._tcp", ... */
  via: string;
}

export interface ServerDiscoveryOptions {
  /** Fetches the well-known document (default: nodeFederationHttp()). */
  http: FederationHttp;
  /** SRV lookups (default: a node:dns Resolver with a 2 s timeout, 2 tries). */
  resolver?: SrvResolver | undefined;
  now?: (() => number) | undefined;
  /** For weighted SRV ordering (default Math.random). */
  random?: (() => number) | undefined;
  log?: Logger | undefined;
}

interface WellKnownEntry {
  /** The delegated server name, or undefined for "no valid well-known". */
  delegated: string | undefined;
  expiresAt: number;
  /** The last valid answer, while a temporary failure may still fall back to it. */
  lastValid?: { delegated: string; expiresAt: number } | undefined;
}

interface SrvEntry {
  records: SrvRecord[];
  expiresAt: number;
}

const NO_SUCH_RECORD = new Set(["ENOTFOUND", "ENODATA", "ENONAME", "NXDOMAIN"]);
const REDIRECT = new Set([301, 302, 303, 307, 308]);
const wellKnownBody = z.object({ "m.server": z.string().min(1) });

/** Seconds of freshness from Cache-Control / Expires; undefined when neither says. */
export function cachePeriodMs(headers: Readonly<Record<string, string | undefined>>, now: number): number | undefined {
  const cc = (headers["cache-control"] ?? "").toLowerCase();
  const directives = new Map(
    cc
      .split(",")
      .map((d) => d.trim())
      .filter(Boolean)
      .map((d) => {
        const i = d.indexOf("=");
        return i === -1 ? [d, ""] : [d.slice(0, i).trim(), d.slice(i + 1).trim().replace(/^"|"$/g, "")];
      }),
  );
  if (directives.has("no-store")) return 0;
  const maxAge = directives.get("max-age");
  if (maxAge !== undefined && /^\d+$/.test(maxAge)) return Number(maxAge) * 1000;
  const expires = headers["expires"];
  if (expires !== undefined) {
    const at = Date.parse(expires);
    // RFC 9111: an invalid Expires (such as "0") means already expired.
    return Number.isNaN(at) ? 0 : Math.max(0, at - now);
  }
  return undefined;
}

/** RFC 2782 order: ascending priority, weighted random within a priority. */
export function orderSrv(records: readonly SrvRecord[], random: () => number): SrvRecord[] {
  const byPriority = new Map<number, SrvRecord[]>();
  for (const r of records) byPriority.set(r.priority, [...(byPriority.get(r.priority) ?? []), r]);
  const out: SrvRecord[] = [];
  for (const priority of [...byPriority.keys()].sort((a, b) => a - b)) {
    const pool = [...byPriority.get(priority)!];
    while (pool.length > 0) {
      const total = pool.reduce((sum, r) => sum + r.weight, 0);
      let pick = 0;
      if (total > 0) {
        let roll = random() * total;
        pick = pool.findIndex((r) => (roll -= r.weight) < 0);
        if (pick === -1) pick = pool.length - 1;
      }
      out.push(...pool.splice(pick, 1));
    }
  }
  return out;
}

function setBounded<V>(map: Map<string, V>, key: string, value: V): void {
  map.delete(key);
  map.set(key, value);
  while (map.size > MAX_CACHE_ENTRIES) map.delete(map.keys().next().value!);
}

export class ServerDiscovery {
  readonly #http: FederationHttp;
  readonly #resolver: SrvResolver;
  readonly #now: () => number;
  readonly #random: () => number;
  readonly #log: Logger;
  readonly #wellKnown = new Map<string, WellKnownEntry>();
  readonly #srv = new Map<string, SrvEntry>();
  readonly #inflight = new Map<string, Promise<string | undefined>>();

  constructor(opts: ServerDiscoveryOptions) {
    this.#http = opts.http;
    this.#resolver = opts.resolver ?? new Resolver({ timeout: 2000, tries: 2 });
    this.#now = opts.now ?? Date.now;
    this.#random = opts.random ?? Math.random;
    this.#log = opts.log ?? getLogger("serverDiscovery");
  }

  /** Where the federation API of `serverName` is. Throws DiscoveryError or on a bad name. */
  async resolve(serverName: string): Promise<Resolution> {
    const parsed = parseServerName(serverName);
    if (!parsed) throw new DiscoveryError(`${JSON.stringify(serverName.slice(0, 100))} is not a server name`);
    // 1. IP literal, 2. hostname with explicit port.
    if (parsed.ip || parsed.port !== undefined) {
      return {
        targets: [direct(parsed.host, parsed.port ?? DEFAULT_FEDERATION_PORT, serverName)],
        via: parsed.ip ? "ip literal" : "explicit port",
      };
    }
    // 3. well-known delegation.
    const delegated = await this.wellKnown(parsed.host);
    if (delegated !== undefined) {
      const d = parseServerName(delegated)!;
      if (d.ip || d.port !== undefined) {
        return {
          targets: [direct(d.host, d.port ?? DEFAULT_FEDERATION_PORT, delegated)],
          via: `well-known -> ${d.ip ? "ip literal" : "explicit port"}`,
        };
      }
      return this.#srvOrDefault(d.host, "well-known -> ");
    }
    // 4.-6. SRV on the server name, else port 8448.
    return this.#srvOrDefault(parsed.host, "");
  }

  /** 3.3-3.5 and 4-6: SRV _matrix-fed._tcp, then the deprecated _matrix._tcp, else port 8448. */
  async #srvOrDefault(hostname: string, prefix: string): Promise<Resolution> {
    for (const service of ["_matrix-fed._tcp", "_matrix._tcp"]) {
      const records = await this.#lookupSrv(`${service}.${hostname}`);
      if (records.length > 0) {
        return {
          targets: orderSrv(records, this.#random).map((r) => ({
            scheme: "https",
            host: r.name.replace(/\.$/, ""),
            port: r.port,
            hostHeader: hostname,
            tlsName: hostname,
            pathPrefix: "",
          })),
          via: `${prefix}SRV ${service}`,
        };
      }
    }
    return { targets: [direct(hostname, DEFAULT_FEDERATION_PORT, hostname)], via: `${prefix}port 8448` };
  }

  async #lookupSrv(name: string): Promise<SrvRecord[]> {
    const now = this.#now();
    const cached = this.#srv.get(name);
    if (cached && cached.expiresAt > now) return cached.records;
    let records: SrvRecord[];
    try {
      records = await this.#resolver.resolveSrv(name);
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      if (typeof code === "string" && NO_SUCH_RECORD.has(code)) {
        records = [];
      } else {
        if (cached) {
          this.#log.warn({ name, code }, "SRV lookup failed; using the previous answer");
          return cached.records;
        }
        throw new DiscoveryError(`DNS lookup of ${name} failed${typeof code === "string" ? ` (${code})` : ""}`);
      }
    }
    // RFC 2782: a single record with target "." means the service is decidedly not available.
    if (records.length === 1 && (records[0]!.name === "." || records[0]!.name === "")) {
      throw new DiscoveryError(`${name} says there is no federation service there (SRV target ".")`);
    }
    setBounded(this.#srv, name, { records, expiresAt: now + SRV_CACHE_MS });
    return records;
  }

  /** The delegated server name from https://<hostname>/.well-known/matrix/server, cached. */
  wellKnown(hostname: string): Promise<string | undefined> {
    const cached = this.#wellKnown.get(hostname);
    if (cached && cached.expiresAt > this.#now()) return Promise.resolve(cached.delegated);
    let p = this.#inflight.get(hostname);
    if (!p) {
      p = this.#refreshWellKnown(hostname, cached).finally(() => this.#inflight.delete(hostname));
      this.#inflight.set(hostname, p);
    }
    return p;
  }

  async #refreshWellKnown(hostname: string, previous: WellKnownEntry | undefined): Promise<string | undefined> {
    const outcome = await this.#fetchWellKnown(hostname);
    const now = this.#now();
    const lastValid = previous?.lastValid;
    let entry: WellKnownEntry;
    if (outcome.delegated !== undefined) {
      const period =
        outcome.periodMs === undefined
          ? WELL_KNOWN_DEFAULT_CACHE_MS
          : Math.min(WELL_KNOWN_MAX_CACHE_MS, Math.max(WELL_KNOWN_MIN_CACHE_MS, outcome.periodMs));
      const expiresAt = now + period;
      entry = { delegated: outcome.delegated, expiresAt, lastValid: { delegated: outcome.delegated, expiresAt } };
      this.#log.debug({ hostname, delegated: outcome.delegated, cacheMs: period }, "well-known delegation");
    } else if (outcome.temporary && lastValid && now - lastValid.expiresAt < WELL_KNOWN_STALE_LIMIT_MS) {
      entry = { delegated: lastValid.delegated, expiresAt: now + WELL_KNOWN_DOWN_CACHE_MS, lastValid };
      this.#log.warn({ hostname, reason: outcome.reason }, "well-known refresh failed; keeping the previous delegation for now");
    } else {
      entry = { delegated: undefined, expiresAt: now + WELL_KNOWN_INVALID_CACHE_MS };
      this.#log.debug({ hostname, reason: outcome.reason }, "no valid well-known");
    }
    setBounded(this.#wellKnown, hostname, entry);
    return entry.delegated;
  }

  async #fetchWellKnown(
    hostname: string,
  ): Promise<{ delegated: string; periodMs: number | undefined } | { delegated: undefined; temporary: boolean; reason: string }> {
    let url = new URL(`https://${urlHost(hostname)}/.well-known/matrix/server`);
    const seen = new Set<string>();
    for (let hop = 0; ; hop++) {
      seen.add(url.href);
      const host = url.hostname.replace(/^\[|\]$/g, "");
      const target: ServerTarget = {
        scheme: "https",
        host,
        port: url.port === "" ? 443 : Number(url.port),
        hostHeader: url.host,
        tlsName: host,
        pathPrefix: "",
      };
      let answer: HttpAnswer;
      try {
        answer = await this.#http.get(target, url.pathname + url.search);
      } catch (err) {
        const message = err instanceof Error ? err.message : String(err);
        return { delegated: undefined, temporary: !(err instanceof TransportError && err.kind === "too-large"), reason: message };
      }
      if (REDIRECT.has(answer.status) && answer.headers["location"]) {
        let next: URL;
        try {
          next = new URL(answer.headers["location"], url);
        } catch {
          return { delegated: undefined, temporary: false, reason: "redirect to an invalid URL" };
        }
        if (next.protocol !== "https:") return { delegated: undefined, temporary: false, reason: "redirect away from https" };
        if (seen.has(next.href)) return { delegated: undefined, temporary: false, reason: "redirect loop" };
        if (hop + 1 > WELL_KNOWN_MAX_REDIRECTS) return { delegated: undefined, temporary: false, reason: "too many redirects" };
        url = next;
        continue;
      }
      if (answer.status !== 200) {
        return { delegated: undefined, temporary: answer.status >= 500 || answer.status === 429, reason: `HTTP ${answer.status}` };
      }
      let json: unknown;
      try {
        json = JSON.parse(answer.body);
      } catch {
        return { delegated: undefined, temporary: false, reason: "not JSON" };
      }
      const parsed = wellKnownBody.safeParse(json);
      if (!parsed.success) return { delegated: undefined, temporary: false, reason: "no m.server string" };
      const delegated = parsed.data["m.server"];
      if (!parseServerName(delegated)) return { delegated: undefined, temporary: false, reason: "m.server is not a server name" };
      return { delegated, periodMs: cachePeriodMs(answer.headers, this.#now()) };
    }
  }
}

/** A target reached at host:port with the certificate checked for the host. */
function direct(host: string, port: number, hostHeader: string): ServerTarget {
  return { scheme: "https", host, port, hostHeader, tlsName: host, pathPrefix: "" };
}
