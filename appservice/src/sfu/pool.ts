// SfuPool: every configured Janus node, least-loaded placement of rooms, and the registry of
// the rooms Parley created (what a restarted node has lost). A stopped pool leaves no timer,
// no socket, no map entry and none of its rooms in Janus.
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
  /** Plugin handles of those sessions. */
  handles: number;
}

export interface PoolEvents {
  /**
   * Janus lost the node's sessions (it restarted, or was unreachable past
   * reclaim_session_timeout). Every participant on it was lost (Participant.onLost);
   * `lostRoomIds` are Parley's rooms that no longer exist there: recreateRoom them and have
   * clients join and negotiate again.
   */
  nodeRestarted: [nodeId: string, lostRoomIds: string[]];
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

  private constructor(nodes: SfuNode[]) {
    this.nodes = nodes;
    for (const node of nodes) {
      node.events.on("up", () => this.events.emit("nodeUp", node.id));
      node.events.on("down", (reason) => this.events.emit("nodeDown", node.id, reason));
      node.events.on("reset", () => void this.nodeReset(node));
    }
  }

  /** Connects to every node (unreachable ones are retried in the background). */
  static async start(configs: SfuNodeConfig[], opts: SfuNodeOptions = {}): Promise<SfuPool> {
    const ids = new Set(configs.map((c) => c.id));
    if (ids.size !== configs.length) throw new Error("sfu.nodes: node ids must be unique");
    const pool = new SfuPool(configs.map((c) => new SfuNode(c, opts)));
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
    this.rooms.delete(ref.roomId);
    try {
      await this.node(ref).admin().destroy(ref.roomId, ref.secret);
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

  /** Opens a participant's Janus session on the room's node; counted in its load until closed. */
  async openParticipant(ref: RoomRef, participantId: string): Promise<Participant> {
    return new Participant(await this.node(ref).openSession(), ref, participantId);
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

  /** Subscribes to nodeRestarted; returns the unsubscribe function. */
  onNodeRestarted(listener: (nodeId: string, lostRoomIds: string[]) => void): () => void {
    this.events.on("nodeRestarted", listener);
    return () => this.events.off("nodeRestarted", listener);
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
    return this.nodes.map((n) => ({ id: n.id, state: n.state, rooms: this.roomCount(n), participants: n.sessionCount, handles: n.handleCount }));
  }

  /**
   * Destroys Parley's rooms (best effort), then every session, socket and timer of every node.
   * With `keepMedia` (a Parley restart) rooms and participants' sessions stay in Janus for the
   * next process to adopt; only sockets and timers go.
   */
  async stop(opts: { keepMedia?: boolean } = {}): Promise<void> {
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

  private node(ref: RoomRef): SfuNode {
    const node = this.nodes.find((n) => n.id === ref.node);
    if (!node) throw new SfuUnavailableError(`unknown SFU node ${ref.node}`);
    return node;
  }

  /** Which of Parley's rooms on a reset node are gone; then tells the call layer. */
  private async nodeReset(node: SfuNode): Promise<void> {
    const lost: string[] = [];
    for (const { ref } of [...this.rooms.values()].filter((e) => e.ref.node === node.id)) {
      const exists = await Promise.resolve()
        .then(() => node.admin().exists(ref.roomId))
        .catch(() => false);
      if (!exists) lost.push(ref.roomId);
    }
    this.log.warn({ sfuNode: node.id, lostRooms: lost.length }, "Janus node restarted");
    this.events.emit("nodeRestarted", node.id, lost);
  }
}
