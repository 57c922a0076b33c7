// The crypto door's one seam towards the homeserver: authenticated C-S requests with the
// appservice token (paths relative to /_matrix/client/v3). Unit tests give a fake.
import { Method, type MatrixClient } from "matrix-js-sdk";

export type HttpMethod = "GET" | "POST" | "PUT";

export interface CryptoHttp {
  request<T>(method: HttpMethod, path: string, body?: unknown, query?: Record<string, string>): Promise<T>;
}

const METHODS: Record<HttpMethod, Method> = { GET: Method.Get, POST: Method.Post, PUT: Method.Put };

/** Over matrix-js-sdk's HTTP layer (the client the appservice already has, carrying the as_token). */
export function clientHttp(client: Pick<MatrixClient, "http">): CryptoHttp {
  return {
    request: <T>(method: HttpMethod, path: string, body?: unknown, query?: Record<string, string>) =>
      client.http.authedRequest<T>(METHODS[method], path, query, body as Record<string, unknown> | undefined),
  };
}
