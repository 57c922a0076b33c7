// SfuPool: every configured Janus node, least-loaded placement of rooms, and the registry of
// the rooms Parley created (what a restarted node has lost). A stopped pool leaves no timer,
// no socket, no map entry and none of its rooms in Janus.
//
// Recovery runs in one order, so that no client is sent to a room that is not there yet: a
// node that restarted (or is given up as dead after deadAfterMs down, when another node is up)
// first has its lost rooms made again by the restart listeners (same id and secret; on a live
// node if it is dead), new participants of that node wait meanwhile, and only then are the old
// participant sessions closed as "lost", which tells their clients to renegotiate.
import { randomBytes } from "node:crypto";
import { EventEmitter } from "node:events";
import { getLogger } from "../log.ts";
import { SfuUnavailableError, VideoRoomError } from "./errors.ts";
import { SfuNode, type NodeState, type SfuNodeConfig, type SfuNodeOptions } from "./node.ts";
import { Participant } from "./participant.ts";
import type { RoomParticipant, RtpForward, TalkDetection } from "./videoroom.ts";

/** Where a call's room lives; the secret is needed to destroy it and to kick participants. */
export interface RoomRef {
  node: string;
  roomId: string;
  secret: string;
}

export interface RoomOptions {
  /** Maximum concurrent publishers (default 32). */
  publishers?: number | undefined;
  /** Publishers must send end-to-end encrypted frames (default true). */
  requireE2ee?: boolean | undefined;
  /** Per-publisher bitrate cap in bit/s (default: none). */
  bitrate?: number | undefined;
  /** Talking events from the audio-level extension (default: none). */
  talking?: TalkDetection | undefined;
  /** Negotiate Opus DTX with publishers (default: Janus's, off). */
  opusDtx?: boolean | undefined;
}

export interface NodeHealth {
  id: string;
  state: NodeState;
  /** Rooms Parley placed on the node. */
  rooms: number;
  /** Participant sessions Parley holds on the node. */
  participants: number;
  /** Plugin handles of those sessions (with those attached ahead that a participant has not used). */
  handles: number;
  /** Sessions open ahead for the next participants (sfu.warmSessions), not counted above. */
  warm: number;
}

export interface PoolOptions extends SfuNodeOptions {
  /**
   * A node down this long (and not back) is given up: its calls move to a live node, if there is
   * one (default 5 s). Undefined or 0: never.
   */
  deadAfterMs?: number | undefined;
}

/** Told of lost rooms (see PoolEvents.nodeRestarted); the pool waits for it before releasing clients. */
export type RestartListener = (nodeId: string, lostRoomIds: string[]) => void | Promise<void>;

export interface PoolEvents {
  /**
   * Janus lost the node's sessions (it restarted, or was unreachable past
   * reclaim_session_timeout). Every participant on it was lost (Participant.onLost);
   * `lostRoomIds` are Parley's rooms that no longer exist there: recreateRoom them and have
   * clients join and negotiate again.
   */
  nodeRestarted: [nodeId: string, lostRoomIds: string[]];
  /** A node down past deadAfterMs was given up; its rooms were moved (nodeRestarted told first). */
  nodeDead: [nodeId: string];
  nodeDown: [nodeId: string, reason: string];
  nodeUp: [nodeId: string];
}

interface RoomEntry {
  ref: RoomRef;
  callId: string;
  opts: RoomOptions;
}

const DESTROY_ON_STOP_TIMEOUT_MS = 2000;

export class SfuPool {
  readonly events = new EventEmitter<PoolEvents>();
  private readonly nodes: SfuNode[];
  private readonly rooms = new Map<string, RoomEntry>();
  private readonly log = getLogger("sfu.pool");
  private readonly restartListeners = new Set<RestartListener>();
  /** Nodes whose lost rooms are being made again: their new participants wait for it. */
  private readonly recovering = new Map<string, Promise<void>>();
  /** Per down node, the timer that gives it up. */
  private readonly deadTimers = new Map<string, NodeJS.Timeout>();
  /** Rooms moved off a node given up: destroyed there if it comes back without restarting. */
  private readonly orphans = new Map<string, RoomRef[]>();
  private readonly deadAfterMs: number;

  private constructor(nodes: SfuNode[], deadAfterMs: number) {
    this.nodes = nodes;
    this.deadAfterMs = deadAfterMs;
    for (const node of nodes) {
      node.events.on("up", () => {
        this.clearDeadTimer(node.id);
        this.destroyOrphans(node);
        this.events.emit("nodeUp", node.id);
      });
      node.events.on("down", (reason) => {
        this.armDeadTimer(node);
        this.events.emit("nodeDown", node.id, reason);
      });
      node.events.on("reset", () => void this.recover(node, () => this.lostRoomsOf(node)));
    }
  }

  /** Connects to every node (unreachable ones are retried in the background). */
  static async start(configs: SfuNodeConfig[], opts: PoolOptions = {}): Promise<SfuPool> {
    const ids = new Set(configs.map((c) => c.id));
    if (ids.size !== configs.length) throw new Error("sfu.nodes: node ids must be unique");
    const pool = new SfuPool(configs.map((c) => new SfuNode(c, opts)), opts.deadAfterMs ?? 5000);
    await Promise.all(pool.nodes.map((n) => n.start()));
    return pool;
  }

  /** Creates the room of a call on the least loaded node that is up. */
  async createRoom(callId: string, opts: RoomOptions = {}): Promise<RoomRef> {
    const roomId = `parley-${randomBytes(12).toString("hex")}`;
    const secret = randomBytes(24).toString("hex");
    let lastError: unknown = new SfuUnavailableError(this.nodes.length ? "no SFU node is up" : "no SFU node configured");
    for (const node of this.byLoad()) {
      try {
        return await this.place(node, { ref: { node: node.id, roomId, secret }, callId, opts });
      } catch (err) {
        lastError = err;
        this.log.warn({ sfuNode: node.id, callId, err: (err as Error).message }, "room creation failed on this node");
      }
    }
    throw lastError;
  }

  /**
   * Creates a lost room again with the same id and secret: on its node if that is up, else on
   * the least loaded one (the returned ref names the node).
   */
  async recreateRoom(ref: RoomRef, opts: RoomOptions = {}): Promise<RoomRef> {
    // A room this pool did not place (Parley restarted since) is made with the options given.
    const entry = this.rooms.get(ref.roomId) ?? { ref, callId: "", opts };
    const home = this.nodes.find((n) => n.id === ref.node && n.state === "up");
    const candidates = home ? [home] : this.byLoad();
    if (!candidates[0]) throw new SfuUnavailableError("no SFU node is up");
    return this.place(candidates[0], { ...entry, ref: { ...ref, node: candidates[0].id } }, true);
  }

  /** Destroys a room; a room that is already gone counts as destroyed. */
  async destroyRoom(ref: RoomRef): Promise<void> {
    const node = this.node(ref);
    this.rooms.delete(ref.roomId);
    try {
      await node.admin().destroy(ref.roomId, ref.secret);
    } catch (err) {
      if (!(err instanceof VideoRoomError && err.kind === "NO_SUCH_ROOM")) throw err;
    }
  }

  /** Removes a participant from the room (Janus closes its handles' PeerConnections). */
  async kick(ref: RoomRef, participantId: string): Promise<void> {
    await this.node(ref).admin().kick(ref.roomId, ref.secret, participantId);
  }

  async moderate(ref: RoomRef, participantId: string, mid: string, mute: boolean): Promise<void> {
    await this.node(ref).admin().moderate(ref.roomId, ref.secret, participantId, mid, mute);
  }

  async listParticipants(ref: RoomRef): Promise<RoomParticipant[]> {
    return this.node(ref).admin().listParticipants(ref.roomId);
  }

  async rtpForward(ref: RoomRef, publisherId: string, host: string, streams: { mid: string; port: number }[]): Promise<RtpForward[]> {
    return this.node(ref).admin().rtpForward(ref.roomId, ref.secret, publisherId, host, streams);
  }

  async stopRtpForward(ref: RoomRef, publisherId: string, streamId: number): Promise<void> {
    await this.node(ref).admin().stopRtpForward(ref.roomId, ref.secret, publisherId, streamId);
  }

  /** Whether the room exists in Janus (the answer of its node). */
  async roomExists(ref: RoomRef): Promise<boolean> {
    return this.node(ref).admin().exists(ref.roomId);
  }

  /**
   * Opens a participant's Janus session on the room's node; counted in its load until closed.
   * While the node's lost rooms are being made again, waits for that (the room may be one).
   */
  async openParticipant(ref: RoomRef, participantId: string): Promise<Participant> {
    await this.recovering.get(ref.node);
    // The room may have moved meanwhile (its node was given up): follow it.
    const current = this.rooms.get(ref.roomId)?.ref ?? ref;
    return new Participant(await this.node(current).openSession(), current, participantId);
  }

  /**
   * Takes over a participant's session that an earlier Parley process opened (recorded in the
   * store): claimed on the room's node. Throws JanusError 458 when Janus no longer has it.
   */
  async adoptParticipant(ref: RoomRef, participantId: string, sessionId: number): Promise<Participant> {
    return new Participant(await this.node(ref).adoptSession(sessionId), ref, participantId);
  }

  /**
   * Counts a room an earlier Parley process made (it lives on in Janus) as this pool's own: its
   * node's load, and its recovery should the node restart.
   */
  adoptRoom(ref: RoomRef, callId: string, opts: RoomOptions = {}): void {
    if (!this.rooms.has(ref.roomId)) this.rooms.set(ref.roomId, { ref, callId, opts });
  }

  /**
   * Told when a node lost rooms (restarted, or given up as dead); the pool waits for the promise
   * (rooms made again, records updated) before the lost participants' clients are told.
   * Returns the unsubscribe function.
   */
  onNodeRestarted(listener: RestartListener): () => void {
    this.restartListeners.add(listener);
    return () => this.restartListeners.delete(listener);
  }

  /** Subscribes to each node's connection going down and coming up again; returns the unsubscribe function. */
  onNodeState(listener: (nodeId: string, up: boolean) => void): () => void {
    const down = (nodeId: string) => listener(nodeId, false);
    const up = (nodeId: string) => listener(nodeId, true);
    this.events.on("nodeDown", down);
    this.events.on("nodeUp", up);
    return () => {
      this.events.off("nodeDown", down);
      this.events.off("nodeUp", up);
    };
  }

  health(): NodeHealth[] {
    return this.nodes.map((n) => ({ id: n.id, state: n.state, rooms: this.roomCount(n), participants: n.sessionCount, handles: n.handleCount, warm: n.warmCount }));
  }

  /**
   * Destroys Parley's rooms (best effort), then every session, socket and timer of every node.
   * With `keepMedia` (a Parley restart) rooms and participants' sessions stay in Janus for the
   * next process to adopt; only sockets and timers go.
   */
  async stop(opts: { keepMedia?: boolean } = {}): Promise<void> {
    for (const id of [...this.deadTimers.keys()]) this.clearDeadTimer(id);
    this.restartListeners.clear();
    const entries = opts.keepMedia ? [] : [...this.rooms.values()];
    this.rooms.clear();
    await Promise.all(
      entries.map(async ({ ref }) => {
        const node = this.nodes.find((n) => n.id === ref.node);
        if (node?.state !== "up") return;
        let timer: NodeJS.Timeout | undefined;
        const timeout = new Promise<void>((resolve) => (timer = setTimeout(resolve, DESTROY_ON_STOP_TIMEOUT_MS)));
        await Promise.race([node.admin().destroy(ref.roomId, ref.secret).catch(() => {}), timeout]);
        clearTimeout(timer);
      }),
    );
    await Promise.all(this.nodes.map((n) => n.stop({ keepSessions: opts.keepMedia === true })));
    this.events.removeAllListeners();
  }

  private async place(node: SfuNode, entry: RoomEntry, existingIsFine = false): Promise<RoomRef> {
    const { ref, opts } = entry;
    try {
      await node.admin().create({
        room: ref.roomId,
        secret: ref.secret,
        requireE2ee: opts.requireE2ee ?? true,
        publishers: opts.publishers ?? 32,
        bitrate: opts.bitrate,
        talking: opts.talking,
        opusDtx: opts.opusDtx,
      });
    } catch (err) {
      if (!(existingIsFine && err instanceof VideoRoomError && err.kind === "ROOM_EXISTS")) throw err;
    }
    this.rooms.set(ref.roomId, entry);
    this.log.info({ sfuNode: node.id, callId: entry.callId, janusRoom: ref.roomId }, "room placed");
    return ref;
  }

  /** Up nodes, least loaded first: fewest rooms + participants, then fewest rooms, then config order. */
  private byLoad(): SfuNode[] {
    const load = (n: SfuNode) => this.roomCount(n) + n.sessionCount;
    return this.nodes
      .filter((n) => n.state === "up")
      .map((n, i) => ({ n, i, load: load(n), rooms: this.roomCount(n) }))
      .sort((a, b) => a.load - b.load || a.rooms - b.rooms || a.i - b.i)
      .map((x) => x.n);
  }

  private roomCount(node: SfuNode): number {
    let count = 0;
    for (const e of this.rooms.values()) if (e.ref.node === node.id) count++;
    return count;
  }

  /** The node a room lives on now (a caller's ref may name the node it left). */
  private node(ref: RoomRef): SfuNode {
    const id = this.rooms.get(ref.roomId)?.ref.node ?? ref.node;
    const node = this.nodes.find((n) => n.id === id);
    if (!node) throw new SfuUnavailableError(`unknown SFU node ${id}`);
    return node;
  }

  /** Which of Parley's rooms on a restarted node are gone (asked in parallel). */
  private async lostRoomsOf(node: SfuNode): Promise<string[]> {
    const refs = [...this.rooms.values()].filter((e) => e.ref.node === node.id).map((e) => e.ref);
    const exists = await Promise.all(
      refs.map((ref) =>
        Promise.resolve()
          .then(() => node.admin().exists(ref.roomId))
          .catch(() => false),
      ),
    );
    return refs.filter((_, i) => !exists[i]).map((r) => r.roomId);
  }

  /**
   * The recovery order (see the top of the file): lost rooms made again by the listeners while
   * the node's new participants wait, then the lost participant sessions released.
   */
  private async recover(node: SfuNode, lostRooms: () => Promise<string[]>): Promise<void> {
    const run = (async () => {
      const lost = await lostRooms();
      this.log.warn({ sfuNode: node.id, lostRooms: lost.length }, node.state === "up" ? "Janus node restarted" : "Janus node given up");
      await Promise.allSettled([...this.restartListeners].map(async (l) => l(node.id, lost)));
      this.events.emit("nodeRestarted", node.id, lost);
    })();
    this.recovering.set(node.id, run);
    try {
      await run;
    } finally {
      if (this.recovering.get(node.id) === run) this.recovering.delete(node.id);
      node.releaseLost();
    }
  }

  private armDeadTimer(node: SfuNode): void {
    if (!this.deadAfterMs || this.deadTimers.has(node.id)) return;
    const timer = setTimeout(() => {
      this.deadTimers.delete(node.id);
      if (node.state === "up" || node.state === "stopped") return;
      if (!this.byLoad().length) {
        this.armDeadTimer(node); // nowhere to move its calls yet: look again later
        return;
      }
      void this.giveUp(node);
    }, this.deadAfterMs);
    timer.unref();
    this.deadTimers.set(node.id, timer);
  }

  private clearDeadTimer(id: string): void {
    clearTimeout(this.deadTimers.get(id));
    this.deadTimers.delete(id);
  }

  /** A node down too long: its rooms move to live nodes, its sessions are released as lost. */
  private async giveUp(node: SfuNode): Promise<void> {
    const refs = [...this.rooms.values()].filter((e) => e.ref.node === node.id).map((e) => e.ref);
    this.orphans.set(node.id, [...(this.orphans.get(node.id) ?? []), ...refs]);
    node.abandonSessions();
    await this.recover(node, async () => refs.map((r) => r.roomId));
    this.events.emit("nodeDead", node.id);
  }

  /** A node given up came back: the rooms that moved away are destroyed there (best effort). */
  private destroyOrphans(node: SfuNode): void {
    const refs = this.orphans.get(node.id);
    if (!refs) return;
    this.orphans.delete(node.id);
    for (const ref of refs) {
      if (this.rooms.get(ref.roomId)?.ref.node === node.id) continue; // it lives here again
      void Promise.resolve()
        .then(() => node.admin().destroy(ref.roomId, ref.secret))
        .catch(() => undefined);
    }
  }
}
