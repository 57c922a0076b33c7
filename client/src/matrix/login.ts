// Signing in to the user's own homeserver: password, or SSO (m.login.sso) with a redirect back
// here and an m.login.token exchange. Finding the homeserver from a Matrix id: discovery.ts.
import { ParleyClientError } from "../errors.ts";
import { MatrixHttp, type FetchFn } from "./http.ts";
import type { MatrixSession, PendingSso } from "./session.ts";

export interface IdentityProvider {
  id: string;
  name: string;
}

export interface LoginFlows {
  password: boolean;
  /** null when the homeserver offers no SSO; [] when it offers SSO without naming providers. */
  sso: IdentityProvider[] | null;
}

const DEVICE_NAME = "Parley web";

export function normalizeHomeserverUrl(input: string): string {
  const t = input.trim().replace(/\/+$/, "");
  if (!t) throw new ParleyClientError("BAD_INPUT", "login", { human: "Enter your homeserver's address." });
  const withScheme = /^https?:\/\//i.test(t) ? t : `https://${t}`;
  try {
    const u = new URL(withScheme);
    return `${u.protocol}//${u.host}${u.pathname.replace(/\/+$/, "")}`;
  } catch {
    throw new ParleyClientError("BAD_INPUT", "login", { human: "That isn't a valid homeserver address." });
  }
}

export async function getLoginFlows(http: MatrixHttp): Promise<LoginFlows> {
  const res = await http.request<{ flows?: unknown }>("GET", "/login", { context: "login", anonymous: true });
  if (!Array.isArray(res.flows)) throw new ParleyClientError("BAD_RESPONSE", "login", { detail: "GET /login without flows" });
  const flows = res.flows as { type?: unknown; identity_providers?: unknown }[];
  let sso: IdentityProvider[] | null = null;
  for (const f of flows) {
    if (f.type !== "m.login.sso") continue;
    sso = Array.isArray(f.identity_providers)
      ? (f.identity_providers as { id?: unknown; name?: unknown }[])
          .filter((p) => typeof p.id === "string")
          .map((p) => ({ id: p.id as string, name: typeof p.name === "string" ? p.name : (p.id as string) }))
      : [];
  }
  return { password: flows.some((f) => f.type === "m.login.password"), sso };
}

interface LoginResponse {
  user_id?: unknown;
  access_token?: unknown;
  device_id?: unknown;
  well_known?: { "m.homeserver"?: { base_url?: unknown } };
}

function sessionFrom(http: MatrixHttp, res: LoginResponse): MatrixSession {
  if (typeof res.user_id !== "string" || typeof res.access_token !== "string" || typeof res.device_id !== "string") {
    throw new ParleyClientError("BAD_RESPONSE", "login", { detail: "login response without user_id/access_token/device_id" });
  }
  const advertised = res.well_known?.["m.homeserver"]?.base_url;
  return {
    homeserverUrl: typeof advertised === "string" ? normalizeHomeserverUrl(advertised) : http.baseUrl,
    userId: res.user_id,
    accessToken: res.access_token,
    deviceId: res.device_id,
  };
}

/** `deviceId`: the device to make (deviceCrypto.ts readyNextDevice), else the homeserver picks one. */
export async function passwordLogin(http: MatrixHttp, user: string, password: string, deviceId?: string): Promise<MatrixSession> {
  const u = user.trim();
  if (!u || !password) throw new ParleyClientError("BAD_INPUT", "login", { human: "Enter your user name and password." });
  const res = await http.request<LoginResponse>("POST", "/login", {
    context: "login",
    anonymous: true,
    body: {
      type: "m.login.password",
      identifier: { type: "m.id.user", user: u },
      password,
      initial_device_display_name: DEVICE_NAME,
      ...(deviceId ? { device_id: deviceId } : {}),
    },
  });
  return sessionFrom(http, res);
}

/** Where to send the browser for SSO; the homeserver comes back to `redirectUrl?loginToken=...`. */
export function ssoRedirectUrl(http: MatrixHttp, redirectUrl: string, idpId?: string): string {
  const path = idpId ? `/login/sso/redirect/${encodeURIComponent(idpId)}` : "/login/sso/redirect";
  return http.url(path, { query: { redirectUrl } });
}

/** The query parameter that carries the SSO nonce through the homeserver and back. */
export const SSO_NONCE_PARAM = "parleySso";

/** A fresh nonce for one SSO sign-in (128 random bits). */
export function newSsoNonce(): string {
  return Array.from(crypto.getRandomValues(new Uint8Array(16)), (b) => b.toString(16).padStart(2, "0")).join("");
}

/** The URL the homeserver sends the browser back to: this page, carrying the nonce. */
export function ssoReturnUrl(pageUrl: string, nonce: string): string {
  const u = new URL(pageUrl);
  u.search = "";
  u.hash = "";
  u.searchParams.set(SSO_NONCE_PARAM, nonce);
  return u.toString();
}

/**
 * The end of an SSO redirect: a `loginToken` in the page's query is exchanged only for a sign-in
 * this browser tab started (its nonce, kept in sessionStorage, came back in the URL). Anyone can
 * send a victim a link with *their own* loginToken, which would sign the victim in as them.
 * Returns null when the page is no SSO return.
 */
export async function finishSso(
  search: string,
  pending: PendingSso | null,
  exchange: (homeserverUrl: string, loginToken: string) => Promise<MatrixSession>,
): Promise<{ session: MatrixSession; returnHash: string } | null> {
  const q = new URLSearchParams(search);
  const token = q.get("loginToken");
  if (!token) return null;
  if (!pending || q.get(SSO_NONCE_PARAM) !== pending.nonce) {
    throw new ParleyClientError("M_FORBIDDEN", "login", {
      detail: pending ? "SSO nonce does not match" : "no SSO sign-in pending in this tab",
      human: "This sign-in link didn't start in this browser tab, so Parley ignored it. Sign in again from here.",
    });
  }
  return { session: await exchange(pending.homeserverUrl, token), returnHash: pending.returnHash };
}

export async function tokenLogin(http: MatrixHttp, loginToken: string): Promise<MatrixSession> {
  const res = await http.request<LoginResponse>("POST", "/login", {
    context: "login",
    anonymous: true,
    body: { type: "m.login.token", token: loginToken, initial_device_display_name: DEVICE_NAME },
  });
  return sessionFrom(http, res);
}

/** Checks a stored session still works; false when the token is gone, throws on other failures. */
export async function sessionIsValid(session: MatrixSession, fetchFn?: FetchFn): Promise<boolean> {
  const http = new MatrixHttp(session.homeserverUrl, session.accessToken, fetchFn);
  try {
    const me = await http.request<{ user_id?: unknown }>("GET", "/account/whoami", { context: "login", timeoutMs: 10_000 });
    return me.user_id === session.userId;
  } catch (err) {
    if (err instanceof ParleyClientError && (err.code === "M_UNKNOWN_TOKEN" || err.code === "M_MISSING_TOKEN")) return false;
    throw err;
  }
}

export async function logout(session: MatrixSession, fetchFn?: FetchFn): Promise<void> {
  const http = new MatrixHttp(session.homeserverUrl, session.accessToken, fetchFn);
  await http.request("POST", "/logout", { body: {}, context: "login", timeoutMs: 5000 }).catch(() => undefined);
}
