// Typed failures of the Janus door, each with a stable code the call layer can map to words
// and HTTP status. No imports: the other sfu/ modules and the call layer share these.

/** Janus core error codes Parley reacts to (janus/apierror.h). */
export const JANUS_ERROR = {
  UNAUTHORIZED: 403,
  INVALID_JSON: 454,
  UNKNOWN_REQUEST: 457,
  SESSION_NOT_FOUND: 458,
  HANDLE_NOT_FOUND: 459,
} as const;

/** Janus answered `{"janus":"error","error":{code,reason}}`. */
export class JanusError extends Error {
  readonly code: number;
  readonly reason: string;
  constructor(code: number, reason: string, request: string) {
    super(`Janus refused ${request}: ${code} ${reason}`);
    this.name = "JanusError";
    this.code = code;
    this.reason = reason;
  }
}

/** No answer within the request timeout. */
export class JanusTimeoutError extends Error {
  constructor(request: string, timeoutMs: number) {
    super(`no Janus answer to ${request} within ${timeoutMs} ms`);
    this.name = "JanusTimeoutError";
  }
}

/** The WebSocket (or the session) closed before the request was answered, or never opened. */
export class JanusClosedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "JanusClosedError";
  }
}

/** Janus answered, but not in a shape Parley understands (a reply that failed its zod guard). */
export class JanusReplyError extends Error {
  constructor(request: string, detail: string) {
    super(`unexpected Janus reply to ${request}: ${detail}`);
    this.name = "JanusReplyError";
  }
}

/** No SFU node can take the request (none configured, or every node is down). */
export class SfuUnavailableError extends Error {
  constructor(detail: string) {
    super(`SFU unavailable: ${detail}`);
    this.name = "SfuUnavailableError";
  }
}

/** VideoRoom error codes (janus_videoroom.c, JANUS_VIDEOROOM_ERROR_*) by name. */
export const VIDEOROOM_ERROR = {
  421: "NO_MESSAGE",
  422: "INVALID_JSON",
  423: "INVALID_REQUEST",
  424: "JOIN_FIRST",
  425: "ALREADY_JOINED",
  426: "NO_SUCH_ROOM",
  427: "ROOM_EXISTS",
  428: "NO_SUCH_FEED",
  429: "MISSING_ELEMENT",
  430: "INVALID_ELEMENT",
  431: "INVALID_SDP_TYPE",
  432: "PUBLISHERS_FULL",
  433: "UNAUTHORIZED",
  434: "ALREADY_PUBLISHED",
  435: "NOT_PUBLISHED",
  436: "ID_EXISTS",
  437: "INVALID_SDP",
  499: "UNKNOWN_ERROR",
} as const;

export type VideoRoomErrorKind = (typeof VIDEOROOM_ERROR)[keyof typeof VIDEOROOM_ERROR];

/** The VideoRoom plugin refused a request (`error_code` in its plugin data). */
export class VideoRoomError extends Error {
  readonly code: number;
  readonly kind: VideoRoomErrorKind;
  readonly reason: string;
  constructor(code: number, reason: string, request: string) {
    const kind: VideoRoomErrorKind = code in VIDEOROOM_ERROR ? VIDEOROOM_ERROR[code as keyof typeof VIDEOROOM_ERROR] : "UNKNOWN_ERROR";
    super(`VideoRoom refused ${request}: ${code} ${kind}: ${reason}`);
    this.name = "VideoRoomError";
    this.code = code;
    this.kind = kind;
    this.reason = reason;
  }
}
