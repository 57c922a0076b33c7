// Zero egress, proven: a complete federated call (institutions A and B, Chromium, E2EE media
// through A's Janus, each institution with its coturn) during which every server-side process
// (both Synapses, Parleys, Januses, coturns) runs under strace (PARLEY_TRACE_NETWORK), and every
// page's requests are watched. Fails, naming each attempt (process, address, port, protocol), if a
// process addressed anything outside the stack (127.0.0.0/8; DNS anywhere counts as outside) or a
// page requested anything from an origin other than its institution's own (its client and
// homeserver) and, for the partner's page, the hosting institution's call API.
// A canary process and a canary page make the same checks see an outside address, every run, so
// the check cannot pass because it sees nothing.
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { Institution } from "../../scripts/stack/institutions.ts";
import { startProcess, TRACE_NETWORK_ENV } from "../../scripts/stack/proc.ts";
import { launchChromium, mediaFlowing } from "../support/browser.ts";
import { describeEgress, readNetworkTraces, tracedProcesses, tracersGone, watchOrigins, type NetworkAttempt } from "../support/egress.ts";
import { startFederatedCall, tearDownOnFailureKeeping, type FederatedCall } from "../support/federatedCall.ts";

let call: FederatedCall;
let stopped = false;
const pageEgress: string[] = [];
const onFailure = tearDownOnFailureKeeping();

const origin = (url: string) => new URL(url).origin;
/** An institution's own origins: its web client and call API (Parley), its homeserver's client API and discovery. */
const own = (i: Institution) => [origin(i.parley.url), origin(i.synapse.clientUrl), origin(i.synapse.federationUrl)];

/** Stops the stack (once), keeping its files, and reads what its processes addressed. */
async function stackAttempts(): Promise<NetworkAttempt[]> {
  if (!stopped) {
    stopped = true;
    await call.browser.close();
    await call.stack.stop({ keep: true });
    await tracersGone(call.stack.dir);
  }
  return readNetworkTraces(call.stack.dir);
}

beforeAll(async () => {
  process.env[TRACE_NETWORK_ENV] = "1";
  call = await startFederatedCall({
    slug: "egress-call",
    beforeOpen: {
      alice: async (page, { A }) => watchOrigins(page.context(), "Alice's page (A)", () => own(A), pageEgress),
      // Bob's client is B's; the call is A's, so his page also talks to A's call API (signalling, join).
      bob: async (page, { A, B }) => watchOrigins(page.context(), "Bob's page (B)", () => [...own(B), origin(A.parley.url)], pageEgress),
    },
  });
}, 180_000);

afterAll(async () => {
  delete process.env[TRACE_NETWORK_ENV];
  // Screenshots only while the pages are open (the process check closes them).
  const { failed } = await onFailure(stopped ? undefined : call);
  if (!call) return;
  if (!stopped) {
    await call.browser.close();
    await call.stack.stop({ keep: failed || undefined });
  } else if (failed || process.env.PARLEY_KEEP_STACK === "1") {
    console.error(`stack data, logs and network traces kept in ${call.stack.dir}`);
  } else {
    await fs.rm(call.stack.dir, { recursive: true, force: true });
  }
});

describe("a federated E2EE call contacts nothing outside the stack", () => {
  it("the call works: media both ways, encrypted end to end", async () => {
    const [a, b] = await Promise.all([mediaFlowing(call.alicePage, 30_000), mediaFlowing(call.bobPage, 30_000)]);
    expect(a.videoFramesDecoded).toBeGreaterThan(0);
    expect(b.videoFramesDecoded).toBeGreaterThan(0);
    for (const page of [call.alicePage, call.bobPage]) await page.locator('#call-e2ee[data-state="encrypted"]').waitFor({ timeout: 15_000 });
  });

  it("no page requested anything from another origin", () => {
    expect(pageEgress, `requests to other origins:\n${pageEgress.join("\n")}`).toEqual([]);
  });

  it("no server-side process addressed anything outside 127.0.0.0/8 (nor DNS)", async () => {
    const attempts = await stackAttempts();
    // Every process was traced, and the traces saw the stack's own traffic: an empty check proves nothing.
    const traced = tracedProcesses(call.stack.dir);
    for (const inst of ["a", "b"]) {
      for (const proc of ["synapse", "parley", "janus", "coturn"]) {
        expect(traced.some((t) => t.startsWith(`${inst}/${proc}`)), `${inst}/${proc} traced: ${traced.join(", ")}`).toBe(true);
      }
    }
    const seen = new Set(attempts.map((a) => a.process.split("/").slice(0, 2).join("/")));
    for (const busy of ["a/synapse", "b/synapse", "a/parley", "b/parley", "a/janus"]) expect(seen, busy).toContain(busy);
    const egress = describeEgress(attempts);
    expect(egress, `outside the stack:\n${egress.join("\n")}`).toEqual([]);
  });

  it("the checks see an outside attempt when there is one (canary process and canary page)", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "parley-egress-canary-"));
    try {
      process.env[TRACE_NETWORK_ENV] = "1";
      const script = `
        const net = require("node:net"), dgram = require("node:dgram"), dns = require("node:dns");
        net.connect({ host: "192.0.2.1", port: 443 }).on("error", () => {});
        const u = dgram.createSocket("udp4"); u.send("x", 3478, "198.51.100.7", () => u.close());
        dns.lookup("matrix.org", () => {});
        setTimeout(() => process.exit(0), 500);`;
      const canary = await startProcess({ name: "canary", command: process.execPath, args: ["-e", script], dir });
      await canary.exited;
      await tracersGone(dir);
      const egress = describeEgress(readNetworkTraces(dir));
      expect(egress.some((l) => /^canary .*connect TCP 192\.0\.2\.1:443/.test(l)), egress.join("\n")).toBe(true);
      expect(egress.some((l) => /^canary .*UDP 198\.51\.100\.7:3478/.test(l)), egress.join("\n")).toBe(true);
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
    const seen: string[] = [];
    const canaryBrowser = await launchChromium();
    try {
      const context = await canaryBrowser.newContext();
      watchOrigins(context, "canary page", () => [origin(call.A.parley.url)], seen);
      const page = await context.newPage();
      await page.goto("about:blank");
      await page.setContent(`<img src="http://192.0.2.1/pixel.png">`);
      await expect.poll(() => seen.length).toBeGreaterThan(0);
      expect(seen[0]).toMatch(/^canary page image http:\/\/192\.0\.2\.1\/pixel\.png/);
    } finally {
      await canaryBrowser.close();
    }
  });
});
