// Guests by link: a person without a Matrix account opens a meeting link, gives a name, and
// becomes a user of Parley's exclusive namespace (`@<userPrefix>guest-<random>:<domain>`, display
// name "<name> (guest)") with a device of its own, made for that one meeting room. The guest asks
// to join like anyone (a Matrix knock) and a host admits or denies them. The browser never holds
// a homeserver token: it holds an opaque guest token, and Parley forwards an allow-list of its
// client-server requests (http/guestProxy.ts), so a guest cannot invite, create rooms, or act
// outside its meeting. Every guest is deactivated (erased) by the sweep:
//   - `deactivateAfterMs` after it left the room (left, denied, removed, banned, signed out);
//   - `lobbyWaitMs` after it was made while it has not joined (still waiting, or never knocked);
//   - `maxLifetimeMs` after it was made, at the latest.
// The schedule lives in the store, so a restarted Parley still deactivates everyone it must.
import { ParleyError } from "../errors.ts";
import type { GuestRecord, GuestStore } from "../store/store.ts";
import { InOrder } from "./inOrder.ts";
import type { Clock } from "./ports.ts";

export type GuestMode = "off" | "lobby";

/** Characters of a guest's name at most (after cleaning). */
export const GUEST_NAME_MAX = 64;
/** What a guest's display name carries, so everyone sees who is a guest. */
export const GUEST_MARK = " (guest)";
/** The localpart of every guest starts with the namespace prefix and this. */
export const GUEST_INFIX = "guest-";
/** Guests deactivated per sweep at most (the rest wait for the next sweep). */
export const SWEEP_BATCH = 20;
/** A failed deactivation is tried again after this, doubling per failure, at most an hour. */
const RETRY_BASE_MS = 30_000;
const RETRY_MAX_MS = 3_600_000;
/** Longest meeting target (alias or room id) accepted, as Matrix bounds them. */
const TARGET_MAX = 255;

export interface GuestConfig {
  mode: GuestMode;
  deactivateAfterMs: number;
  lobbyWaitMs: number;
  maxLifetimeMs: number;
  maxLive: number;
  /** appservice.userPrefix: the namespace's localpart prefix. */
  userPrefix: string;
  domain: string;
  /** meetings.publicUrl: a meeting takes guests only when its org.parley.call names this Parley. */
  publicUrl: string;
}

/** A room as the bot sees it: its org.parley.call content and its join rule. */
export interface MeetingFacts {
  call: Record<string, unknown> | undefined;
  joinRule: string | undefined;
}

/** The homeserver as guests need it (matrix/guestAccounts.ts). */
export interface GuestAccounts {
  /** The room an alias names; undefined when none. */
  resolveAlias(alias: string): Promise<string | undefined>;
  /** undefined when the bot cannot see the room; throws ParleyError M_UNAVAILABLE on a homeserver failure. */
  meetingFacts(roomId: string): Promise<MeetingFacts | undefined>;
  /** Registers the user, makes its device and sets its display name. */
  create(guest: { userId: string; deviceId: string; displayName: string }): Promise<void>;
  /** Deactivates and erases the account; "absent" when it was never registered. */
  deactivate(userId: string): Promise<"deactivated" | "absent">;
}

export interface GuestIds {
  /** Random lower-case letters and digits (at least 80 bits). */
  localpart(): string;
  deviceId(): string;
  /** An unguessable bearer token (at least 256 bits). */
  token(): string;
  /** The one-way hash under which a token is stored. */
  hash(token: string): string;
}

export interface GuestDeps {
  accounts: GuestAccounts;
  store: GuestStore;
  clock: Clock;
  ids: GuestIds;
  note?: (what: string, details: Record<string, unknown>) => void;
}

/** What the browser gets: the guest's identity and the token for Parley's guest door. */
export interface GuestSession {
  userId: string;
  deviceId: string;
  roomId: string;
  displayName: string;
  token: string;
}

/**
 * A guest's name as others will see it: NFC, control, format (bidi overrides, zero-width),
 * private-use and line/paragraph separator characters removed, white space folded; 1 to
 * GUEST_NAME_MAX characters, or M_INVALID_PARAM.
 */
export function cleanGuestName(raw: unknown): string {
  if (typeof raw !== "string") throw new ParleyError("M_INVALID_PARAM", "name: expected a string");
  const name = raw
    .normalize("NFC")
    .replace(/[\p{Cc}\p{Cf}\p{Co}\p{Cs}\p{Zl}\p{Zp}]/gu, "")
    .replace(/\s+/gu, " ")
    .trim();
  if (!name) throw new ParleyError("M_INVALID_PARAM", "name: enter a name for others to see");
  if ([...name].length > GUEST_NAME_MAX) throw new ParleyError("M_INVALID_PARAM", `name: at most ${GUEST_NAME_MAX} characters`);
  return name;
}

const escapeRegex = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");

/** Whether a user id is a guest of this Parley (its namespace prefix, the guest infix, its domain). */
export function guestUserPattern(userPrefix: string, domain: string): RegExp {
  return new RegExp(`^@${escapeRegex(userPrefix + GUEST_INFIX)}[a-z0-9]+:${escapeRegex(domain)}$`);
}

const sameUrl = (a: unknown, b: string) => typeof a === "string" && a.replace(/\/+$/, "") === b.replace(/\/+$/, "");

export class GuestService {
  private readonly cfg: GuestConfig;
  private readonly deps: GuestDeps;
  private readonly pattern: RegExp;
  /** Membership, presence and sign-out of one guest change its row in the order they happen. */
  private readonly perGuest = new InOrder<string>();

  constructor(cfg: GuestConfig, deps: GuestDeps) {
    this.cfg = cfg;
    this.deps = deps;
    this.pattern = guestUserPattern(cfg.userPrefix, cfg.domain);
  }

  get mode(): GuestMode {
    return this.cfg.mode;
  }

  isGuest(userId: string): boolean {
    return this.pattern.test(userId);
  }

  /** Makes a guest for a meeting; the caller has passed the per-address rate limit already. */
  async create(input: { name: unknown; meeting: unknown }): Promise<GuestSession> {
    if (this.cfg.mode === "off") throw new ParleyError("M_FORBIDDEN", "this Parley does not admit guests");
    const name = cleanGuestName(input.name);
    const roomId = await this.meetingRoom(input.meeting);
    await this.checkMeeting(roomId);
    const { ids, store, clock } = this.deps;
    const now = clock.now();
    const token = ids.token();
    const guest = {
      userId: `@${this.cfg.userPrefix}${GUEST_INFIX}${ids.localpart()}:${this.cfg.domain}`,
      deviceId: ids.deviceId(),
      roomId,
      displayName: `${name}${GUEST_MARK}`,
    };
    const deactivateAt = now + Math.min(this.cfg.lobbyWaitMs, this.cfg.maxLifetimeMs);
    if (!(await store.claimGuest({ ...guest, tokenHash: ids.hash(token), createdAt: now, deactivateAt }, this.cfg.maxLive))) {
      throw new ParleyError("M_LIMIT_EXCEEDED", "too many guests at the moment; try again later");
    }
    try {
      await this.deps.accounts.create(guest);
    } catch (err) {
      // The account may exist (no answer): the sweep deactivates it, or finds it absent.
      await store.revokeGuestToken(guest.userId);
      await store.scheduleGuest(guest.userId, "creating", now);
      this.deps.note?.("guest account not made", { userId: guest.userId, err });
      throw new ParleyError("M_UNAVAILABLE", "the guest account could not be made; try again shortly");
    }
    await store.scheduleGuest(guest.userId, "waiting", deactivateAt);
    this.deps.note?.("guest made", { userId: guest.userId, roomId });
    return { ...guest, token };
  }

  /** The live guest a bearer token belongs to (none once guests are off: the sweep still removes them). */
  async authenticate(token: string): Promise<GuestRecord | undefined> {
    if (this.cfg.mode === "off") return undefined;
    const guest = await this.deps.store.guestByTokenHash(this.deps.ids.hash(token));
    return guest && guest.state !== "creating" ? guest : undefined;
  }

  /** A membership of a guest changed (from the appservice's transactions, in order). */
  async onMembership(roomId: string, userId: string, membership: string): Promise<void> {
    if (!this.isGuest(userId)) return;
    await this.perGuest.run(userId, () => this.applyMembership(roomId, userId, membership));
  }

  private async applyMembership(roomId: string, userId: string, membership: string): Promise<void> {
    const { store, clock } = this.deps;
    const guest = await store.guest(userId);
    if (!guest || guest.state === "deactivated" || guest.state === "creating" || guest.roomId !== roomId) return;
    const now = clock.now();
    const latest = guest.createdAt + this.cfg.maxLifetimeMs;
    const current = guest.deactivateAt ?? now;
    if (membership === "join") await store.scheduleGuest(userId, "joined", latest);
    else if (membership === "invite") await store.scheduleGuest(userId, "waiting", Math.min(latest, Math.max(current, now + this.cfg.deactivateAfterMs)));
    else if (membership === "knock") await store.scheduleGuest(userId, "waiting", current);
    else await store.scheduleGuest(userId, "left", Math.min(latest, now + this.cfg.deactivateAfterMs));
  }

  /**
   * A guest's call presence changed: its first call session began (the account lives on to its
   * lifetime), or its last one ended (hung up, tab closed, evicted): the account goes
   * `deactivateAfterMs` later unless a new session comes first. A guest who leaves the call does
   * not leave the room, so this, not the membership, is what ends a guest's use of the account.
   */
  async onCallPresence(roomId: string, userId: string, present: boolean): Promise<void> {
    if (!this.isGuest(userId)) return;
    await this.perGuest.run(userId, () => this.applyPresence(roomId, userId, present));
  }

  private async applyPresence(roomId: string, userId: string, present: boolean): Promise<void> {
    const { store, clock } = this.deps;
    const guest = await store.guest(userId);
    if (!guest || guest.state !== "joined" || guest.roomId !== roomId) return;
    const latest = guest.createdAt + this.cfg.maxLifetimeMs;
    await store.scheduleGuest(userId, "joined", present ? latest : Math.min(latest, clock.now() + this.cfg.deactivateAfterMs));
  }

  /** The guest signed out: its token stops working now and the account goes at the next sweep. */
  async signOut(userId: string): Promise<void> {
    await this.perGuest.run(userId, async () => {
      const guest = await this.deps.store.guest(userId);
      if (!guest || guest.state === "deactivated") return;
      await this.deps.store.revokeGuestToken(userId);
      await this.deps.store.scheduleGuest(userId, guest.state, this.deps.clock.now());
    });
  }

  /** A host ended the meeting: its guests go `deactivateAfterMs` from now (or earlier if due). */
  async onMeetingEnded(roomId: string): Promise<void> {
    const now = this.deps.clock.now();
    for (const g of await this.deps.store.guestsOfRoom(roomId)) {
      const { state } = g;
      if (state === "creating" || state === "deactivated") continue;
      const at = Math.min(g.deactivateAt ?? now, now + this.cfg.deactivateAfterMs);
      await this.perGuest.run(g.userId, () => this.deps.store.scheduleGuest(g.userId, state, at));
    }
  }

  /** Deactivates the guests that are due; a failure is tried again later, with backoff. */
  async sweep(): Promise<{ deactivated: number; failed: number }> {
    const { store, clock, accounts } = this.deps;
    let deactivated = 0;
    let failed = 0;
    for (const g of await store.dueGuests(clock.now(), SWEEP_BATCH)) {
      try {
        const outcome = await accounts.deactivate(g.userId);
        await store.markGuestDeactivated(g.userId, clock.now());
        deactivated++;
        this.deps.note?.("guest deactivated", { userId: g.userId, roomId: g.roomId, outcome });
      } catch (err) {
        failed++;
        const retryMs = Math.min(RETRY_MAX_MS, RETRY_BASE_MS * 2 ** Math.min(g.attempts, 20));
        await store.deferGuest(g.userId, clock.now() + retryMs);
        this.deps.note?.("guest deactivation failed; will retry", { userId: g.userId, attempts: g.attempts + 1, retryMs, err });
      }
    }
    return { deactivated, failed };
  }

  /** How often to sweep so a guest goes at most half its shortest delay late (1 s .. 30 s). */
  periodMs(): number {
    const shortest = Math.min(this.cfg.deactivateAfterMs, this.cfg.lobbyWaitMs);
    return Math.min(30_000, Math.max(1000, Math.floor(shortest / 2)));
  }

  private async meetingRoom(meeting: unknown): Promise<string> {
    if (typeof meeting !== "string" || !meeting || meeting.length > TARGET_MAX) {
      throw new ParleyError("M_INVALID_PARAM", "meeting: expected a room alias or room id");
    }
    if (meeting.startsWith("!")) return meeting;
    if (!meeting.startsWith("#") || !meeting.includes(":")) throw new ParleyError("M_INVALID_PARAM", "meeting: expected a room alias or room id");
    // Only this server's aliases: a guest never makes the homeserver look up another server.
    if (!meeting.endsWith(`:${this.cfg.domain}`)) throw new ParleyError("M_FORBIDDEN", "guests may join only this server's meetings");
    const roomId = await this.deps.accounts.resolveAlias(meeting);
    if (!roomId) throw new ParleyError("M_NOT_FOUND", `no meeting ${meeting}`);
    return roomId;
  }

  private async checkMeeting(roomId: string): Promise<void> {
    const facts = await this.deps.accounts.meetingFacts(roomId);
    if (!facts?.call || !sameUrl(facts.call.api, this.cfg.publicUrl)) throw new ParleyError("M_NOT_FOUND", "no meeting of this Parley there");
    if (facts.call.guests === false) throw new ParleyError("M_FORBIDDEN", "this meeting does not admit guests");
    // Guests always wait in the lobby: a meeting must take knocks (open or locked ones do not).
    if (facts.joinRule !== "knock" && facts.joinRule !== "knock_restricted") {
      throw new ParleyError("M_FORBIDDEN", "this meeting has no lobby right now, so guests cannot ask to join");
    }
  }
}
