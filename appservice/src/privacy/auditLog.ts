// The attendance and audit log's writer. A join must not wait for the store: record() only
// queues (synchronously, never throwing), and the queue goes to the store in batches, on a timer
// or when a batch is full. Nothing is lost silently: the queue is bounded (privacy.auditQueueMax),
// an event past the bound is counted and logged, a failed batch is put back (if the bound allows,
// else counted as dropped) and tried again, and stop() writes what is left.
import { getLogger } from "../log.ts";
import type { Clock } from "../calls/ports.ts";
import type { AuditEvent, PersonalDataStore } from "../store/store.ts";
import type { UserIds } from "./userIds.ts";

/** An event as callers give it: user ids as they are (pseudonymised here), the time added here. */
export interface AuditInput {
  action: string;
  roomId?: string | undefined;
  callId?: string | undefined;
  actor?: string | undefined;
  target?: string | undefined;
  outcome?: string | undefined;
  details?: Record<string, unknown> | undefined;
}

export type Audit = (event: AuditInput) => void;

export interface AuditLogConfig {
  /** Events waiting for the store at most; more are dropped (counted, logged). */
  maxQueued: number;
  /** Events per store write at most. */
  batchSize: number;
  /** How long an event may wait for its batch. */
  flushMs: number;
}

export interface AuditLogDeps {
  store: Pick<PersonalDataStore, "appendAudit">;
  clock: Clock;
  ids: Pick<UserIds, "recorded">;
}

export class AuditLog {
  private readonly cfg: AuditLogConfig;
  private readonly deps: AuditLogDeps;
  private queue: AuditEvent[] = [];
  private timer: NodeJS.Timeout | undefined;
  private writing: Promise<void> | undefined;
  private droppedTotal = 0;
  /** Drops not yet reported in a log line, after the first of their run (logged at once). */
  private unreported = 0;
  private dropRun = false;
  private stopped = false;
  private readonly log = getLogger("privacy.audit");

  constructor(cfg: AuditLogConfig, deps: AuditLogDeps) {
    this.cfg = cfg;
    this.deps = deps;
  }

  /** Events dropped since start (queue full, or a failed write that found the queue full). */
  get dropped(): number {
    return this.droppedTotal;
  }

  get queued(): number {
    return this.queue.length;
  }

  readonly record: Audit = (e) => {
    const { ids } = this.deps;
    const event: AuditEvent = {
      at: this.deps.clock.now(),
      action: e.action,
      roomId: e.roomId ?? null,
      callId: e.callId ?? null,
      actor: e.actor === undefined ? null : ids.recorded(e.actor),
      target: e.target === undefined ? null : ids.recorded(e.target),
      outcome: e.outcome ?? null,
      details: e.details && Object.keys(e.details).length ? e.details : null,
    };
    if (this.stopped || this.queue.length >= this.cfg.maxQueued) {
      this.drop(1, this.stopped ? "audit log stopped" : "audit queue full");
      return;
    }
    this.queue.push(event);
    // A full batch goes now, not when the first of its events' timer runs out.
    if (this.queue.length === this.cfg.batchSize) {
      clearTimeout(this.timer);
      this.timer = undefined;
      this.soon(0);
    } else this.soon(this.cfg.flushMs);
  };

  /** Writes every queued event now (the next batch waits for one in flight). */
  async flush(): Promise<void> {
    clearTimeout(this.timer);
    this.timer = undefined;
    while (this.writing) await this.writing.catch(() => undefined);
    while (this.queue.length) {
      const batch = this.queue.splice(0, this.cfg.batchSize);
      this.writing = this.write(batch);
      const ok = await this.writing.then(() => true, () => false);
      this.writing = undefined;
      if (!ok) break;
    }
    this.report();
  }

  /** Writes what is left; later events are dropped (counted). */
  async stop(): Promise<void> {
    await this.flush();
    this.stopped = true;
    clearTimeout(this.timer);
    this.timer = undefined;
  }

  private async write(batch: AuditEvent[]): Promise<void> {
    try {
      await this.deps.store.appendAudit(batch);
    } catch (err) {
      // Back to the front of the queue, as much as the bound allows; tried again later.
      const room = Math.max(0, this.cfg.maxQueued - this.queue.length);
      this.queue.unshift(...batch.slice(0, room));
      if (batch.length > room) this.drop(batch.length - room, "audit events not written and the queue is full");
      this.log.error({ err, events: batch.length, queued: this.queue.length }, "audit events not written; trying again");
      if (!this.stopped) this.soon(Math.max(this.cfg.flushMs, 1000));
      throw err;
    }
  }

  private soon(ms: number): void {
    if (this.timer || this.stopped) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, ms);
    this.timer.unref();
  }

  private drop(n: number, why: string): void {
    this.droppedTotal += n;
    // The first drop of a run is logged at once; the rest are summed into one line per flush.
    if (this.dropRun) this.unreported += n;
    else {
      this.dropRun = true;
      this.log.error({ dropped: n, total: this.droppedTotal, max: this.cfg.maxQueued }, `${why}: audit events dropped`);
    }
    if (this.stopped) this.report();
    else this.soon(this.cfg.flushMs);
  }

  private report(): void {
    if (this.unreported) this.log.error({ dropped: this.unreported, total: this.droppedTotal }, "audit events dropped since the last report");
    this.unreported = 0;
    this.dropRun = false;
  }
}
