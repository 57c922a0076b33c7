// Request bodies: JSON only, identity encoding only, each route with its own byte limit, checked
// before anything is parsed: a declared Content-Length above the limit is refused before a byte
// is read, a streamed (chunked) body as soon as it crosses the limit. A refused body is never
// buffered: the answer goes out at once, the connection is closed, and what the client still
// sends is discarded for a short grace (so that it reads the answer) before the socket goes.
import type { Request, RequestHandler, Response } from "express";
import { ParleyError } from "../errors.ts";
import { sendError } from "./errors.ts";

/** The limits of each route that takes a body (bytes). */
export const BODY_LIMITS = {
  /**
   * PUT /_matrix/app/v1/transactions: Synapse 1.163 sends at most 100 events and 100 ephemeral
   * events (appservice/scheduler.py MAX_PERSISTENT_EVENTS_PER_TRANSACTION, MAX_EPHEMERAL_...) of at
   * most 64 KiB each (MAX_PDU_SIZE): 12.5 MiB; 16 MiB leaves room for the up to 100 to-device
   * messages (Olm payloads, a few KiB each) and the MSC3202 parts.
   */
  transaction: 16 * 1024 * 1024,
  /** Other /_matrix/app/v1 requests (ping: {transaction_id}). */
  appserviceSmall: 4 * 1024,
  /** POST /_parley/v1/calls/join: an OpenID token (access_token <= 4096) and a room (<= 255). */
  callJoin: 8 * 1024,
  /** POST /_parley/v1/guests: a name (<= 64 characters) and a meeting (<= 255). */
  guestCreate: 2 * 1024,
} as const;

/** How long a refused request's remaining bytes are discarded before the socket is destroyed. */
const LINGER_MS = 2_000;

/** Answers `err` without reading the rest of the body, then closes the connection. */
export function refuseUnread(req: Request, res: Response, err: ParleyError): void {
  res.setHeader("Connection", "close");
  sendError(res, err);
  if (req.complete) return;
  req.removeAllListeners("data");
  req.unpipe();
  req.resume(); // discard, never buffer
  const timer = setTimeout(() => req.socket.destroy(), LINGER_MS);
  timer.unref();
  req.once("end", () => clearTimeout(timer));
  req.socket.once("close", () => clearTimeout(timer));
}

/** Requests whose body was read already (by an earlier, route-specific jsonBody). */
const read = new WeakSet<Request>();

const hasBody = (req: Request) =>
  req.headers["transfer-encoding"] !== undefined || (req.headers["content-length"] ?? "0") !== "0";

/**
 * Parses a JSON body of at most `limit` bytes into req.body (undefined without a body). Refuses
 * 413 M_TOO_LARGE above the limit, 400 M_NOT_JSON for any Content-Encoding but identity (no
 * inflation: a compressed body could expand past any limit) and for bad JSON.
 */
export function jsonBody(limit: number): RequestHandler {
  return (req, res, next) => {
    if (read.has(req)) return next();
    read.add(req);
    req.body = undefined;
    if (!hasBody(req)) return next();
    const encoding = (req.headers["content-encoding"] ?? "identity").trim().toLowerCase();
    if (encoding !== "identity") {
      return refuseUnread(req, res, new ParleyError("M_NOT_JSON", `unsupported content encoding '${encoding.slice(0, 32)}'`));
    }
    const declared = Number(req.headers["content-length"] ?? 0);
    if (!(declared <= limit)) return refuseUnread(req, res, tooLarge(limit));
    const chunks: Buffer[] = [];
    let size = 0;
    let done = false;
    const finish = (err?: ParleyError) => {
      if (done) return;
      done = true;
      req.off("data", onData);
      if (err) return refuseUnread(req, res, err);
      try {
        req.body = JSON.parse(Buffer.concat(chunks, size).toString("utf8"));
      } catch {
        return sendError(res, new ParleyError("M_NOT_JSON", "request body is not valid JSON"));
      }
      next();
    };
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (size > limit) return finish(tooLarge(limit));
      chunks.push(chunk);
    };
    req.on("data", onData);
    req.once("end", () => finish());
    req.once("error", () => {
      done = true;
      req.socket.destroy();
    });
  };
}

function tooLarge(limit: number): ParleyError {
  return new ParleyError("M_TOO_LARGE", `request body is larger than ${limit} bytes`);
}
