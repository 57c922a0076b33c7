// Synthetic participants of one call as a group the bench drives: in this thread, or spread over
// worker_threads (each worker its own event loop and sockets, so one busy loop does not drop
// everybody's packets). Participants join through Parley's call API either way; the group hands
// out stats snapshots, a talker switch and a close.
import { randomBytes } from "node:crypto";
import { Worker } from "node:worker_threads";
import type { Institution } from "../../scripts/stack/institutions.ts";
import { registerUsers, type RegisteredUser } from "../../scripts/stack/users.ts";
import { inBatches, joinParley, type SyntheticHandle, type Tuning } from "./call.ts";
import type { ParticipantStats } from "./participant.ts";
import type { RoomRef } from "../../appservice/src/sfu/index.ts";

export interface Population {
  readonly size: number;
  /** Registers and joins `count` more participants. */
  add(count: number): Promise<void>;
  /** Participant i talks (or stops). */
  talk(i: number, on: boolean): void;
  /** Every participant's stats, in join order. */
  snapshot(): Promise<ParticipantStats[]>;
  /** Resolves when every subscription asked for so far is answered. */
  settled(): Promise<void>;
  close(): Promise<void>;
}

export interface PopulationOptions {
  inst: Institution;
  room: string;
  tuning: Tuning;
  prefix?: string;
  concurrency?: number;
}

export interface JoinSpec {
  user: RegisteredUser;
  clientUrl: string;
  callApi: string;
  room: string;
  tuning: Tuning;
}

/** A baseline participant straight on Janus, from a worker (its own Janus connection). */
export interface JanusSpec {
  janus: { url: string; apiSecret: string; adminKey: string };
  room: RoomRef;
  id: string;
  tuning: Tuning;
}

async function users(o: PopulationOptions, from: number, count: number): Promise<RegisteredUser[]> {
  return registerUsers(o.inst.synapse, o.prefix ?? "synthetic", count, { password: PASSWORD, from, concurrency: o.concurrency ?? 4 });
}
const PASSWORD = randomBytes(12).toString("base64url");

const spec = (o: PopulationOptions, user: RegisteredUser): JoinSpec => ({
  user,
  clientUrl: o.inst.synapse.clientUrl,
  callApi: o.inst.parley.url,
  room: o.room,
  tuning: o.tuning,
});

/** Everyone in this thread; `join` makes the next participants (Parley or straight Janus). */
export class LocalPopulation implements Population {
  readonly handles: SyntheticHandle[] = [];
  private readonly join: (from: number, count: number) => Promise<SyntheticHandle[]>;

  constructor(join: (from: number, count: number) => Promise<SyntheticHandle[]>) {
    this.join = join;
  }

  /** Participants joining through Parley, in this thread. */
  static parley(o: PopulationOptions): LocalPopulation {
    return new LocalPopulation(async (from, count) => inBatches(await users(o, from, count), o.concurrency ?? 4, (u) => joinParley(spec(o, u)), from === 1));
  }

  get size(): number {
    return this.handles.length;
  }

  async add(count: number): Promise<void> {
    this.handles.push(...(await this.join(this.handles.length + 1, count)));
  }

  talk(i: number, on: boolean): void {
    this.handles[i]?.talk(on);
  }

  async snapshot(): Promise<ParticipantStats[]> {
    return this.handles.map((h) => h.participant.stats());
  }

  async settled(): Promise<void> {
    await Promise.all(this.handles.map((h) => h.participant.settled()));
  }

  async close(): Promise<void> {
    await Promise.all(this.handles.map((h) => h.close()));
  }
}

type Reply = { req: number; ok: true; value?: unknown } | { req: number; ok: false; error: string };

/** Participants spread round-robin over `workers` worker threads (test/load/worker.ts). */
export class WorkerPopulation implements Population {
  /** Parley participants, or (with `janus`) baseline participants straight on a Janus room. */
  private readonly o: PopulationOptions & { janus?: Omit<JanusSpec, "id"> };
  private readonly workers: Worker[];
  /** Participant i lives in worker placement[i]. */
  private readonly placement: number[] = [];
  private readonly waiting = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private nextReq = 1;

  constructor(o: PopulationOptions & { janus?: Omit<JanusSpec, "id"> }, workers: number) {
    this.o = o;
    this.workers = Array.from({ length: workers }, () => {
      const w = new Worker(new URL("./worker.ts", import.meta.url), { env: process.env });
      w.on("message", (m: Reply) => {
        const p = this.waiting.get(m.req);
        if (!p) return;
        this.waiting.delete(m.req);
        if (m.ok) p.resolve(m.value);
        else p.reject(new Error(m.error));
      });
      w.on("error", (err) => console.error(`load worker: ${String(err)}`));
      return w;
    });
  }

  get size(): number {
    return this.placement.length;
  }

  private ask<T>(worker: number, message: Record<string, unknown>): Promise<T> {
    const req = this.nextReq++;
    return new Promise<T>((resolve, reject) => {
      this.waiting.set(req, { resolve: resolve as (v: unknown) => void, reject });
      this.workers[worker]!.postMessage({ ...message, req });
    });
  }

  async add(count: number): Promise<void> {
    const from = this.placement.length;
    const janus = this.o.janus;
    if (janus) {
      const ids = Array.from({ length: count }, (_, k) => from + k);
      await inBatches(ids, this.o.concurrency ?? 4, async (i) => {
        const worker = i % this.workers.length;
        await this.ask(worker, { op: "joinJanus", index: i, spec: { ...janus, id: `synthetic${i + 1}` } });
        this.placement[i] = worker;
      });
      return;
    }
    const us = await users(this.o, from + 1, count);
    await inBatches(us, this.o.concurrency ?? 4, async (u, k) => {
      const i = from + k;
      const worker = i % this.workers.length;
      await this.ask(worker, { op: "join", index: i, spec: spec(this.o, u) });
      this.placement[i] = worker;
    }, from === 0);
  }

  talk(i: number, on: boolean): void {
    const worker = this.placement[i];
    if (worker !== undefined) this.workers[worker]!.postMessage({ op: "talk", index: i, on, req: 0 });
  }

  async snapshot(): Promise<ParticipantStats[]> {
    const parts = await Promise.all(this.workers.map((_, w) => this.ask<[number, ParticipantStats][]>(w, { op: "stats" })));
    const out: ParticipantStats[] = [];
    for (const part of parts) for (const [i, s] of part) out[i] = s;
    return out;
  }

  async settled(): Promise<void> {
    await Promise.all(this.workers.map((_, w) => this.ask(w, { op: "settled" })));
  }

  async close(): Promise<void> {
    await Promise.all(this.workers.map((_, w) => this.ask(w, { op: "close" }).catch(() => undefined)));
    await Promise.all(this.workers.map((w) => w.terminate()));
  }
}
