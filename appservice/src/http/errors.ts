// Typed errors with stable Matrix-style codes, mapped to HTTP status in one table.
import type { ErrorRequestHandler, Response } from "express";
import { getLogger } from "../log.ts";

export const ERROR_STATUS = {
  M_BAD_JSON: 400,
  M_NOT_JSON: 400,
  M_MISSING_PARAM: 400,
  M_INVALID_PARAM: 400,
  M_UNAUTHORIZED: 401,
  M_MISSING_TOKEN: 401,
  M_UNKNOWN_TOKEN: 401,
  M_FORBIDDEN: 403,
  M_NOT_FOUND: 404,
  M_UNRECOGNIZED: 404,
  M_TOO_LARGE: 413,
  M_LIMIT_EXCEEDED: 429,
  M_UNKNOWN: 500,
  M_UNAVAILABLE: 503,
} as const;

export type ErrCode = keyof typeof ERROR_STATUS;

export class ParleyError extends Error {
  readonly errcode: ErrCode;
  constructor(errcode: ErrCode, message: string) {
    super(message);
    this.name = "ParleyError";
    this.errcode = errcode;
  }
  get status(): number {
    return ERROR_STATUS[this.errcode];
  }
}

export function sendError(res: Response, err: ParleyError): void {
  res.status(err.status).json({ errcode: err.errcode, error: err.message });
}

/** Last express handler: body-parser failures and anything thrown become Matrix-style errors. */
export function errorHandler(): ErrorRequestHandler {
  const log = getLogger("http");
  return (err: unknown, req, res, _next) => {
    const e = err as { type?: string; status?: number; message?: string };
    let out: ParleyError;
    if (err instanceof ParleyError) out = err;
    else if (e.type === "entity.parse.failed") out = new ParleyError("M_NOT_JSON", "request body is not valid JSON");
    else if (e.type === "entity.too.large") out = new ParleyError("M_TOO_LARGE", "request body is too large");
    else if (e.status === 415 || e.type === "charset.unsupported" || e.type === "encoding.unsupported")
      out = new ParleyError("M_NOT_JSON", e.message ?? "unsupported body encoding");
    else {
      log.error({ err, path: req.path }, "unhandled error");
      out = new ParleyError("M_UNKNOWN", "internal error");
    }
    if (res.headersSent) return;
    sendError(res, out);
  };
}
