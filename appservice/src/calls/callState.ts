// The room state `org.parley.call` (state_key ""), sent only by a Parley bot. It tells clients
// where the call API is and which key mode the room's calls use (the room's admins control it:
// its power level is 100 in meeting rooms Parley makes):
//   { version: 1, api, alias?, e2ee: { keys: "participant" | "provisioned", bot? } }
// `e2ee.bot` names the only user whose Olm device may send call keys, when keys are provisioned.
export const CALL_STATE_EVENT = "org.parley.call";

export type KeyMode = "participant" | "provisioned";

/** Which key mode a room's calls use, as the operator configured it (calls.e2ee). */
export interface KeyPolicy {
  keys: KeyMode;
  /** Rooms whose calls use provisioned keys whatever `keys` says. */
  provisionedRooms: readonly string[];
}

export function keyModeOf(policy: KeyPolicy, roomId: string | undefined): KeyMode {
  return policy.keys === "provisioned" || (roomId !== undefined && policy.provisionedRooms.includes(roomId)) ? "provisioned" : "participant";
}

export function callStateContent(opts: { api: string; alias?: string; keys: KeyMode; bot: string }): Record<string, unknown> {
  return {
    version: 1,
    api: opts.api,
    ...(opts.alias !== undefined ? { alias: opts.alias } : {}),
    e2ee: opts.keys === "provisioned" ? { keys: "provisioned", bot: opts.bot } : { keys: "participant" },
  };
}
