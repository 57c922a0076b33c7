// The dev stack's supervisor with fake processes (fake timers): a death is restarted after the
// initial delay with a log line naming the component and how it died; failed restarts back off
// (doubling, capped); a process that stayed up resets the delay; stop() cancels a pending restart,
// waits for one in progress, and nothing is restarted after it.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { ExitInfo } from "../../../scripts/stack/proc.ts";
import { supervise, type Supervisor } from "../../../scripts/stack/supervise.ts";

let nextPid = 100;

interface FakeComponent {
  name: string;
  current(): { pid: number; exited: Promise<ExitInfo> };
  restart(): Promise<void>;
  /** The current process dies. */
  die(info?: ExitInfo): void;
  /** restart() calls so far (failed ones included). */
  attempts: number;
  /** The next n restart() calls fail (the process exits before it is ready). */
  failNext: number;
  /** While set, restart() waits for this before it resolves. */
  gate: Promise<void> | undefined;
}

function fakeProcess(): { pid: number; exited: Promise<ExitInfo>; die: (i: ExitInfo) => void } {
  let die!: (i: ExitInfo) => void;
  const exited = new Promise<ExitInfo>((r) => (die = r));
  return { pid: nextPid++, exited, die };
}

function component(name: string): FakeComponent {
  let proc = fakeProcess();
  const c: FakeComponent = {
    name,
    current: () => proc,
    async restart() {
      c.attempts++;
      if (c.gate) await c.gate;
      if (c.failNext > 0) {
        c.failNext--;
        throw new Error(`${name} exited with code 1 before it was ready\n--- log tail ---\nboom`);
      }
      proc = fakeProcess();
    },
    die: (info = { code: null, signal: "SIGKILL" }) => proc.die(info),
    attempts: 0,
    failNext: 0,
    gate: undefined,
  };
  return c;
}

let lines: string[];
let supervisor: Supervisor | undefined;
const opts = () => ({ initialDelayMs: 500, maxDelayMs: 4000, stableAfterMs: 60_000, log: (l: string) => lines.push(l) });

beforeEach(() => {
  vi.useFakeTimers();
  lines = [];
});

afterEach(async () => {
  await supervisor?.stop();
  supervisor = undefined;
  vi.useRealTimers();
});

describe("supervise", () => {
  it("restarts a component that died, after the initial delay, and says so", async () => {
    const janus = component("janus-a");
    const other = component("synapse-a");
    supervisor = supervise([janus, other], opts());
    const before = janus.current().pid;
    janus.die();
    await vi.advanceTimersByTimeAsync(499);
    expect(janus.attempts).toBe(0);
    expect(lines).toEqual(["[supervise] janus-a was killed by SIGKILL; restarting in 500 ms"]);
    await vi.advanceTimersByTimeAsync(1);
    expect(janus.attempts).toBe(1);
    expect(janus.current().pid).not.toBe(before);
    expect(lines.at(-1)).toBe(`[supervise] janus-a restarted (pid ${janus.current().pid})`);
    expect(supervisor.restarts.get("janus-a")).toBe(1);
    expect(other.attempts).toBe(0);

    // The new process is watched too; dying young, it waits twice as long.
    janus.die({ code: 1, signal: null });
    await vi.advanceTimersByTimeAsync(1000);
    expect(lines).toContain("[supervise] janus-a exited with code 1; restarting in 1000 ms");
    expect(supervisor.restarts.get("janus-a")).toBe(2);
  });

  it("failed restarts back off, doubling up to the cap; each failure is logged with its first line", async () => {
    const parley = component("parley-a");
    parley.failNext = 5;
    supervisor = supervise([parley], opts());
    parley.die();
    const delays = [500, 1000, 2000, 4000, 4000, 4000];
    for (const [i, d] of delays.entries()) {
      await vi.advanceTimersByTimeAsync(d - 1);
      expect(parley.attempts).toBe(i);
      await vi.advanceTimersByTimeAsync(1);
      expect(parley.attempts).toBe(i + 1);
    }
    expect(lines.filter((l) => l.includes("restarting in")).map((l) => Number(/in (\d+) ms/.exec(l)![1]))).toEqual(delays);
    expect(lines).toContain("[supervise] parley-a did not come back (parley-a exited with code 1 before it was ready); restarting in 1000 ms");
    expect(lines.at(-1)).toMatch(/^\[supervise\] parley-a restarted \(pid \d+\)$/);
    expect(supervisor.restarts.get("parley-a")).toBe(1);
  });

  it("a process that stayed up past stableAfterMs starts the delay over; one that died young keeps it growing", async () => {
    const c = component("coturn-a");
    c.failNext = 2;
    supervisor = supervise([c], opts());
    c.die();
    await vi.advanceTimersByTimeAsync(500 + 1000 + 2000);
    expect(c.attempts).toBe(3);
    // Died again at once: the delay goes on from where it was.
    c.die();
    await vi.advanceTimersByTimeAsync(4000);
    expect(c.attempts).toBe(4);
    expect(lines.filter((l) => l.includes("restarting in")).at(-1)).toContain("restarting in 4000 ms");
    // Up for a minute, then died: back to the initial delay.
    await vi.advanceTimersByTimeAsync(60_000);
    c.die();
    await vi.advanceTimersByTimeAsync(500);
    expect(c.attempts).toBe(5);
    expect(lines.filter((l) => l.includes("restarting in")).at(-1)).toContain("restarting in 500 ms");
  });

  it("stop() cancels a pending restart, and nothing restarts after it (the stack stopping is not a death)", async () => {
    const a = component("janus-a");
    const b = component("parley-a");
    supervisor = supervise([a, b], opts());
    a.die();
    await vi.advanceTimersByTimeAsync(100);
    await supervisor.stop();
    b.die({ code: 0, signal: null });
    await vi.advanceTimersByTimeAsync(120_000);
    expect([a.attempts, b.attempts]).toEqual([0, 0]);
    expect(lines.some((l) => l.includes("parley-a"))).toBe(false);
  });

  it("stop() waits for a restart in progress, then watches no more", async () => {
    const a = component("synapse-a");
    let open!: () => void;
    a.gate = new Promise<void>((r) => (open = r));
    supervisor = supervise([a], opts());
    a.die();
    await vi.advanceTimersByTimeAsync(500);
    expect(a.attempts).toBe(1);
    let stopped = false;
    const stopping = supervisor.stop().then(() => (stopped = true));
    await vi.advanceTimersByTimeAsync(10);
    expect(stopped).toBe(false);
    open();
    await stopping;
    a.gate = undefined;
    a.die();
    await vi.advanceTimersByTimeAsync(120_000);
    expect(a.attempts).toBe(1);
  });
});
