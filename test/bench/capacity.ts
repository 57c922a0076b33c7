// Participants per call on this machine: Chromium participants (fake camera and microphone,
// simulcast, as the real client sends) join one call one by one until packet loss passes 1 % or
// the machine's CPU saturates. Prints the count, Janus's CPU per forwarded stream, and the
// machine's CPU at each step. Runs inside scripts/isolated.sh (npm run bench:capacity).
//   node test/bench/capacity.ts [--max 12] [--settle 6000] [--window 5000]
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import { parseArgs } from "node:util";
import type { Page } from "playwright-core";
import { startInstitutions } from "../../scripts/stack/institutions.ts";
import { launchChromium, signInToMeeting, trackPeerConnections } from "../support/browser.ts";
import { bench } from "./lib.ts";

const { values } = parseArgs({
  options: { max: { type: "string", default: "12" }, settle: { type: "string", default: "6000" }, window: { type: "string", default: "5000" } },
});
const MAX = Number(values.max);
const SETTLE_MS = Number(values.settle);
const WINDOW_MS = Number(values.window);
const TICKS = 100; // USER_HZ on Linux
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

function processTicks(pid: number): number {
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]!.split(" ");
  return Number(fields[11]) + Number(fields[12]); // utime + stime
}
function machineTicks(): { busy: number; total: number } {
  const cpu = readFileSync("/proc/stat", "utf8").split("\n")[0]!.split(/\s+/).slice(1).map(Number);
  const idle = cpu[3]! + cpu[4]!;
  const total = cpu.reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/** Inbound RTP packets received and lost on one page, summed over its peer connections. */
async function packets(page: Page): Promise<{ received: number; lost: number }> {
  return page.evaluate(async () => {
    const out = { received: 0, lost: 0 };
    for (const pc of (window as unknown as { __parleyPcs: RTCPeerConnection[] }).__parleyPcs) {
      if (pc.connectionState === "closed") continue;
      (await pc.getStats()).forEach((s: Record<string, unknown>) => {
        if (s.type !== "inbound-rtp") return;
        out.received += Number(s.packetsReceived ?? 0);
        out.lost += Math.max(0, Number(s.packetsLost ?? 0));
      });
    }
    return out;
  });
}

const stack = await startInstitutions({ count: 1, allow: () => [], janus: true });
const browser = await launchChromium();
try {
  const A = stack.institutions[0]!;
  const janusPid = A.janus!.process.pid;
  const password = randomBytes(9).toString("base64url");
  const link = `${A.parley.url}/#/call/${encodeURIComponent(A.alias("capacity"))}`;
  const pages: Page[] = [];
  let best = 0;
  let perStream = 0;
  for (let n = 1; n <= MAX; n++) {
    const user = await A.registerUser(`p${n}`, { password });
    const context = await browser.newContext({ viewport: { width: 640, height: 360 } });
    const page = await context.newPage();
    await trackPeerConnections(page);
    await page.goto(link);
    await signInToMeeting(page, { userId: user.userId, password });
    await page.locator("#prejoin-join").click({ timeout: 30_000 });
    await page.locator(".call").waitFor();
    pages.push(page);
    await sleep(SETTLE_MS);

    const [p0, j0, m0] = [await Promise.all(pages.map(packets)), processTicks(janusPid), machineTicks()];
    await sleep(WINDOW_MS);
    const [p1, j1, m1] = [await Promise.all(pages.map(packets)), processTicks(janusPid), machineTicks()];
    const received = p1.reduce((a, p, i) => a + p.received - p0[i]!.received, 0);
    const lost = p1.reduce((a, p, i) => a + p.lost - p0[i]!.lost, 0);
    const loss = received + lost > 0 ? lost / (received + lost) : 0;
    const janusCpu = (j1 - j0) / TICKS / (WINDOW_MS / 1000); // cores
    const machineCpu = (m1.busy - m0.busy) / (m1.total - m0.total); // fraction of all cores
    const streams = n * (n - 1) * 2; // each participant's audio and video to every other
    console.log(
      `participants ${n}: forwarded streams ${streams}, loss ${(loss * 100).toFixed(2)} %, ` +
        `janus ${(janusCpu * 100).toFixed(1)} % of a core, machine ${(machineCpu * 100).toFixed(1)} %`,
    );
    if (n > 1 && (loss > 0.01 || machineCpu > 0.95)) break;
    best = n;
    if (streams > 0) perStream = janusCpu / streams;
  }
  bench("participants_per_call_max", best, "participants");
  bench("janus_cpu_per_forwarded_stream", perStream * 100, "%core");
  console.log("(Chromium renders every participant on the same 2 cores; the limit is the machine's, not Janus's alone.)");
} finally {
  await browser.close();
  await stack.stop();
}
