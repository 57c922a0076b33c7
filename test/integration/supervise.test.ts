// Supervision of the local deployment on the real stack, as scripts/dev.ts runs it: each of
// Janus, Parley, coturn and Synapse SIGKILLed comes back by itself (a new process, Parley's
// /health ok again), with a log line naming what died and how.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { HealthReport } from "../../appservice/src/http/health.ts";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { tcpConnects } from "../../scripts/stack/ports.ts";
import { stackComponents, supervise, type Supervisor } from "../../scripts/stack/supervise.ts";
import { waitFor } from "../support/matrix.ts";

let stack: Stack;
let A: Institution;
let supervisor: Supervisor | undefined;
const lines: string[] = [];
let failed = false;

beforeAll(async () => {
  stack = await startInstitutions({ count: 1, allow: () => [], janus: true, turn: true });
  A = stack.institutions[0]!;
  supervisor = supervise(stackComponents(stack), { initialDelayMs: 200, log: (l) => lines.push(l) });
});

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  if (failed) console.error(lines.join("\n"));
  await supervisor?.stop();
  await stack?.stop({ keep: failed || undefined });
});

/** /health is ok in a check made after `since` (a report may be reused for health.cacheMs). */
async function healthOk(since = 0): Promise<boolean> {
  try {
    const res = await fetch(`${A.parley.url}/health`);
    const report = (await res.json()) as HealthReport;
    return res.status === 200 && report.status === "ok" && Date.parse(report.checkedAt) > since;
  } catch {
    return false;
  }
}

/** Waits until the component runs as a new process (not `pid`) and `ready` holds. */
const back = (name: string, pid: () => number, old: number, ready: () => Promise<boolean>, timeoutMs = 90_000) =>
  waitFor(`${name} back`, async () => (pid() !== old && (await ready()) ? true : undefined), timeoutMs);

describe("the dev stack restarts what dies", () => {
  it("starts healthy, every component watched", async () => {
    expect(await healthOk()).toBe(true);
    expect(lines).toEqual([]);
    expect([...supervisor!.restarts.keys()].sort()).toEqual(["coturn-a", "janus-a", "parley-a", "synapse-a"]);
  });

  it("Janus SIGKILLed comes back; Parley reconnects and /health is ok again", async () => {
    const old = A.janus!.process.pid;
    const since = Date.now();
    await A.janus!.kill9();
    await back("janus", () => A.janus!.process.pid, old, () => healthOk(since));
    expect(lines).toContain("[supervise] janus-a was killed by SIGKILL; restarting in 200 ms");
    expect(supervisor!.restarts.get("janus-a")).toBe(1);
  });

  it("Parley SIGKILLed comes back and answers /health ok", async () => {
    const old = A.parley.pid;
    await A.parley.kill9();
    await back("parley", () => A.parley.pid, old, () => healthOk());
    expect(lines).toContain("[supervise] parley-a was killed by SIGKILL; restarting in 200 ms");
    expect(supervisor!.restarts.get("parley-a")).toBe(1);
  });

  it("coturn SIGKILLed comes back on its port", async () => {
    const turn = A.coturn!;
    const old = turn.process.pid;
    await turn.process.kill9();
    await back("coturn", () => turn.process.pid, old, () => tcpConnects(turn.ip, turn.port));
    expect(supervisor!.restarts.get("coturn-a")).toBe(1);
  });

  it("Synapse SIGKILLed comes back, and Parley's homeserver check is ok again", async () => {
    const old = A.synapse.process.pid;
    const since = Date.now();
    await A.synapse.kill9();
    await back("synapse", () => A.synapse.process.pid, old, () => healthOk(since));
    expect(supervisor!.restarts.get("synapse-a")).toBe(1);
  });
});
