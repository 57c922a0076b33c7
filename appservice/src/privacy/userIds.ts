// How a user is named in Parley's attendance and audit log: the institution's own users (this
// homeserver's server name) by their Matrix id; users of other servers by a pseudonym when the
// operator asks for it (privacy.pseudonymizeRemoteUsers): a keyed HMAC of the id, with a key
// generated at setup and kept in the config, never in the store beside the log. Without the key
// the log cannot be joined back to a person; with it, export and erasure find a person's rows.
import { createHmac } from "node:crypto";
import { serverOf } from "../calls/policy.ts";

/** What a pseudonym starts with (never a Matrix id: those start with '@'). */
export const PSEUDONYM_PREFIX = "~p:";

export class UserIds {
  private readonly domain: string;
  private readonly key: string | undefined;

  /** `key` only when remote users are pseudonymised. */
  constructor(domain: string, key: string | undefined) {
    this.domain = domain;
    this.key = key;
  }

  /** The id as the log records it. */
  recorded(userId: string): string {
    if (!this.key || serverOf(userId) === this.domain) return userId;
    return this.pseudonym(userId);
  }

  /** Every form a user's rows may carry (the setting may have changed since they were written). */
  forms(userId: string): string[] {
    return this.key && serverOf(userId) !== this.domain ? [userId, this.pseudonym(userId)] : [userId];
  }

  private pseudonym(userId: string): string {
    return PSEUDONYM_PREFIX + createHmac("sha256", this.key!).update(userId).digest("base64url").slice(0, 32);
  }
}
