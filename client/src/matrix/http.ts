// A small Matrix client-server HTTP client: JSON in and out, the access token as a bearer header,
// every failure a ParleyClientError carrying the errcode. Used for login, OpenID, state events
// and media, where matrix-js-sdk would be more than we need.
import { asErrCode, ParleyClientError, type ErrorContext } from "../errors.ts";

export type FetchFn = (input: string, init?: RequestInit) => Promise<Response>;

export interface RequestOptions {
  body?: unknown;
  /** A list repeats its parameter (`?via=a&via=b`). */
  query?: Record<string, string | number | readonly string[] | undefined>;
  /** Defaults to /_matrix/client/v3. */
  prefix?: string;
  context?: ErrorContext;
  timeoutMs?: number;
  /** No Authorization header even when the client has a token (login, /versions). */
  anonymous?: boolean;
  /** Aborts the request (a long poll the user stopped waiting for). */
  signal?: AbortSignal;
}

export class MatrixHttp {
  readonly baseUrl: string;
  readonly accessToken: string | undefined;
  private readonly fetchFn: FetchFn;

  constructor(baseUrl: string, accessToken?: string, fetchFn: FetchFn = (i, init) => fetch(i, init)) {
    this.baseUrl = baseUrl.replace(/\/+$/, "");
    this.accessToken = accessToken;
    this.fetchFn = fetchFn;
  }

  withToken(accessToken: string): MatrixHttp {
    return new MatrixHttp(this.baseUrl, accessToken, this.fetchFn);
  }

  url(path: string, opts: Pick<RequestOptions, "prefix" | "query"> = {}): string {
    const q = Object.entries(opts.query ?? {}).flatMap(([k, v]): [string, string][] =>
      v === undefined ? [] : typeof v === "object" ? v.map((x) => [k, x]) : [[k, String(v)]],
    );
    const search = q.length ? `?${new URLSearchParams(q).toString()}` : "";
    return `${this.baseUrl}${opts.prefix ?? "/_matrix/client/v3"}${path}${search}`;
  }

  async request<T>(method: string, path: string, opts: RequestOptions = {}): Promise<T> {
    const res = await this.raw(method, this.url(path, opts), opts);
    const context = opts.context ?? "room";
    const json = (await res.json().catch(() => undefined)) as Record<string, unknown> | undefined;
    if (!res.ok) throw errorFromResponse(res.status, json, context);
    if (json === undefined || typeof json !== "object") throw new ParleyClientError("BAD_RESPONSE", context, { status: res.status });
    return json as T;
  }

  /** A request whose body is not JSON (media); errors are still turned into ParleyClientError. */
  async fetchBlob(url: string, context: ErrorContext = "room"): Promise<Blob> {
    const res = await this.raw("GET", url, { context });
    if (!res.ok) throw errorFromResponse(res.status, (await res.json().catch(() => undefined)) as Record<string, unknown> | undefined, context);
    return res.blob();
  }

  private async raw(method: string, url: string, opts: RequestOptions): Promise<Response> {
    const headers: Record<string, string> = {};
    if (this.accessToken && !opts.anonymous) headers.authorization = `Bearer ${this.accessToken}`;
    if (opts.body !== undefined) headers["content-type"] = "application/json";
    const timeout = AbortSignal.timeout(opts.timeoutMs ?? 30_000);
    const signal = opts.signal ? AbortSignal.any([timeout, opts.signal]) : timeout;
    try {
      return await this.fetchFn(url, {
        method,
        headers,
        body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
        signal,
      });
    } catch (err) {
      const timedOut = timeout.aborted;
      throw new ParleyClientError(timedOut ? "TIMEOUT" : "NETWORK", opts.context ?? "room", {
        detail: `${method} ${new URL(url).pathname}: ${err instanceof Error ? err.message : String(err)}`,
      });
    }
  }
}

export function errorFromResponse(status: number, json: Record<string, unknown> | undefined, context: ErrorContext): ParleyClientError {
  const errcode = json?.errcode;
  let code = asErrCode(errcode);
  // A proxy's HTML 404/502 page has no errcode: say what the status means.
  if (typeof errcode !== "string") {
    code = status === 404 ? "M_UNRECOGNIZED" : status === 429 ? "M_LIMIT_EXCEEDED" : status >= 502 && status <= 504 ? "M_UNAVAILABLE" : "M_UNKNOWN";
  }
  const detail = typeof json?.error === "string" ? `${String(errcode ?? status)}: ${json.error}` : `HTTP ${status}`;
  return new ParleyClientError(code, context, { status, detail });
}

export const enc = encodeURIComponent;
