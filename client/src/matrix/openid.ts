// The OpenID token that proves to a Parley (possibly another institution's) who the user is:
// the homeserver issues it, Parley checks it against that homeserver over federation.
import { ParleyClientError } from "../errors.ts";
import { askedAhead } from "../ahead.ts";
import { enc, type MatrixHttp } from "./http.ts";

export interface OpenIdToken {
  access_token: string;
  token_type: string;
  matrix_server_name: string;
  expires_in: number;
}

export function parseOpenIdToken(raw: unknown): OpenIdToken {
  const r = (raw ?? {}) as Record<string, unknown>;
  if (typeof r.access_token !== "string" || typeof r.matrix_server_name !== "string") {
    throw new ParleyClientError("BAD_RESPONSE", "join", { detail: "OpenID token without access_token/matrix_server_name" });
  }
  return {
    access_token: r.access_token,
    token_type: typeof r.token_type === "string" ? r.token_type : "Bearer",
    matrix_server_name: r.matrix_server_name,
    expires_in: typeof r.expires_in === "number" ? r.expires_in : 3600,
  };
}

/** A source of OpenID tokens: the homeserver directly, or Element through the widget API. */
export type OpenIdProvider = () => Promise<OpenIdToken>;

export function homeserverOpenId(http: MatrixHttp, userId: string): OpenIdProvider {
  return async () =>
    parseOpenIdToken(await http.request("POST", `/user/${enc(userId)}/openid/request_token`, { body: {}, context: "join" }));
}

/** The share of a token's lifetime after which a prefetched token is not used (a fresh one is asked). */
const PREFETCH_USABLE_SHARE = 0.5;

/**
 * An OpenID provider that can fetch its next token ahead (`warm`, when the pre-join shows), so the
 * join does not wait for the homeserver's answer. A token is used once (Parley refuses a token it
 * has seen: replay protection), and only while half its lifetime is left; otherwise, or if the
 * prefetch failed, the token is asked for when the join needs it, as without a prefetch.
 */
export function prefetchingOpenId(fetch: OpenIdProvider, now: () => number = () => Date.now()): OpenIdProvider & { warm(): void } {
  const ahead = askedAhead(fetch, (token, at, t) => t - at <= token.expires_in * 1000 * PREFETCH_USABLE_SHARE, now);
  const provider = async () => (await ahead.take()) ?? fetch();
  return Object.assign(provider, { warm: ahead.warm });
}
