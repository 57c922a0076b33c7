// Supervision for the local deployment (scripts/dev.ts): a component whose process dies is
// started again, after a delay that doubles while restarts keep failing (capped), with a log line
// for each death and each restart; a process that stayed up long enough resets the delay. stop()
// ends the watching first, so that stopping the stack afterwards restarts nothing. This is what
// systemd's Restart=on-failure does for the units in deploy/systemd/, for the demo.
import type { ExitInfo, ManagedProcess } from "./proc.ts";
import type { Stack } from "./institutions.ts";

/** One thing to keep running: its current process, and how to start it again with the same config. */
export interface SupervisedComponent {
  readonly name: string;
  /** The process running now (a new one after restart()). */
  current(): Pick<ManagedProcess, "exited" | "pid">;
  /** Starts the component again; resolves once it is ready, rejects if it does not come up. */
  restart(): Promise<void>;
}

export interface SuperviseOptions {
  /** Delay before the first restart after a death (default 500 ms). */
  initialDelayMs?: number | undefined;
  /** The delay doubles with each restart (failed, or dying before stableAfterMs) up to this (default 30 s). */
  maxDelayMs?: number | undefined;
  /** A process that ran this long died of something new: the delay starts over (default 60 s). */
  stableAfterMs?: number | undefined;
  /** Where the log lines go (default console.error). */
  log?: ((line: string) => void) | undefined;
}

export interface Supervisor {
  /** Restarts done so far, by component name. */
  readonly restarts: ReadonlyMap<string, number>;
  /** Stops watching: no restart begins after this; waits for one in progress to settle. */
  stop(): Promise<void>;
}

export const SUPERVISE_DEFAULTS = { initialDelayMs: 500, maxDelayMs: 30_000, stableAfterMs: 60_000 } as const;

function describeExit(e: ExitInfo): string {
  if (e.error) return `could not be spawned (${e.error.message})`;
  return e.signal ? `was killed by ${e.signal}` : `exited with code ${e.code}`;
}

/** `ms`, or less if `signal` aborts first. */
function pause(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

/** Watches each component and restarts it when its process dies, until stop(). */
export function supervise(components: SupervisedComponent[], opts: SuperviseOptions = {}): Supervisor {
  const initial = opts.initialDelayMs ?? SUPERVISE_DEFAULTS.initialDelayMs;
  const max = opts.maxDelayMs ?? SUPERVISE_DEFAULTS.maxDelayMs;
  const stableAfter = opts.stableAfterMs ?? SUPERVISE_DEFAULTS.stableAfterMs;
  const log = opts.log ?? ((line: string) => console.error(line));
  const stopping = new AbortController();
  const restarts = new Map<string, number>(components.map((c) => [c.name, 0]));
  const ended = new Promise<"stop">((resolve) => stopping.signal.addEventListener("abort", () => resolve("stop"), { once: true }));

  async function watch(c: SupervisedComponent): Promise<void> {
    // Restarts since the component last stayed up for stableAfterMs: each doubles the next delay.
    let recent = 0;
    let upSince = Date.now();
    while (!stopping.signal.aborted) {
      const exit = await Promise.race([c.current().exited, ended]);
      if (exit === "stop") return;
      if (Date.now() - upSince >= stableAfter) recent = 0;
      let why = describeExit(exit);
      for (;;) {
        const delay = Math.min(initial * 2 ** recent++, max);
        log(`[supervise] ${c.name} ${why}; restarting in ${delay} ms`);
        await pause(delay, stopping.signal);
        if (stopping.signal.aborted) return;
        try {
          await c.restart();
          restarts.set(c.name, (restarts.get(c.name) ?? 0) + 1);
          upSince = Date.now();
          log(`[supervise] ${c.name} restarted (pid ${c.current().pid})`);
          break;
        } catch (err) {
          why = `did not come back (${String((err as Error).message ?? err).split("\n")[0]})`;
        }
      }
    }
  }

  const watching = Promise.all(components.map((c) => watch(c)));
  return {
    restarts,
    async stop() {
      stopping.abort();
      await watching;
    },
  };
}

/** Every process of the stack as a supervised component: Synapse, Janus, coturn and Parley of each institution. */
export function stackComponents(stack: Pick<Stack, "institutions">): SupervisedComponent[] {
  return stack.institutions.flatMap((inst) => {
    const out: SupervisedComponent[] = [
      { name: `synapse-${inst.name}`, current: () => inst.synapse.process, restart: () => inst.synapse.restart() },
    ];
    const { janus, coturn } = inst;
    if (janus) out.push({ name: `janus-${inst.name}`, current: () => janus.process, restart: () => janus.restart() });
    if (coturn) out.push({ name: `coturn-${inst.name}`, current: () => coturn.process, restart: () => coturn.restart() });
    out.push({ name: `parley-${inst.name}`, current: () => inst.parley.process, restart: () => inst.parley.restart() });
    return out;
  });
}
