// Short-lived TURN credentials in coturn's shared-secret scheme ("TURN REST API",
// draft-uberti-behave-turn-rest-00; coturn's use-auth-secret): the username is
// "<expiry unix seconds>:<opaque id>", the password base64(HMAC-SHA1(secret, username)). coturn
// recomputes the password from its copy of the secret and refuses the username once its expiry
// has passed, so Parley never stores a TURN password and a leaked one dies on its own.
import { createHash, createHmac } from "node:crypto";
import { readFileSync } from "node:fs";

export interface TurnCredential {
  username: string;
  credential: string;
  /** Unix seconds after which coturn refuses the username (on any request, refreshes included). */
  expiresAt: number;
}

/** What coturn accepts after the colon: no colon itself (it splits on the first one), no control characters. */
const OPAQUE_ID = /^[A-Za-z0-9._=-]{1,128}$/;

export function turnCredential(secret: string, o: { nowMs: number; ttlSeconds: number; id: string }): TurnCredential {
  if (!secret) throw new Error("turn credential: empty secret");
  if (!Number.isInteger(o.ttlSeconds) || o.ttlSeconds < 1) throw new Error("turn credential: ttlSeconds must be a positive integer");
  if (!OPAQUE_ID.test(o.id)) throw new Error("turn credential: the opaque id must be 1-128 of A-Z a-z 0-9 . _ = -");
  const expiresAt = Math.floor(o.nowMs / 1000) + o.ttlSeconds;
  const username = `${expiresAt}:${o.id}`;
  const credential = createHmac("sha1", secret).update(username).digest("base64");
  return { username, credential, expiresAt };
}

/** coturn's static-auth-secret from its file (one line); refused when short, so a typo never runs. */
export function readTurnSecret(file: string): string {
  let secret: string;
  try {
    secret = readFileSync(file, "utf8").trim();
  } catch (err) {
    throw new Error(`turn.secretFile: cannot read ${file}: ${(err as Error).message}`, { cause: err });
  }
  if (secret.length < 32 || /\s/.test(secret)) {
    throw new Error(`turn.secretFile: ${file} must hold one random secret of at least 32 characters (the same as coturn's static-auth-secret)`);
  }
  return secret;
}

export interface IceServer {
  urls: string | string[];
  username?: string | undefined;
  credential?: string | undefined;
}

/** The institution's TURN server (coturn with use-auth-secret): each call session gets its own credential. */
export interface TurnGrantConfig {
  urls: string[];
  secret: string;
  ttlSeconds: number;
  relayOnly: boolean;
}

/**
 * STUN/TURN for one call session: the configured servers, plus the institution's TURN server with
 * a credential of its own. Its opaque id is a hash of the session token: coturn's logs name no
 * Matrix user and hold nothing that opens the session, yet the operator can match the two.
 */
export function iceForSession(
  cfg: { iceServers: IceServer[]; turn?: TurnGrantConfig | undefined },
  sessionToken: string,
  nowMs: number,
): { iceServers: IceServer[]; iceTransportPolicy: "all" | "relay" } {
  const turn = cfg.turn;
  if (!turn) return { iceServers: cfg.iceServers, iceTransportPolicy: "all" };
  const id = createHash("sha256").update(sessionToken).digest("base64url").slice(0, 22);
  const { username, credential } = turnCredential(turn.secret, { nowMs, ttlSeconds: turn.ttlSeconds, id });
  return { iceServers: [...cfg.iceServers, { urls: turn.urls, username, credential }], iceTransportPolicy: turn.relayOnly ? "relay" : "all" };
}
