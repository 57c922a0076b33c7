// Meeting rooms made on demand from an alias in Parley's namespace:
//  - an alias becomes exactly one room, even under concurrent queries, across processes (the
//    homeserver's alias uniqueness) and across a crash (the store's claim);
//  - nobody can make Parley create without bound: new rooms are rate limited (a token bucket)
//    and capped (meetings.aliasRooms); a refused query writes nothing;
//  - creation converges: the homeserver may keep a room although it answered an error (Synapse
//    creates the alias before the room's state), so the directory is asked before a claim is
//    released, and a room that carries Parley's alias but has no record is adopted once it is
//    shown to be Parley's (made by the bot, org.parley.call with that alias sent by the bot).
import { ParleyError } from "../errors.ts";
import type { AliasStore } from "../store/store.ts";
import { CALL_STATE_EVENT } from "./callState.ts";
import type { FederationPolicy } from "./policy.ts";
import { OutcomeUnknownError, RoomAliasInUseError, type Clock, type Homeserver } from "./ports.ts";
import { TokenBucket } from "./rateLimit.ts";
import { SingleFlight } from "./singleFlight.ts";

export interface AliasRoomLimits {
  /** New rooms per minute, sustained. */
  perMinute: number;
  /** New rooms at once, before the per-minute rate applies. */
  burst: number;
  /** Rooms made (or adopted) from aliases, in total. */
  max: number;
}

export interface AliasRoomsConfig {
  domain: string;
  aliasPrefix: string;
  joinRule: "public" | "knock" | "invite";
  encrypted: boolean;
  limits: AliasRoomLimits;
  /** Power level of co-hosts: what moderation needs in the rooms made (invite, kick, ban, ...). */
  moderatorLevel: number;
  /** Tchap's im.vector.room.access_rules for the rooms made, if any. */
  accessRule?: "restricted" | "unrestricted" | undefined;
}

export type AliasOutcome = "created" | "adopted" | "refused_rate" | "refused_cap";

export interface AliasRoomsDeps {
  homeserver: Pick<Homeserver, "botUserId" | "createMeetingRoom" | "resolveAlias" | "setAlias" | "deleteAlias" | "stateEvent" | "leaveRoom">;
  store: AliasStore;
  policy: Pick<FederationPolicy, "serverAcl">;
  clock: Clock;
  /** Content of the room's org.parley.call at creation. */
  callState: (alias: string) => Record<string, unknown>;
  observe?: (outcome: AliasOutcome) => void;
  /** Told what was settled without a caller to tell (adoptions, rooms set aside); optional. */
  note?: (what: string, details: Record<string, unknown>) => void;
}

/** A lookup refused by a limit: the homeserver is answered M_LIMIT_EXCEEDED, nothing is written. */
export class AliasRefusedError extends ParleyError {
  readonly reason: "rate" | "cap";
  readonly retryAfterMs: number | undefined;
  constructor(reason: "rate" | "cap", message: string, retryAfterMs?: number) {
    super("M_LIMIT_EXCEEDED", message);
    this.name = "AliasRefusedError";
    this.reason = reason;
    this.retryAfterMs = retryAfterMs;
  }
}

const SLUG = /^[a-z0-9][a-z0-9._=-]{0,63}$/;
/** Rooms found not to be alias rooms, remembered so a busy chat room is not asked again. */
const CHECKED_ROOMS_MAX = 10_000;
/** After this long, a homeserver has finished (or given up) any room creation Parley asked for. */
const HOMESERVER_DONE_MS = 120_000;


export class AliasRooms {
  private readonly creation = new SingleFlight<string, string>();
  private readonly bucket: TokenBucket;
  private readonly notAliasRooms = new Set<string>();
  /** Aliases Parley is looking up in the directory right now, with how many lookups. */
  private readonly lookingUp = new Map<string, number>();
  private readonly cfg: AliasRoomsConfig;
  private readonly deps: AliasRoomsDeps;

  constructor(cfg: AliasRoomsConfig, deps: AliasRoomsDeps) {
    this.cfg = cfg;
    this.deps = deps;
    this.bucket = new TokenBucket(cfg.limits, deps.clock);
  }

  /** The slug of an alias in Parley's namespace, or undefined for any other alias. */
  slugOf(alias: string): string | undefined {
    const prefix = `#${this.cfg.aliasPrefix}`;
    const suffix = `:${this.cfg.domain}`;
    if (!alias.startsWith(prefix) || !alias.endsWith(suffix)) return undefined;
    const slug = alias.slice(prefix.length, alias.length - suffix.length);
    return SLUG.test(slug) ? slug : undefined;
  }

  /** The room of an alias Parley provides (made or re-attached now), undefined for others.
   *  Throws AliasRefusedError when a limit refuses a new room. */
  async provision(alias: string): Promise<string | undefined> {
    const slug = this.slugOf(alias);
    if (slug === undefined) return undefined;
    // Parley itself is asking the directory about this alias (lookUp), and the homeserver, not
    // having it, asks Parley: the truthful answer is "not (yet)", and waiting would deadlock.
    if (this.lookingUp.has(alias)) return undefined;
    return this.creation.run(alias, () => this.ensureRoom(alias, slug));
  }

  /** The directory's room for one of Parley's aliases (see provision for the re-entrant query). */
  private async lookUp(alias: string): Promise<string | undefined> {
    this.lookingUp.set(alias, (this.lookingUp.get(alias) ?? 0) + 1);
    try {
      return await this.deps.homeserver.resolveAlias(alias);
    } finally {
      const n = this.lookingUp.get(alias)! - 1;
      if (n > 0) this.lookingUp.set(alias, n);
      else this.lookingUp.delete(alias);
    }
  }

  private async ensureRoom(alias: string, slug: string): Promise<string> {
    const { store, homeserver } = this.deps;
    const existing = await store.getAlias(alias);
    if (existing?.state === "ready" && existing.roomId) {
      // The homeserver asked, so the directory lost the alias: point it at our room again.
      await homeserver.setAlias(alias, existing.roomId).catch(async (err: unknown) => {
        if (!(err instanceof RoomAliasInUseError)) throw err;
      });
      return existing.roomId;
    }
    if (existing) {
      // A claim left by a crash, by an unknown outcome or by another process: the directory
      // knows whether that creation finished; if it never began, the room is made under it.
      const found = await this.settle(alias, { releaseIfAbsent: false, finished: false });
      if (found) return found;
      this.takeToken();
    } else {
      await this.admit(alias);
    }
    return this.create(alias, slug);
  }

  /** Cap, then rate, then the claim (which checks the cap again in one store transaction). */
  private async admit(alias: string): Promise<void> {
    const { store } = this.deps;
    const { max } = this.cfg.limits;
    if ((await store.aliasCount()) >= max) throw this.refuseCap();
    this.takeToken();
    if ((await store.claimAliasWithin(alias, max)) === "full") throw this.refuseCap();
  }

  private takeToken(): void {
    const wait = this.bucket.take();
    if (wait === 0) return;
    this.deps.observe?.("refused_rate");
    const { perMinute, burst } = this.cfg.limits;
    throw new AliasRefusedError("rate", `too many new meeting rooms (at most ${burst} at once, ${perMinute} a minute); retry later`, wait);
  }

  private refuseCap(): AliasRefusedError {
    this.deps.observe?.("refused_cap");
    return new AliasRefusedError("cap", `this Parley has made its limit of ${this.cfg.limits.max} meeting rooms from aliases`);
  }

  private async create(alias: string, slug: string): Promise<string> {
    const { store, homeserver } = this.deps;
    try {
      const roomId = await homeserver.createMeetingRoom({
        alias,
        aliasLocalpart: alias.slice(1, alias.length - this.cfg.domain.length - 1),
        name: `Meeting ${slug}`,
        joinRule: this.cfg.joinRule,
        encrypted: this.cfg.encrypted,
        moderatorLevel: this.cfg.moderatorLevel,
        accessRule: this.cfg.accessRule,
        serverAcl: this.deps.policy.serverAcl(),
        callInfo: this.deps.callState(alias),
      });
      await store.recordAlias(alias, roomId);
      this.deps.observe?.("created");
      return roomId;
    } catch (err) {
      // In use, or an error after which the homeserver may have made the room anyway: the
      // directory is asked before the claim goes. Without an answer the homeserver may still be
      // making it: the claim stays (counted against the cap) until the room's first member
      // event, the alias's next query or a restart settles it.
      const over = !(err instanceof OutcomeUnknownError);
      const found = await this.settle(alias, { releaseIfAbsent: over, finished: over });
      if (found) return found;
      if (!over) throw new ParleyError("M_UNAVAILABLE", "the homeserver did not finish making the meeting room; retry");
      throw err;
    }
  }

  /**
   * Settles a claim with the directory: a room that is Parley's is adopted (returned), a room
   * someone else made releases the claim (M_NOT_FOUND). Otherwise undefined, with the claim
   * released if the directory has no room and `releaseIfAbsent`. A room of the bot's without its
   * call state is half-made only once the homeserver's work is known to be over (`finished`):
   * then it is set aside so the alias can be made again; before that (and whenever the room
   * cannot be judged) the claim stays and the caller is told M_UNAVAILABLE.
   */
  private async settle(alias: string, opts: { releaseIfAbsent: boolean; finished: boolean }): Promise<string | undefined> {
    const { store, homeserver } = this.deps;
    const roomId = await this.lookUp(alias);
    const kind = roomId ? await this.ownership(roomId, alias) : "absent";
    switch (kind) {
      case "ours":
        return this.adopt(alias, roomId!);
      case "foreign":
        await store.releaseAlias(alias);
        this.deps.note?.("alias names a room Parley did not make", { alias, roomId });
        throw new ParleyError("M_NOT_FOUND", `${alias} names a room Parley did not make`);
      case "absent":
        if (opts.releaseIfAbsent) await store.releaseAlias(alias);
        return undefined;
      case "unfinished":
        if (!opts.finished) break;
        await homeserver.deleteAlias(alias);
        await homeserver.leaveRoom(roomId!, "this meeting room was not completely made; the alias gets a new room").catch(() => undefined);
        this.deps.note?.("half-made meeting room set aside", { alias, roomId });
        await store.releaseAlias(alias);
        return undefined;
      case "unknown":
        break;
    }
    throw new ParleyError("M_UNAVAILABLE", "the meeting room is still being made; retry");
  }

  /** Whether the room is Parley's room for this alias: the bot made it and sent its call state.
   *  "unknown" when the homeserver cannot tell now (e.g. the bot's join is not written yet). */
  private async ownership(roomId: string, alias: string): Promise<"ours" | "foreign" | "unfinished" | "unknown"> {
    const { homeserver } = this.deps;
    const bot = homeserver.botUserId;
    let create, call;
    try {
      [create, call] = await Promise.all([homeserver.stateEvent(roomId, "m.room.create"), homeserver.stateEvent(roomId, CALL_STATE_EVENT)]);
    } catch {
      return "unknown";
    }
    if (!create) return "unknown";
    if (create.sender !== bot) return "foreign";
    if (!call) return "unfinished";
    return call.sender === bot && call.content.alias === alias ? "ours" : "foreign";
  }

  private async adopt(alias: string, roomId: string): Promise<string> {
    await this.deps.store.recordAlias(alias, roomId);
    this.deps.observe?.("adopted");
    return roomId;
  }

  /**
   * Someone joined a room the bot is in. A room carrying Parley's alias that Parley has no record
   * of (its creation failed from Parley's point of view, yet the homeserver made it) is adopted
   * here, so its calls work without waiting for a restart.
   */
  async onMemberJoined(roomId: string): Promise<void> {
    const { store, homeserver } = this.deps;
    if (this.notAliasRooms.has(roomId) || (await store.aliasOfRoom(roomId))) return;
    let call;
    try {
      call = await homeserver.stateEvent(roomId, CALL_STATE_EVENT);
    } catch {
      return; // unreadable now (the bot is leaving, the homeserver is busy): asked again next time
    }
    const alias = call?.sender === homeserver.botUserId ? call.content.alias : undefined;
    if (typeof alias !== "string" || this.slugOf(alias) === undefined) {
      this.remember(roomId);
      return;
    }
    // Through the alias's single flight: a creation of that alias in progress finishes first.
    await this.creation.run(alias, async () => {
      const rec = await store.getAlias(alias);
      if (rec?.state === "ready" && rec.roomId) return rec.roomId;
      if ((await this.lookUp(alias)) !== roomId) {
        this.remember(roomId);
        return "";
      }
      const kind = await this.ownership(roomId, alias);
      if (kind !== "ours") {
        if (kind !== "unknown") this.remember(roomId);
        return "";
      }
      this.deps.note?.("meeting room adopted", { alias, roomId });
      return this.adopt(alias, roomId);
    });
  }

  private remember(roomId: string): void {
    if (this.notAliasRooms.size >= CHECKED_ROOMS_MAX) {
      const oldest = this.notAliasRooms.values().next().value;
      if (oldest !== undefined) this.notAliasRooms.delete(oldest);
    }
    this.notAliasRooms.add(roomId);
  }

  /** Claims left by a crash between "create the room" and "remember it": settled together
   *  (startup waits for this, and every claim costs a few homeserver round trips). */
  async reconcilePending(): Promise<number> {
    const pending = await this.deps.store.listAliases("creating");
    const now = this.deps.clock.now();
    await Promise.all(
      pending.map((rec) => {
        // A young claim's room may still be in the making on the homeserver (Parley died waiting).
        const opts = { releaseIfAbsent: true, finished: now - rec.createdAt > HOMESERVER_DONE_MS };
        return this.creation.run(rec.alias, async () => (await this.settle(rec.alias, opts).catch(() => undefined)) ?? "");
      }),
    );
    return pending.length;
  }
}
