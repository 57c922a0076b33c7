// What `parley export` and `parley erase` do (docs/personal-data.md): everything Parley's store
// holds about one user, as JSON; and its removal, with the guest account deactivated through the
// homeserver when the user is one of Parley's guests, and a record that an erasure happened
// (never whose).
import type { GuestAccounts } from "../calls/guests.ts";
import type { Clock } from "../calls/ports.ts";
import type { AuditEvent, CallRecord, GuestRecord, Store } from "../store/store.ts";
import type { UserIds } from "./userIds.ts";

/** Attendance: the user's first call session in a room began, or their last one ended. */
export const ATTENDANCE_ACTIONS: ReadonlySet<string> = new Set(["call_join", "call_leave"]);

export interface PersonalDataDeps {
  store: Pick<Store, "auditOf" | "callsOf" | "guest" | "eraseUser">;
  ids: Pick<UserIds, "forms">;
  clock: Clock;
}

export interface PersonalDataExport {
  userId: string;
  exportedAt: string;
  /** The forms under which the log may name the user (a pseudonym for a remote user, if configured). */
  recordedAs: string[];
  attendance: AuditEvent[];
  audit: AuditEvent[];
  calls: Omit<CallRecord, "sfu">[];
  guest: GuestRecord | null;
  notes: string[];
}

const NOTES = [
  "OpenID token hashes used for joins are not included: each is a hash of a server name and a one-time token, names nobody, and is forgotten when the token expires",
  "Parley never stores media; the meeting rooms' events are kept by the homeserver (see docs/personal-data.md)",
];

export async function exportUser(deps: PersonalDataDeps, userId: string): Promise<PersonalDataExport> {
  const forms = deps.ids.forms(userId);
  const events = await deps.store.auditOf(forms);
  const calls = await deps.store.callsOf(userId);
  return {
    userId,
    exportedAt: new Date(deps.clock.now()).toISOString(),
    recordedAs: forms,
    attendance: events.filter((e) => ATTENDANCE_ACTIONS.has(e.action)),
    audit: events.filter((e) => !ATTENDANCE_ACTIONS.has(e.action)),
    calls: calls.map(({ sfu: _sfu, ...call }) => call),
    guest: (await deps.store.guest(userId)) ?? null,
    notes: NOTES,
  };
}

export interface Erased {
  /** Rows removed or rewritten in the store. */
  rows: number;
  /** The user was a live guest of Parley's and its account is now deactivated. */
  guestDeactivated: boolean;
}

/**
 * Erases the user. A live guest's account is deactivated first (through the homeserver, as the
 * sweep does): if that fails nothing is erased, so the command can simply be run again.
 */
export async function eraseUser(deps: PersonalDataDeps & { accounts: Pick<GuestAccounts, "deactivate"> }, userId: string): Promise<Erased> {
  const guest = await deps.store.guest(userId);
  let guestDeactivated = false;
  if (guest && guest.state !== "deactivated") {
    guestDeactivated = (await deps.accounts.deactivate(userId)) === "deactivated";
  }
  const rows = await deps.store.eraseUser(userId, deps.ids.forms(userId), { at: deps.clock.now(), guestDeactivated });
  return { rows, guestDeactivated };
}
