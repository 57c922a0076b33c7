// Roles and permissions from the room itself (docs/governance.md): host = privileged creators (room
// v12 and later: the m.room.create sender and its additional_creators) and power level >= 100;
// co-host = power level >= the co-host level (50 by default); participant = the rest. Every
// moderation action needs the power level the room's m.room.power_levels says for it; custom
// actions are listed as custom event types in power_levels.events. Pure: the caller reads the state.

export type Role = "host" | "cohost" | "participant";

/** The permission knob of SFU moderation (mute, stop share, lower hand, end for all). */
export const MODERATE_EVENT = "org.parley.moderate";
export const HOST_LEVEL = 100;

export type Action =
  | "mute" | "allow" | "mute_all" | "stop_share" | "lower_hand" | "end"
  | "admit" | "admit_all" | "deny" | "remove" | "ban" | "set_role" | "settings";

export const ACTIONS: readonly Action[] = [
  "mute", "allow", "mute_all", "stop_share", "lower_hand", "end", "admit", "admit_all", "deny", "remove", "ban", "set_role", "settings",
];

/** The two state events roles are read from. */
export interface RoomPowerFacts {
  create: { sender: string; content: Record<string, unknown> } | undefined;
  powerLevels: Record<string, unknown> | undefined;
}

/** Room versions whose creators hold unlimited power and appear in no power levels (MSC4289). */
export function creatorsArePrivileged(roomVersion: string): boolean {
  if (roomVersion === "org.matrix.hydra.11") return true;
  const n = Number(roomVersion);
  return Number.isInteger(n) && n >= 12;
}

const num = (v: unknown, fallback: number) => (typeof v === "number" && Number.isFinite(v) ? v : fallback);
const obj = (v: unknown): Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : {};

export class RoomPower {
  private readonly privileged: ReadonlySet<string>;
  private readonly pl: Record<string, unknown> | undefined;
  private readonly cohostLevel: number;
  private readonly bot: string;

  constructor(facts: RoomPowerFacts, opts: { cohostLevel: number; botUserId: string }) {
    const version = String(facts.create?.content.room_version ?? "1");
    const extra = facts.create?.content.additional_creators;
    this.privileged = new Set(
      creatorsArePrivileged(version) && facts.create
        ? [facts.create.sender, ...(Array.isArray(extra) ? extra.filter((u): u is string => typeof u === "string") : [])]
        : [],
    );
    this.pl = facts.powerLevels;
    this.cohostLevel = opts.cohostLevel;
    this.bot = opts.botUserId;
  }

  /** Infinite for privileged creators; without power levels, the creator has 100 and others 0. */
  levelOf(userId: string): number {
    if (this.privileged.has(userId)) return Number.POSITIVE_INFINITY;
    if (!this.pl) return 0;
    return num(obj(this.pl.users)[userId], num(this.pl.users_default, 0));
  }

  roleOf(userId: string): Role {
    const level = this.levelOf(userId);
    if (level >= HOST_LEVEL) return "host";
    if (level >= this.cohostLevel) return "cohost";
    return "participant";
  }

  /** The level the room asks for a state or message event type. */
  neededForEvent(eventType: string, state = true): number {
    const pl = this.pl ?? {};
    const fallback = state ? num(pl.state_default, 50) : num(pl.events_default, 0);
    return num(obj(pl.events)[eventType], fallback);
  }

  private needed(action: Action): number {
    const pl = this.pl ?? {};
    switch (action) {
      case "admit":
      case "admit_all":
        return num(pl.invite, 0);
      case "deny":
      case "remove":
        return num(pl.kick, 50);
      case "ban":
        return num(pl.ban, 50);
      case "set_role":
        return Math.max(HOST_LEVEL, this.neededForEvent("m.room.power_levels"));
      case "settings":
        return this.neededForEvent("org.parley.call");
      default:
        return this.neededForEvent(MODERATE_EVENT);
    }
  }

  /** Whether `actor` may do `action` (to `target`, where the room's rules compare the two). */
  may(actor: string, action: Action, target?: string): boolean {
    if (actor === this.bot) return false; // the bot acts only on behalf of someone
    const level = this.levelOf(actor);
    if (level < this.needed(action)) return false;
    // Matrix's rule for kick, ban and power changes: only over users of lower power.
    if (target !== undefined && (action === "remove" || action === "ban" || action === "set_role")) {
      return this.levelOf(target) < level;
    }
    return true;
  }

  /** The actions `actor` may do at all (what the client shows). */
  allowed(actor: string): Action[] {
    return ACTIONS.filter((a) => this.may(actor, a));
  }

  /** The power_levels content with one user's level changed (0 removes the entry). */
  withLevel(userId: string, level: number): Record<string, unknown> {
    const pl = { ...(this.pl ?? {}) };
    const users = { ...obj(pl.users) };
    if (level === num(pl.users_default, 0)) delete users[userId];
    else users[userId] = level;
    return { ...pl, users };
  }
}
