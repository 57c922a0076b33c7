// Typed errors with stable Matrix-style codes and their HTTP status, in one table.
// No imports: the domain raises these; http/ turns them into responses.

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
