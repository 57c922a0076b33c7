// Janus faults in a real 3-person call across two institutions (Alice and Carol of A, Bob of B;
// A hosts the call, so A's Janus carries it), in Chromium with E2EE: Janus SIGKILLed and started
// again ten times in a row, each time every stream flowing again in every browser; and with two
// Janus nodes at A, the call moving to the live one when its node dies for good.
// Runs inside scripts/isolated.sh, so media stays on 127.77.0.1.
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { everyoneFlowing, resetCounts, startThreePersonCall, streamsNow, tileCount, type ThreePersonCall } from "../support/faults.ts";

const TRIALS = Number(process.env.PARLEY_FAULT_TRIALS ?? 10);
let failed = false;
afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

describe("Janus SIGKILLed and restarted at once", () => {
  let call: ThreePersonCall;
  beforeAll(async () => {
    call = await startThreePersonCall({ slug: "faults-janus", stack: { logLevel: process.env.PARLEY_E2E_LOG_LEVEL ?? "info" } });
  }, 240_000);
  afterAll(async () => {
    if (failed && call) for (const [name, page] of Object.entries(call.pages)) await page.screenshot({ path: `${call.stack.dir}/${name}.png` }).catch(() => undefined);
    await call?.stop({ keep: failed || undefined });
  });

  it(`every stream flows again in every browser, ${TRIALS} times in a row`, async () => {
    // The fresh call up first (60 s, as faultsParley and lastN: a third joiner's key can take 20-30 s on a loaded machine).
    await everyoneFlowing(call, 60_000);
    for (let trial = 1; trial <= TRIALS; trial++) {
      resetCounts(call);
      const before = await streamsNow(call);
      const t0 = performance.now();
      await call.A.janus!.restart({ kill9: true });
      const flowing = await everyoneFlowing(call, 30_000, before).catch((err: Error) => {
        throw new Error(`trial ${trial}: ${err.message}`);
      });
      console.error(`trial ${trial}: every stream flowing ${Math.round(flowing - t0)} ms after the SIGKILL (Janus started in ${call.A.janus!.startupMs} ms)`);
      for (const page of call.all) expect(await tileCount(page)).toBe(3);
      // Without flapping: each client started its media over once, and no subscription failed.
      expect([...call.counts.values()]).toEqual(call.all.map(() => ({ restarts: 1, subscribeFailures: 0 })));
    }
    // The store kept one call for the meeting all along.
    const active = (await call.A.parleyStore().activeCalls()).filter((c) => c.sfu);
    expect(active).toHaveLength(1);
  }, 600_000);
});

describe("a Janus node dies for good, a second one is configured", () => {
  let call: ThreePersonCall;
  const deadNodeSeconds = 3;
  beforeAll(async () => {
    call = await startThreePersonCall({
      slug: "faults-janus-dead",
      stack: {
        logLevel: process.env.PARLEY_E2E_LOG_LEVEL ?? "info",
        janusNodes: (i) => (i === 0 ? 2 : 1),
        sfu: () => ({ deadNodeSeconds }),
      },
    });
  }, 240_000);
  afterAll(async () => {
    if (failed && call) for (const [name, page] of Object.entries(call.pages)) await page.screenshot({ path: `${call.stack.dir}/${name}.png` }).catch(() => undefined);
    await call?.stop({ keep: failed || undefined });
  });

  it("the call moves to the live node: every stream flows again there and the store names it", async () => {
    // The fresh call up first (60 s, as faultsParley and lastN: a third joiner's key can take 20-30 s on a loaded machine).
    await everyoneFlowing(call, 60_000);
    const store = call.A.parleyStore();
    const [before] = (await store.activeCalls()).filter((c) => c.sfu);
    expect(before).toBeDefined();
    const nodes = call.A.parley.config.sfu.nodes.map((n) => n.id);
    expect(nodes).toEqual(["janus-a", "janus-a2"]);
    const home = nodes.indexOf(before!.sfu!.node);
    const streams = await streamsNow(call);
    const killedAt = performance.now();
    await call.A.januses[home]!.kill9();
    const flowing = await everyoneFlowing(call, 60_000, streams);
    console.error(`the call flows on the other node ${Math.round(flowing - killedAt)} ms after the SIGKILL (detection ${deadNodeSeconds} s)`);
    const after = (await store.activeCalls()).filter((c) => c.sfu);
    expect(after).toHaveLength(1);
    expect(after[0]!.callId).toBe(before!.callId);
    expect(after[0]!.sfu!.node).toBe(nodes[1 - home]);
    expect(after[0]!.sfu!.room).toBe(before!.sfu!.room);
    for (const page of call.all) expect(await tileCount(page)).toBe(3);
  }, 180_000);
});
