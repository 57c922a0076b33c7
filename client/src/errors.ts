// Typed errors with stable codes and the words a person sees. Every failure that reaches the
// screen is a ParleyClientError; `human` is what the UI shows, `detail` is for the log.

/** Where the failure happened: the same errcode means different things at login and at join. */
export type ErrorContext = "login" | "room" | "join" | "signalling" | "media" | "chat";

export type ClientErrCode =
  // Matrix-style codes from a homeserver or the call API
  | "M_FORBIDDEN"
  | "M_UNKNOWN_TOKEN"
  | "M_MISSING_TOKEN"
  | "M_NOT_FOUND"
  | "M_UNAVAILABLE"
  | "M_LIMIT_EXCEEDED"
  | "M_USER_DEACTIVATED"
  | "M_UNRECOGNIZED"
  | "M_BAD_JSON"
  | "M_INVALID_PARAM"
  | "M_TOO_LARGE"
  | "M_UNKNOWN"
  // the client's own
  | "NETWORK"
  | "TIMEOUT"
  | "BAD_RESPONSE"
  | "CLOSED"
  | "EVICTED"
  | "MEDIA_DENIED"
  | "MEDIA_NOT_FOUND"
  | "MEDIA_IN_USE"
  | "MEDIA_UNSUPPORTED"
  | "E2EE_UNSUPPORTED"
  | "WEBRTC"
  | "NO_SSO"
  | "NO_HOMESERVER"
  | "UNREACHABLE"
  | "BAD_INPUT";

const KNOWN = new Set<string>([
  "M_FORBIDDEN", "M_UNKNOWN_TOKEN", "M_MISSING_TOKEN", "M_NOT_FOUND", "M_UNAVAILABLE", "M_LIMIT_EXCEEDED",
  "M_USER_DEACTIVATED", "M_UNRECOGNIZED", "M_BAD_JSON", "M_INVALID_PARAM", "M_TOO_LARGE", "M_UNKNOWN",
]);

/** An errcode from the wire, narrowed to ours (anything unexpected is M_UNKNOWN). */
export function asErrCode(errcode: unknown): ClientErrCode {
  return typeof errcode === "string" && KNOWN.has(errcode) ? (errcode as ClientErrCode) : "M_UNKNOWN";
}

type Table = Partial<Record<ClientErrCode, string>>;

const GENERIC: Table = {
  NETWORK: "Couldn't reach the server. Check your connection and try again.",
  TIMEOUT: "The server took too long to answer. Try again in a moment.",
  BAD_RESPONSE: "The server sent an answer Parley doesn't understand.",
  M_LIMIT_EXCEEDED: "Too many attempts in a short time. Wait a moment and try again.",
  M_UNAVAILABLE: "The server is busy or down for maintenance. Try again in a minute.",
  M_UNKNOWN: "Something went wrong on the server. Try again; if it keeps happening, tell your administrator.",
  M_UNKNOWN_TOKEN: "Your sign-in has expired. Sign in again.",
  M_MISSING_TOKEN: "You need to sign in first.",
  BAD_INPUT: "That doesn't look right. Check what you typed.",
  E2EE_UNSUPPORTED: "This call is end-to-end encrypted, and this browser can't encrypt media (no insertable streams). Use a current Chrome, Edge, Firefox or Safari.",
};

const BY_CONTEXT: Record<ErrorContext, Table> = {
  login: {
    M_FORBIDDEN: "Wrong user name or password.",
    M_USER_DEACTIVATED: "This account has been deactivated.",
    M_NOT_FOUND: "This homeserver doesn't offer that way of signing in.",
    M_UNRECOGNIZED: "That address doesn't look like a Matrix homeserver.",
    NETWORK: "Couldn't reach the homeserver. Check its address and your connection.",
    NO_SSO: "This homeserver doesn't offer single sign-on.",
    NO_HOMESERVER: "Couldn't find your homeserver. Enter its address above and sign in again.",
    BAD_RESPONSE: "That address answered, but not like a Matrix homeserver.",
  },
  room: {
    M_FORBIDDEN: "You can't enter this meeting room: it needs an invitation, or you were removed from it.",
    M_NOT_FOUND: "There is no meeting with that name or address.",
    M_UNKNOWN_TOKEN: "Your sign-in has expired. Sign in again to open the meeting.",
    M_INVALID_PARAM: "That isn't a valid meeting name, alias or room id.",
    NETWORK: "Couldn't reach your homeserver to open the meeting. Check your connection.",
  },
  join: {
    M_MISSING_TOKEN: "The meeting server didn't receive proof of who you are. Try joining again.",
    M_UNKNOWN_TOKEN:
      "The meeting server couldn't confirm who you are with your homeserver. Try again; if it keeps happening, the two servers may not be allowed to talk to each other.",
    M_FORBIDDEN: "You're not allowed to join this call. Only members of the room can join; ask someone in it to invite you.",
    M_NOT_FOUND: "There's no call for this room on the meeting server (it may have ended).",
    M_UNAVAILABLE: "The meeting server isn't taking calls right now. Try again in a minute.",
    M_UNRECOGNIZED: "This meeting server doesn't offer calls yet (its call service is missing or out of date).",
    M_BAD_JSON: "The meeting server didn't accept Parley's request. The client and server versions may not match.",
    NETWORK: "Couldn't reach the meeting server. Check your connection; if others can join, the server may block your network.",
    BAD_RESPONSE: "The meeting server sent an answer Parley doesn't understand. The client and server versions may not match.",
  },
  signalling: {
    CLOSED: "Lost the connection to the meeting server.",
    EVICTED: "You were removed from the call.",
    M_FORBIDDEN: "You're no longer allowed in this call (you left the room, or were removed from it).",
    M_UNKNOWN_TOKEN: "Your call session has expired. Join again.",
    M_NOT_FOUND: "The call has ended.",
    M_UNRECOGNIZED: "The meeting server doesn't support this yet (its call service is out of date).",
    TIMEOUT: "The meeting server stopped answering.",
    WEBRTC: "Your browser couldn't set up the media connection.",
  },
  media: {
    MEDIA_DENIED: "Parley isn't allowed to use your camera or microphone. Allow it in your browser's site settings, then try again.",
    MEDIA_NOT_FOUND: "No camera or microphone was found. You can still join and listen.",
    MEDIA_IN_USE: "Your camera or microphone is being used by another app, or couldn't be started.",
    MEDIA_UNSUPPORTED: "This browser can't use a camera or microphone here (Parley needs a secure https:// page or localhost).",
  },
  chat: {
    M_FORBIDDEN: "You can't send messages in this room.",
    NETWORK: "Your message couldn't be sent: no connection to your homeserver.",
  },
};

export function humanText(code: ClientErrCode, context: ErrorContext): string {
  return BY_CONTEXT[context][code] ?? GENERIC[code] ?? "Something went wrong. Try again.";
}

/** A server the user's homeserver could not reach (over federation), named. */
export function unreachableServer(server: string, context: ErrorContext, opts: { detail?: string; status?: number } = {}): ParleyClientError {
  return new ParleyClientError("UNREACHABLE", context, {
    ...opts,
    human: `${server} could not be reached, so the meeting can't be opened. Try again later; if it keeps happening, your homeserver may not be allowed to talk to ${server}.`,
  });
}

export class ParleyClientError extends Error {
  readonly code: ClientErrCode;
  readonly context: ErrorContext;
  /** HTTP status when the error came from a server. */
  readonly status: number | undefined;
  /** What the server said, for logs (never shown as the main text). */
  readonly detail: string | undefined;
  readonly human: string;

  constructor(code: ClientErrCode, context: ErrorContext, opts: { detail?: string; status?: number; human?: string } = {}) {
    super(`${code}${opts.detail ? `: ${opts.detail}` : ""}`);
    this.name = "ParleyClientError";
    this.code = code;
    this.context = context;
    this.status = opts.status;
    this.detail = opts.detail;
    this.human = opts.human ?? humanText(code, context);
  }
}

/** Any thrown value as something the UI can show. */
export function toClientError(err: unknown, context: ErrorContext): ParleyClientError {
  if (err instanceof ParleyClientError) return err;
  if (err instanceof Error && err.name === "AbortError") return new ParleyClientError("TIMEOUT", context, { detail: err.message });
  return new ParleyClientError("M_UNKNOWN", context, { detail: err instanceof Error ? err.message : String(err) });
}
