// End-to-end encrypted media only: Janus 1.1.2 checks require_e2ee for publishers alone, so
// Parley checks both ends itself, before anything reaches the SFU.
import { ParleyError } from "../errors.ts";

/** Told of each check (metrics): encrypted, plain (allowed: not required) or refused. */
export type E2eeObserver = (role: "publish" | "subscribe", outcome: "encrypted" | "plain" | "refused") => void;

export function admitE2ee(required: boolean, declared: boolean | undefined, role: "publish" | "subscribe", observe?: E2eeObserver): void {
  observe?.(role, declared === true ? "encrypted" : required ? "refused" : "plain");
  if (required && declared !== true) {
    throw new ParleyError("M_FORBIDDEN", `this call requires end-to-end encrypted media: ${role} with e2ee: true`);
  }
}
