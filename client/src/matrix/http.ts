// A small Matrix client-server HTTP client: JSON in and out, the access token as a bearer header,
// every failure a ParleyClientError carrying the errcode. Used for login, OpenID, state events
// and media, where matrix-js-sdk would be more than we need.
import { asErrCode, ParleyClientError, type ErrorContext } from "../errors.ts";
import { pause, realTimers } from "../timers.ts";

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

/** A request refused with 429 is asked again at most this many times. */
export const RATE_LIMIT_RETRIES = 3;
/** The longest wait before asking again (a longer one the server names is cut to this). */
export const RATE_LIMIT_MAX_WAIT_MS = 5_000;

/**
 * How long to wait before asking again after a 429: the server's `retry_after_ms` (Matrix) or
 * `Retry-After` seconds, else 100 ms doubling; never more than RATE_LIMIT_MAX_WAIT_MS.
 */
export function rateLimitWaitMs(json: Record<string, unknown> | undefined, retryAfter: string | null, attempt: number): number {
  const named = typeof json?.retry_after_ms === "number" ? json.retry_after_ms : retryAfter !== null && /^\d+$/.test(retryAfter) ? Number(retryAfter) * 1000 : NaN;
  const wait = Number.isFinite(named) && named >= 0 ? named : 100 * 2 ** attempt;
  return Math.min(wait, RATE_LIMIT_MAX_WAIT_MS);
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
    const context = opts.context ?? "room";
    for (let attempt = 0; ; attempt++) {
      const res = await this.raw(method, this.url(path, opts), opts);
      const json = (await res.json().catch(() => undefined)) as Record<string, unknown> | undefined;
      if (res.status === 429 && attempt < RATE_LIMIT_RETRIES) {
        // Refused before it was acted on (a homeserver's rate limit, the guest proxy's requests
        // in flight): asked again after the wait it names, or a short one.
        await pause(realTimers, rateLimitWaitMs(json, res.headers.get("retry-after"), attempt), opts.signal); // aborted: the next request fails at once
        continue;
      }
      if (!res.ok) throw errorFromResponse(res.status, json, context);
      if (json === undefined || typeof json !== "object") throw new ParleyClientError("BAD_RESPONSE", context, { status: res.status });
      return json as T;
    }
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
