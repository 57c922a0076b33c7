// Matrix-style errors as HTTP responses; the codes and their status live in ../errors.ts.
import type { ErrorRequestHandler, Response } from "express";
import { ParleyError } from "../errors.ts";
import { getLogger } from "../log.ts";

export { ERROR_STATUS, ParleyError, type ErrCode } from "../errors.ts";

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
