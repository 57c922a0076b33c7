// One lifecycle for a running service: each thing that started is recorded with how it stops,
// and `stop()` unwinds them in reverse order. A failed start and a normal stop use the same
// list, so there is no second teardown to keep in step with the first.
import type { Logger } from "../log.ts";

/** Anything with a stop: a component, a listener, a handle returned by a wiring function. */
export interface Stoppable {
  stop(): void | Promise<void>;
}

export class Lifecycle {
  private readonly started: { name: string; stop: () => void | Promise<void> }[] = [];
  private stopping: Promise<void> | undefined;
  private readonly log: Pick<Logger, "error">;

  constructor(log: Pick<Logger, "error">) {
    this.log = log;
  }

  /** Records `thing` as started (it stops with `stop`, or its own stop()); returns it. */
  add<T extends Stoppable>(name: string, thing: T): T;
  add<T>(name: string, thing: T, stop: (thing: T) => void | Promise<void>): T;
  add<T>(name: string, thing: T, stop?: (thing: T) => void | Promise<void>): T {
    if (this.stopping) throw new Error(`lifecycle: '${name}' started after stop()`);
    const s = stop ?? ((t: T) => (t as Stoppable).stop());
    this.started.push({ name, stop: () => s(thing) });
    return thing;
  }

  /** Runs `start` and records what it returns; a failure records nothing. */
  async start<T extends Stoppable>(name: string, start: () => T | Promise<T>): Promise<T> {
    return this.add(name, await start());
  }

  /** The names of what is running, in start order. */
  names(): string[] {
    return this.started.map((s) => s.name);
  }

  /**
   * Stops everything in reverse start order; a failing stop is logged and the rest still stop.
   * Idempotent: later calls wait for the first.
   */
  stop(): Promise<void> {
    this.stopping ??= (async () => {
      for (const s of this.started.splice(0).reverse()) {
        try {
          await s.stop();
        } catch (err) {
          this.log.error({ err, what: s.name }, "could not stop cleanly");
        }
      }
    })();
    return this.stopping;
  }
}

/** Runs `build` with a fresh lifecycle; if it throws, what it had started is unwound first. */
export async function withLifecycle<T>(log: Pick<Logger, "error">, build: (life: Lifecycle) => Promise<T>): Promise<T> {
  const life = new Lifecycle(log);
  try {
    return await build(life);
  } catch (err) {
    await life.stop();
    throw err;
  }
}
