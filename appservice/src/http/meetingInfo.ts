// GET /_parley/v1/meetings/{alias}: whether one of this Parley's meeting aliases has its room
// already, so that the web client can say "this is a new meeting" before a join makes one.
// Answered from the alias store alone: nothing is created, and the homeserver is not asked (its
// directory, asked about one of Parley's aliases it does not know, asks Parley, which creates).
// No authentication: whether a meeting alias exists is no secret (any homeserver's directory
// answers it, and makes the room besides); a per-address limit keeps it from being a cheap scan.
//   200 {exists, alias, server}; 400 M_INVALID_PARAM for what is no room alias; 404 M_NOT_FOUND
//   for an alias outside Parley's namespace (another server's, or not #<prefix><slug>).
import express, { type Router } from "express";
import type { AliasStore } from "../store/store.ts";
import { ParleyError } from "../errors.ts";
import { sendError } from "./errors.ts";
import { AddressRateLimiter, rateLimited, type RateLimit } from "./rateLimit.ts";

export const MEETINGS_PATH = "/_parley/v1/meetings";

/** The Matrix limit on a room alias (bytes, sigil and server name included). */
const MAX_ALIAS_BYTES = 255;
/** #localpart:server_name, the server name a host name, IPv4 or [IPv6] literal and an optional port. */
const ROOM_ALIAS = /^#([^:\0]+):((?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(?::\d{1,5})?)$/;

export interface MeetingInfo {
  exists: boolean;
  alias: string;
  /** The server whose Parley answers for the alias (the alias's server name). */
  server: string;
}

export interface MeetingInfoDeps {
  aliases: Pick<AliasStore, "getAlias">;
  /** The slug of an alias in Parley's namespace, undefined for any other alias. */
  meetings: { slugOf(alias: string): string | undefined };
  limit: RateLimit;
  onRefused?: () => void;
}

/** The answer for one path segment (still percent-encoded), or the error to send. */
export async function meetingInfo(segment: string, deps: Pick<MeetingInfoDeps, "aliases" | "meetings">): Promise<MeetingInfo | ParleyError> {
  let alias: string;
  try {
    alias = decodeURIComponent(segment);
  } catch {
    return new ParleyError("M_INVALID_PARAM", "the meeting alias is not valid percent-encoding");
  }
  if (Buffer.byteLength(alias) > MAX_ALIAS_BYTES) {
    return new ParleyError("M_INVALID_PARAM", `a room alias has at most ${MAX_ALIAS_BYTES} bytes`);
  }
  const m = ROOM_ALIAS.exec(alias);
  if (!m) return new ParleyError("M_INVALID_PARAM", "expected a room alias such as #meet-team:example.org");
  if (deps.meetings.slugOf(alias) === undefined) {
    return new ParleyError("M_NOT_FOUND", `${alias} is not a meeting alias of this Parley`);
  }
  const record = await deps.aliases.getAlias(alias);
  // A claim still "creating" is not a meeting yet: the join that follows may be the one making it.
  return { exists: record?.state === "ready" && record.roomId !== null, alias, server: m[2]! };
}

export function meetingInfoRouter(deps: MeetingInfoDeps): Router {
  const router = express.Router();
  const limiter = new AddressRateLimiter(deps.limit);
  const limited = rateLimited(limiter, "meeting lookups", deps.onRefused);
  // A prefix, not a route parameter: req.path stays percent-encoded, so that bad encoding is this
  // endpoint's 400 and not the router's decoding error.
  router.use(MEETINGS_PATH, (req, res, next) => {
    if (req.method !== "GET" && req.method !== "HEAD") return next();
    res.setHeader("Access-Control-Allow-Origin", "*");
    limited(req, res, () => {
      const segment = req.path.replace(/^\//, "");
      if (!segment) return sendError(res, new ParleyError("M_MISSING_PARAM", `expected ${MEETINGS_PATH}/{alias}`));
      meetingInfo(segment, deps).then(
        (answer) => (answer instanceof ParleyError ? sendError(res, answer) : res.json(answer)),
        (err: unknown) => next(err),
      );
    });
  });
  return router;
}
