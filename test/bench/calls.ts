// Calls benchmark: join -> first remote frame on screen through Parley (real client, Janus, two
// browsers), the same join with the joiner's browser on relay candidates only (through the
// institution's coturn), beside a raw Janus EchoTest join measured in the same run on the same machine.
// Prints BENCH <name> <value> <unit> lines. Runs inside scripts/isolated.sh (npm run bench:calls).
//   node test/bench/calls.ts [--joins 20] [--knocks 5]
// Then knock to first frame (knock.ts) on a two-institution stack of its own.
import { randomBytes } from "node:crypto";
import { readFileSync } from "node:fs";
import http from "node:http";
import path from "node:path";
import { parseArgs } from "node:util";
import type { Browser, Page } from "playwright-core";
import { renderJanusConfig } from "../../appservice/src/sfu/janusConfig.ts";
import { startInstitutions, type Institution } from "../../scripts/stack/institutions.ts";
import { startJanus } from "../../scripts/stack/janus.ts";
import { freePort } from "../../scripts/stack/ports.ts";
import { generateSelfSignedCert } from "../../scripts/stack/tls.ts";
import { inboundStats, launchChromium, signInToMeeting, trackPeerConnections } from "../support/browser.ts";
import { metric } from "../support/metrics.ts";
import { benchKnock } from "./knock.ts";
import { cpuProfile, joinTimeline, longTasksAfterJoin, paintedAfter, printLongTasks, printTimeline, recordLongTasks, SIGN_IN_TYPE_MS, signInPace, traceLine, traceRequests, watchKeyFrames } from "./joinTimeline.ts";
import { bench, percentile } from "./lib.ts";

const { values } = parseArgs({ options: { joins: { type: "string", default: "20" }, knocks: { type: "string", default: "5" } } });
const JOINS = Number(values.joins);
const KNOCKS = Number(values.knocks);
// A person looks at their preview a moment before pressing Join (PARLEY_BENCH_PREJOIN_DWELL_MS,
// default 0: Join as soon as the preview plays, as before). The others' media keys reach a device
// in the pre-join (keyShare.ts, "About to join"): with a dwell the join's first frames find them there.
const DWELL_MS = Number(process.env.PARLEY_BENCH_PREJOIN_DWELL_MS ?? 0);
// The joins come one after another, and each leave makes the host a fresh key, so a joiner finds
// a key younger than the grace period (10 s) and gets it as it is. PARLEY_BENCH_JOIN_GAP_MS waits
// that long between a leave and the next join: with more than the grace period, every join is
// one into an established call (the host's key ratcheted for the joiner).
const GAP_MS = Number(process.env.PARLEY_BENCH_JOIN_GAP_MS ?? 0);
// PARLEY_BENCH_METRICS=1: after the joins, the mean time of each kind of Parley's Janus requests
// (from Parley's own parley_janus_request_seconds histogram).
const METRICS = !!process.env.PARLEY_BENCH_METRICS;


/** The mean time of the Janus requests on a join's way, from Parley's own metrics. */
async function printJanusRequests(inst: Institution): Promise<void> {
  for (const request of ["create", "attach", "message(join)", "message(publish)", "message(start)", "trickle"]) {
    const [sum, n] = await Promise.all(["sum", "count"].map((s) => metric(inst, `parley_janus_request_seconds_${s}`, { request })));
    if (n) console.log(`janus ${request}: ${n} requests, mean ${((sum! / n) * 1000).toFixed(1)} ms`);
  }
}

/** Each page's console, printed if its join fails (the benchmark's only view into the client). */
const consoles = new WeakMap<Page, string[]>();

async function firstFrame(page: Page, host?: Page, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await inboundStats(page)).videoFramesDecoded === 0) {
    if (Date.now() > deadline) {
      for (const line of consoles.get(page) ?? []) console.error(`[joiner] ${line}`);
      for (const line of (host && consoles.get(host)?.slice(-200)) ?? []) console.error(`[host] ${line}`);
      throw new Error("no remote frame decoded");
    }
    await new Promise((r) => setTimeout(r, 20));
  }
}

/** Every RTCPeerConnection of the page gathers relay candidates only (what turn.relayOnly makes Parley ask). */
async function forceRelay(page: Page): Promise<void> {
  await page.addInitScript(() => {
    const Native = window.RTCPeerConnection;
    window.RTCPeerConnection = class extends Native {
      constructor(config?: RTCConfiguration) {
        super({ ...config, iceTransportPolicy: "relay" });
      }
    } as typeof RTCPeerConnection;
  });
}

/**
 * PARLEY_BENCH_TRACE=1: the page marks when the first remote video packets, frames and decoded
 * frames show in its own stats (polled in the page every 5 ms, no round trip to the benchmark),
 * so the timeline tells a key frame that came late from a key that did.
 */
async function markVideoArrival(page: Page): Promise<void> {
  await page.evaluate(() => {
    const seen = new Set<string>();
    const poll = async () => {
      const pcs = (window as unknown as { __parleyPcs?: RTCPeerConnection[] }).__parleyPcs ?? [];
      const totals = { packets: 0, frames: 0, keyframes: 0, decoded: 0 };
      for (const pc of pcs.filter((p) => p.connectionState !== "closed")) {
        (await pc.getStats()).forEach((s: Record<string, unknown>) => {
          if (s.type !== "inbound-rtp" || s.kind !== "video") return;
          totals.packets += Number(s.packetsReceived ?? 0);
          totals.frames += Number(s.framesReceived ?? 0);
          totals.keyframes += Number(s.keyFramesDecoded ?? 0);
          totals.decoded += Number(s.framesDecoded ?? 0);
        });
      }
      for (const [k, v] of Object.entries(totals)) {
        if (v > 0 && !seen.has(k)) {
          seen.add(k);
          performance.mark(`parley:video-${k}`);
        }
      }
      if (seen.size < 4) setTimeout(() => void poll(), 5);
    };
    void poll();
  });
}

async function signIn(browser: Browser, link: string, user: { userId: string; password: string }, opts: { relay?: boolean; onPage?: (page: Page) => void } = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  const page = await context.newPage();
  opts.onPage?.(page);
  const lines: string[] = [];
  consoles.set(page, lines);
  page.on("console", (m) => lines.push(`${new Date().toISOString().slice(11, 23)} ${m.type()}: ${m.text().slice(0, 500)}`));
  if (opts.relay) await forceRelay(page);
  await trackPeerConnections(page);
  await recordLongTasks(page);
  await page.goto(link);
  await signInToMeeting(page, user, { typeMs: SIGN_IN_TYPE_MS });
  // Devices open in pre-join, as a person waits for their preview before joining.
  await page.waitForFunction(() => {
    const v = document.querySelector<HTMLVideoElement>(".preview-video");
    return !!v && v.readyState >= 2;
  });
  if (DWELL_MS > 0) await page.waitForTimeout(DWELL_MS);
  return { context, page };
}

const stack = await startInstitutions({ count: 1, allow: () => [], janus: true });
const browser = await launchChromium();
const servers: http.Server[] = [];
let baselineJanus: Awaited<ReturnType<typeof startJanus>> | undefined;
let stopped = false;
try {
  const A = stack.institutions[0]!;
  const password = randomBytes(9).toString("base64url");
  const [host, guest] = await Promise.all([A.registerUser("host", { password }), A.registerUser("guest", { password })]);
  const link = `${A.parley.url}/#/call/${encodeURIComponent(A.alias("bench"))}`;

  // One participant publishing all along; each measured join is a second one arriving.
  const hostSide = await signIn(browser, link, { userId: host.userId, password });
  await hostSide.page.locator("#prejoin-join").click();
  await hostSide.page.locator(".call").waitFor();

  // Each join as the page times itself, as the EchoTest page does: from its Join handler (its
  // `join` mark) to its first remote picture presented (requestVideoFrameCallback on the tile's
  // video: the `remote-painted` mark). Not Playwright's click (actionability checks, then input
  // over CDP: 40-200 ms on a page this busy), not a poll.
  const parleyMs: number[] = [];
  const relayMs: number[] = [];
  // The figures of earlier stops, kept beside: from the benchmark's click to a decoded frame seen
  // by polling getStats over CDP every 20 ms (the EchoTest page polled its own every 100 ms).
  const polledMs: number[] = [];
  const timelines: Record<string, number>[] = [];
  /** The joiner's main thread in long tasks from its Join to its first frame. */
  const busyMs: number[] = [];
  // Direct and relay-only joins alternate, so both see the same machine load over the run.
  for (let i = 0; i < JOINS * 2; i++) {
    const relay = i % 2 === 1;
    let traced = null as ReturnType<typeof traceRequests> | null;
    // (Traced from the page's first request: PARLEY_BENCH_TRACE_BEFORE_MS shows the pre-join's.)
    // PARLEY_BENCH_PROFILE=page: the joiner's CPU profile from its page's opening (the sign-in and
    // the pre-join too), not from just before its Join.
    let fromPage: ReturnType<typeof cpuProfile> | undefined;
    const onPage = (p: Page) => {
      if (process.env.PARLEY_BENCH_TRACE) traced = traceRequests([["joiner", p], ["host", hostSide.page]]);
      if (process.env.PARLEY_BENCH_PROFILE === "page") fromPage = cpuProfile(p, 200);
    };
    const early = !relay && (process.env.PARLEY_BENCH_TRACE || process.env.PARLEY_BENCH_PROFILE === "page");
    const { context, page } = await signIn(browser, link, { userId: guest.userId, password }, { relay, ...(early ? { onPage } : {}) });
    if (traced) await markVideoArrival(page);
    // (Traced: the key frames asked and sent on both sides, to tell where the first picture waits.)
    const frames = traced ? await Promise.all([watchKeyFrames(page, "joiner"), watchKeyFrames(hostSide.page, "host")]) : [];
    const t0 = performance.now();
    const t0Epoch = Date.now();
    traced?.start(t0);
    // PARLEY_BENCH_TRACE: when the host's client sent and got media keys (its log), on the same clock.
    const hostKeys: string[] = [];
    const onHostLog = (m: { text(): string }) => {
      if (/media key/.test(m.text())) hostKeys.push(traceLine(t0, performance.now(), "host ", m.text().slice(0, 160)));
    };
    if (traced) hostSide.page.on("console", onHostLog);
    // PARLEY_BENCH_PROFILE=1: the joiner's page's CPU profile from just before its Join to its
    // first frame, as a .cpuprofile file for Chromium's DevTools (Performance panel).
    const profile = relay ? null : ((await fromPage) ?? (await cpuProfile(page, 200)));
    const clickedAt = performance.now();
    await page.locator("#prejoin-join").click();
    await firstFrame(page, hostSide.page);
    const seen = performance.now();
    if (profile) console.log(`the joiner's CPU profile: ${await profile.save(`parley-join-${i / 2 + 1}`)} (Join clicked ${(clickedAt - profile.from).toFixed(0)} ms into it)`);
    // The tile paints its first frame by itself; the poll above may see the frame decoded first.
    const painted = await paintedAfter(page, 0, 10_000);
    const timeline = await joinTimeline(page);
    if (!relay) busyMs.push(await longTasksAfterJoin(page, painted));
    if (traced) {
      // Where the page's Join mark falls on the requests' clock (ms from the click).
      const joinAt = await page.evaluate(() => performance.timeOrigin + (performance.getEntriesByName("parley:join").at(-1)?.startTime ?? NaN));
      const joinerKeys = (consoles.get(page) ?? []).filter((l) => /\[parley:(e2ee|chat)\]/.test(l));
      console.log(`join ${i / 2 + 1}: first frame seen by the poll at ${(seen - t0).toFixed(0)} ms from the click, the page's Join at ${(joinAt - performance.timeOrigin - t0).toFixed(0)} ms; page marks from its Join: ${JSON.stringify(timeline)}\n${[...traced.stop(), ...(await Promise.all(frames.map((f) => f.stop(t0Epoch)))).flat()].sort((a, b) => parseInt(a) - parseInt(b)).join("\n")}\n${hostKeys.join("\n")}\nthe joiner's key log:\n${joinerKeys.join("\n")}`);
      hostSide.page.off("console", onHostLog);
    }
    (relay ? relayMs : parleyMs).push(timeline["remote-painted"]!);
    if (!relay) {
      polledMs.push(seen - t0);
      timelines.push(timeline);
    }
    await page.locator("#call-leave").click();
    await context.close();
    if (GAP_MS > 0) await new Promise((r) => setTimeout(r, GAP_MS));
  }

  // Baseline: the same Janus build, EchoTest plugin, a minimal page with no Matrix, no Parley.
  const dir = path.join(stack.dir, "echotest-janus");
  const [wsPort, adminWsPort] = [await freePort("127.0.0.1"), await freePort("127.0.0.1")];
  const cert = await generateSelfSignedCert({ dir, ip: "127.0.0.1", name: "dtls" });
  const apiSecret = randomBytes(32).toString("hex");
  const files = renderJanusConfig({
    wsPort, adminWsPort, apiSecret, adminSecret: randomBytes(32).toString("hex"), videoroomAdminKey: randomBytes(32).toString("hex"),
    rtpPortRange: [30000, 30999], certPem: cert.certPath, certKey: cert.keyPath, reclaimSessionTimeoutS: 30,
    iceEnforceList: process.env.PARLEY_MEDIA_IFACE || undefined,
  });
  // Parley's config disables every plugin but VideoRoom; the baseline needs EchoTest back.
  files["janus.jcfg"] = files["janus.jcfg"]!.replace("libjanus_echotest.so,", "");
  baselineJanus = await startJanus({ dir, wsUrl: `ws://127.0.0.1:${wsPort}`, configFiles: files, plugins: ["libjanus_echotest.so"] });
  const html = readFileSync(path.join(import.meta.dirname, "echotest.html"));
  const server = http.createServer((_req, res) => res.writeHead(200, { "content-type": "text/html" }).end(html));
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", () => r()));
  const pagePort = (server.address() as { port: number }).port;
  const echoMs: number[] = [];
  const echoPolledMs: number[] = [];
  for (let i = 0; i < JOINS; i++) {
    const context = await browser.newContext();
    const page = await context.newPage();
    const q = new URLSearchParams({ janus: `ws://127.0.0.1:${wsPort}`, apisecret: apiSecret, minFrames: "1", maxPolls: "400" });
    await page.goto(`http://127.0.0.1:${pagePort}/?${q}`);
    const result = await page.waitForFunction(() => {
      const r = (window as unknown as { __result?: { state: string; msToFirstFrame?: number | null; error?: string } }).__result;
      return r && (r.state === "done" || r.state === "error") ? r : undefined;
    }, undefined, { timeout: 30_000 });
    const r = (await result.jsonValue()) as { state: string; msToFirstFrame?: number | null; msToFirstPaint?: number | null; error?: string };
    if (r.state !== "done" || !r.msToFirstFrame || !r.msToFirstPaint) throw new Error(`echotest failed: ${r.error ?? JSON.stringify(r)}`);
    echoMs.push(r.msToFirstPaint);
    echoPolledMs.push(r.msToFirstFrame);
    await context.close();
  }

  const p50 = percentile(parleyMs, 50);
  const e50 = percentile(echoMs, 50);
  bench("join_to_first_remote_frame_p50", p50, "ms");
  bench("join_to_first_remote_frame_p95", percentile(parleyMs, 95), "ms");
  bench("turn_relay_join_p50", percentile(relayMs, 50), "ms");
  bench("turn_relay_join_p95", percentile(relayMs, 95), "ms");
  bench("baseline_janus_echotest_first_frame_p50", e50, "ms");
  bench("baseline_janus_echotest_first_frame_p95", percentile(echoMs, 95), "ms");
  bench("join_vs_echotest_p50_ratio", p50 / e50, "x");
  // As measured until 30 November (see polledMs), for comparison with earlier runs.
  bench("polled_join_click_to_first_frame_p50", percentile(polledMs, 50), "ms");
  bench("polled_baseline_echotest_first_frame_p50", percentile(echoPolledMs, 50), "ms");
  bench("polled_join_vs_echotest_p50_ratio", percentile(polledMs, 50) / percentile(echoPolledMs, 50), "x");
  console.log(`samples: ${JOINS} Parley joins, ${JOINS} relay-only Parley joins, ${JOINS} EchoTest joins; ${signInPace()}, Join pressed ${DWELL_MS} ms after the preview played${GAP_MS ? `, ${GAP_MS} ms between a leave and the next join` : ""}`);
  printTimeline("join", timelines, polledMs);
  // Each join's figure, in the order taken: a run's p50 moves by 100-500 ms on a 2-core machine,
  // so A/B comparisons pool these over several runs of each variant.
  console.log(`join samples (ms): ${parleyMs.map((v) => v.toFixed(0)).join(" ")}; EchoTest samples (ms): ${echoMs.map((v) => v.toFixed(0)).join(" ")}`);
  printLongTasks("joiner", busyMs);
  // The knock runs on its own two institutions, on an otherwise idle machine like the joins: the
  // host's call above (a page publishing and encrypting media), its homeserver and Janus, and the
  // EchoTest's Janus stop first (left running, they took a core from the knock's browsers and
  // servers, and not from its plain-Synapse baseline).
  if (METRICS) await printJanusRequests(A);
  await hostSide.context.close();
  await baselineJanus?.stop();
  baselineJanus = undefined;
  await stack.stop();
  stopped = true;
  if (KNOCKS > 0) await benchKnock(browser, KNOCKS, p50);
} finally {
  await browser.close();
  for (const s of servers) s.close();
  await baselineJanus?.stop();
  if (!stopped) await stack.stop();
}
