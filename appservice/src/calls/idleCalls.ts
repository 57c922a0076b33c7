// Calls nobody is in do not hold an SFU room forever: a call whose SFU room has had no session
// (granted or held) for `idleMs` is ended by the call service (see CallService.endIdle). Driven
// by sweep(), which the app calls on a timer and unit tests call with a fake clock.
import type { CallRecord } from "../store/store.ts";
import type { Clock } from "./ports.ts";

export interface IdleCallsDeps {
  clock: Clock;
  /** The active calls. */
  activeCalls(): Promise<CallRecord[]>;
  occupied(callId: string): boolean;
  endIdle(call: CallRecord): Promise<void>;
}

export class IdleCalls {
  /** callId -> when the call was first seen empty. */
  private readonly emptySince = new Map<string, number>();
  private readonly idleMs: number;
  private readonly deps: IdleCallsDeps;

  constructor(idleMs: number, deps: IdleCallsDeps) {
    this.idleMs = idleMs;
    this.deps = deps;
  }

  /** Ends the calls idle for `idleMs` or longer; returns them. */
  async sweep(): Promise<CallRecord[]> {
    const now = this.deps.clock.now();
    const idle: CallRecord[] = [];
    const seen = new Set<string>();
    for (const call of await this.deps.activeCalls()) {
      if (!call.sfu) continue;
      seen.add(call.callId);
      if (this.deps.occupied(call.callId)) {
        this.emptySince.delete(call.callId);
        continue;
      }
      const since = this.emptySince.get(call.callId);
      if (since === undefined) this.emptySince.set(call.callId, now);
      else if (now - since >= this.idleMs) idle.push(call);
    }
    for (const callId of [...this.emptySince.keys()]) if (!seen.has(callId)) this.emptySince.delete(callId);
    for (const call of idle) {
      this.emptySince.delete(call.callId);
      await this.deps.endIdle(call);
    }
    return idle;
  }

  /** How often to sweep so an idle call ends at most half its idle time late (1 s .. 30 s). */
  static periodMs(idleMs: number): number {
    return Math.min(30_000, Math.max(1000, Math.floor(idleMs / 2)));
  }
}
