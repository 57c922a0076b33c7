// Checks an OpenID token that a user's homeserver issued (flow 3, "Join"): the token is sent back
// to the homeserver it claims to come from, found by server discovery (or the configured
// override map), as GET /_matrix/federation/v1/openid/userinfo; the answer's user id must belong
// to that same server, since a server can only vouch for its own users.
//
// The token travels in the query string, so neither it nor any request URL reaches a log line
// or an error message. Nor do connection errors and addresses: the caller learns that the
// check could not be made, the log says why.
//
// A token is good for one join: with a ledger, its hash is claimed before the homeserver is
// asked (so two concurrent joins with one token cannot both pass) and kept until the token has
// surely expired; a token that does not verify is released again, so forged tokens leave no row.
//
// Discovery connects only to public addresses unless the operator named the server in
// `federation.openidOverrides` or set `federation.allowPrivateAddresses` (addressGuard.ts).
import { createHash } from "node:crypto";
import fs from "node:fs";
import { z } from "zod";
import type { FederationPolicy } from "../calls/policy.ts";
import { serverNameOf } from "../calls/policy.ts";
import type { ParleyConfig } from "../config/schema.ts";
import { ParleyError } from "../http/errors.ts";
import { getLogger, type Logger } from "../log.ts";
import type { OpenIdTokenStore } from "../store/store.ts";
import {
  DiscoveryError,
  describeTarget,
  nodeFederationHttp,
  parseServerName,
  ServerDiscovery,
  TransportError,
  type FederationHttp,
  type HttpAnswer,
  type ServerTarget,
  type SrvResolver,
} from "./serverDiscovery.ts";

export const USERINFO_PATH = "/_matrix/federation/v1/openid/userinfo";
/** Targets tried per check when SRV gives several (each bounded by the transport's timeouts). */
const MAX_TARGETS = 3;
const MAX_TOKEN_LENGTH = 2048;

export const INVALID_TOKEN_MESSAGE = "OpenID token is not valid (expired or forged)";
/** How long a used token is remembered unless configured (Synapse issues tokens for 3600 s). */
export const DEFAULT_TOKEN_LIFETIME_MS = 3600_000;

export const unreachableMessage = (serverName: string) => `cannot check the OpenID token with ${serverName}`;
export const refusedMessage = (serverName: string) => `this Parley does not check OpenID tokens with ${serverName}`;

/** What the ledger records instead of the token: SHA-256 over the server name and the token. */
export function openIdTokenHash(serverName: string, token: string): string {
  return createHash("sha256").update(serverName).update("\0").update(token).digest("hex");
}

const userInfoBody = z.object({
  sub: z.string().max(255).regex(/^@[^:]+:.+$/, "a Matrix user id"),
});

export interface OpenIdVerifierOptions {
  /** Server name -> federation base URL, bypassing discovery (`federation.openidOverrides`). */
  overrides?: Readonly<Record<string, string>> | undefined;
  /** Verify remote certificates (default true; `federation.tlsVerify`). */
  tlsVerify?: boolean | undefined;
  /** Extra trusted CAs, PEM text. */
  ca?: string | undefined;
  /** Extra trusted CAs, a PEM file (`federation.caFile`); read once, here. */
  caFile?: string | undefined;
  /** When given, servers it does not allow are refused before any request is made. */
  policy?: Pick<FederationPolicy, "allowsServer"> | undefined;
  /** Connect to loopback and private addresses found by discovery (`federation.allowPrivateAddresses`). */
  allowPrivateAddresses?: boolean | undefined;
  /** When given, each token verifies once: used tokens are recorded here (hashed). */
  ledger?: Pick<OpenIdTokenStore, "claimOpenIdToken" | "releaseOpenIdToken"> | undefined;
  /** How long a used token is remembered: at least the homeservers' token lifetime (`federation.openidTokenLifetimeSeconds`). */
  tokenLifetimeMs?: number | undefined;
  /** Transport (default: node:https with the TLS settings above and 5 s timeouts). */
  http?: FederationHttp | undefined;
  /** SRV lookups for discovery (default: node:dns/promises). */
  resolver?: SrvResolver | undefined;
  now?: (() => number) | undefined;
  random?: (() => number) | undefined;
  log?: Logger | undefined;
  connectTimeoutMs?: number | undefined;
  timeoutMs?: number | undefined;
  maxBodyBytes?: number | undefined;
}

export interface VerifiedOpenId {
  userId: string;
}

/** Turns an override base URL into a target; throws naming the config path when it is unusable. */
function overrideTarget(serverName: string, base: string): ServerTarget {
  const where = `federation.openidOverrides[${JSON.stringify(serverName)}]`;
  let url: URL;
  try {
    url = new URL(base);
  } catch {
    throw new Error(`${where}: expected an absolute URL such as https://matrix.example.org:8448`);
  }
  if (url.protocol !== "https:" && url.protocol !== "http:") throw new Error(`${where}: expected an https:// (or http://) URL`);
  if (url.search || url.hash || url.username || url.password) throw new Error(`${where}: a base URL takes no query, fragment or credentials`);
  const secure = url.protocol === "https:";
  const host = url.hostname.replace(/^\[|\]$/g, "");
  return {
    scheme: secure ? "https" : "http",
    host,
    port: url.port === "" ? (secure ? 443 : 80) : Number(url.port),
    hostHeader: url.host,
    tlsName: host,
    pathPrefix: url.pathname.replace(/\/+$/, ""),
    configured: true,
  };
}

export class OpenIdVerifier {
  readonly #http: FederationHttp;
  readonly #discovery: ServerDiscovery;
  readonly #overrides: Map<string, ServerTarget>;
  readonly #policy: Pick<FederationPolicy, "allowsServer"> | undefined;
  readonly #ledger: OpenIdVerifierOptions["ledger"];
  readonly #tokenLifetimeMs: number;
  readonly #now: () => number;
  readonly #log: Logger;

  /** The verifier for a Parley config: its overrides, TLS settings and federation allow-list. */
  static fromConfig(
    config: Pick<ParleyConfig, "federation">,
    policy: Pick<FederationPolicy, "allowsServer"> | undefined,
    extra: Omit<OpenIdVerifierOptions, "overrides" | "tlsVerify" | "caFile" | "policy" | "allowPrivateAddresses" | "tokenLifetimeMs"> = {},
  ): OpenIdVerifier {
    const f = config.federation;
    return new OpenIdVerifier({
      ...extra,
      overrides: f.openidOverrides,
      tlsVerify: f.tlsVerify,
      caFile: f.caFile,
      policy,
      allowPrivateAddresses: f.allowPrivateAddresses,
      tokenLifetimeMs: f.openidTokenLifetimeSeconds * 1000,
    });
  }

  constructor(opts: OpenIdVerifierOptions = {}) {
    this.#log = opts.log ?? getLogger("openid");
    this.#policy = opts.policy;
    this.#ledger = opts.ledger;
    this.#tokenLifetimeMs = opts.tokenLifetimeMs ?? DEFAULT_TOKEN_LIFETIME_MS;
    this.#now = opts.now ?? Date.now;
    this.#overrides = new Map(Object.entries(opts.overrides ?? {}).map(([name, base]) => [name, overrideTarget(name, base)]));
    let ca = opts.ca;
    if (opts.caFile !== undefined) {
      try {
        ca = [ca, fs.readFileSync(opts.caFile, "utf8")].filter(Boolean).join("\n");
      } catch (err) {
        throw new Error(`federation.caFile: cannot read ${opts.caFile}: ${(err as Error).message}`, { cause: err });
      }
      if (!ca.includes("-----BEGIN CERTIFICATE-----")) throw new Error(`federation.caFile: ${opts.caFile} holds no PEM certificate`);
    }
    const tlsVerify = opts.tlsVerify ?? true;
    if (!tlsVerify) this.#log.warn("federation.tlsVerify is false: remote homeservers' certificates are not checked");
    this.#http =
      opts.http ??
      nodeFederationHttp({
        tlsVerify,
        ca,
        connectTimeoutMs: opts.connectTimeoutMs,
        timeoutMs: opts.timeoutMs,
        maxBodyBytes: opts.maxBodyBytes,
        allowPrivateAddresses: opts.allowPrivateAddresses,
      });
    this.#discovery = new ServerDiscovery({
      http: this.#http,
      resolver: opts.resolver,
      now: opts.now,
      random: opts.random,
      log: this.#log.child({ part: "discovery" }),
    });
  }

  /**
   * The user the token belongs to, as its homeserver `claimedServerName` says. Throws
   * ParleyError: M_MISSING_TOKEN, M_INVALID_PARAM (not a server name), M_FORBIDDEN (server not
   * allowed, discovery led to an address Parley does not connect to, or it vouched for another
   * server's user), M_UNKNOWN_TOKEN (the server does not know the token, or it was used before),
   * M_UNAVAILABLE (the server could not be found or reached, or answered nonsense).
   */
  async verify(token: string, claimedServerName: string): Promise<VerifiedOpenId> {
    if (typeof token !== "string" || token.length === 0) {
      throw new ParleyError("M_MISSING_TOKEN", "an OpenID access token is required");
    }
    if (typeof claimedServerName !== "string" || !parseServerName(claimedServerName)) {
      const shown = typeof claimedServerName === "string" ? JSON.stringify(claimedServerName.slice(0, 80)) : "it";
      throw new ParleyError("M_INVALID_PARAM", `matrix_server_name: ${shown} is not a Matrix server name`);
    }
    const serverName = claimedServerName;
    const log = this.#log.child({ serverName });
    // Printable ASCII only (what homeservers issue); anything else cannot be a real token.
    if (token.length > MAX_TOKEN_LENGTH || !/^[\x21-\x7e]+$/.test(token)) {
      throw new ParleyError("M_UNKNOWN_TOKEN", INVALID_TOKEN_MESSAGE);
    }
    if (this.#policy && !this.#policy.allowsServer(serverName)) {
      throw new ParleyError("M_FORBIDDEN", `${serverName} is not a server this Parley federates with`);
    }
    const ledger = this.#ledger;
    if (!ledger) return this.#check(token, serverName, log);
    const hash = openIdTokenHash(serverName, token);
    const now = this.#now();
    if (!(await ledger.claimOpenIdToken(hash, now + this.#tokenLifetimeMs, now))) {
      log.info("OpenID check: token used before (or being checked now); refused");
      throw new ParleyError("M_UNKNOWN_TOKEN", INVALID_TOKEN_MESSAGE);
    }
    try {
      return await this.#check(token, serverName, log);
    } catch (err) {
      // Not accepted: the token may be tried again, and a forged one leaves no row behind.
      await ledger.releaseOpenIdToken(hash);
      throw err;
    }
  }

  async #check(token: string, serverName: string, log: Logger): Promise<VerifiedOpenId> {
    const started = performance.now();
    let targets: ServerTarget[];
    let via: string;
    const override = this.#overrides.get(serverName);
    if (override) {
      targets = [override];
      via = "override";
    } else {
      try {
        ({ targets, via } = await this.#discovery.resolve(serverName));
      } catch (err) {
        const reason = err instanceof DiscoveryError ? err.message : "discovery failed";
        log.warn({ reason }, "OpenID check: server discovery failed");
        throw new ParleyError("M_UNAVAILABLE", unreachableMessage(serverName));
      }
    }

    const path = `${USERINFO_PATH}?access_token=${encodeURIComponent(token)}`;
    let answer: HttpAnswer | undefined;
    let lastError: TransportError | undefined;
    for (const target of targets.slice(0, MAX_TARGETS)) {
      try {
        answer = await this.#http.get(target, path);
        break;
      } catch (err) {
        lastError = err instanceof TransportError ? err : new TransportError("connect", `request to ${describeTarget(target)} failed`);
        const detail = { via, target: describeTarget(target), kind: lastError.kind, reason: lastError.message };
        if (lastError.kind === "blocked") log.warn(detail, "OpenID check: refused to connect to a non-public address");
        else log.info(detail, "OpenID check: no answer");
        if (lastError.kind === "too-large" || lastError.kind === "protocol") break;
      }
    }
    const ms = Math.round(performance.now() - started);
    if (!answer) {
      // The details (addresses, connection errors) are logged above, never told to the caller.
      if (lastError?.kind === "blocked") throw new ParleyError("M_FORBIDDEN", refusedMessage(serverName));
      throw new ParleyError("M_UNAVAILABLE", unreachableMessage(serverName));
    }
    const userId = this.#interpret(answer, serverName, log, ms);
    log.debug({ via, userId, ms }, "OpenID token verified");
    return { userId };
  }

  #interpret(answer: HttpAnswer, serverName: string, log: Logger, ms: number): string {
    const { status } = answer;
    let json: unknown;
    try {
      json = JSON.parse(answer.body);
    } catch {
      json = undefined;
    }
    const errcode = (json as { errcode?: unknown } | undefined)?.errcode;
    if (status === 401 || status === 403 || errcode === "M_UNKNOWN_TOKEN") {
      log.info({ status, errcode, ms }, "OpenID check: token refused by its homeserver");
      throw new ParleyError("M_UNKNOWN_TOKEN", INVALID_TOKEN_MESSAGE);
    }
    if (status !== 200) {
      log.warn({ status, errcode, ms }, "OpenID check: unexpected answer");
      const what = status === 404 ? " (no OpenID userinfo endpoint there)" : "";
      throw new ParleyError("M_UNAVAILABLE", `${serverName} answered the OpenID check with HTTP ${status}${what}`);
    }
    const parsed = userInfoBody.safeParse(json);
    if (!parsed.success) {
      log.warn({ ms, issues: parsed.error.issues.map((i) => `${i.path.join(".") || "body"}: ${i.message}`) }, "OpenID check: invalid userinfo");
      throw new ParleyError("M_UNAVAILABLE", `${serverName} answered the OpenID check with an invalid body`);
    }
    const userId = parsed.data.sub;
    if (serverNameOf(userId) !== serverName) {
      log.warn({ userId, ms }, "OpenID check: homeserver vouched for another server's user");
      throw new ParleyError("M_FORBIDDEN", `${serverName} vouched for ${userId}, who is not one of its users`);
    }
    return userId;
  }

  /** Closes kept-alive connections. */
  close(): void {
    this.#http.close();
  }
}
