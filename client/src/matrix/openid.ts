// The OpenID token that proves to a Parley (possibly another institution's) who the user is:
// the homeserver issues it, Parley checks it against that homeserver over federation.
import { ParleyClientError } from "../errors.ts";
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
