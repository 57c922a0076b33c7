// Participants per call on this machine, measuring Parley + Janus and not Chromium: synthetic
// participants (test/load: werift ICE/DTLS/SRTP, VP8 simulcast 3 layers + Opus DTX, E2EE frames)
// join one call through Parley's call API and signalling in steps (5, 10, 20, 30, ... --max). At
// each step, after a settle time, a window measures receive loss over every synthetic subscriber,
// CPU of Janus, Parley, this load generator and the machine, and the packets forwarded (the sum of
// what the subscribers received). Stops at loss >= 1 %, a saturated machine, or a join that fails.
// Then a baseline in the same run: as many participants (the largest passing step) publish and
// subscribe straight on a Janus VideoRoom (Janus's WebSocket API, no Parley process), each viewer
// forwarded as many videos at the same layer as Parley had Janus forward at that step (observed
// at the subscribers), and Janus's cost per forwarded packet is compared.
// One talker at a time, changing every --talk-every ms (speaker changes drive last-N).
// Runs inside scripts/isolated.sh (npm run bench:capacity).
//   node test/bench/capacity.ts [--max 50] [--settle 8000] [--window 10000] [--fps 30]
//     [--videos 9] [--tile 360] [--talk-every 4000] [--baseline <n>|0] [--stop-loss 0.01]
import { availableParallelism } from "node:os";
import { parseArgs } from "node:util";
import { createSfu } from "../../appservice/src/sfu/index.ts";
import { startInstitutions, type Institution } from "../../scripts/stack/institutions.ts";
import { startJanusParticipants, sumStats, type Tuning } from "../load/call.ts";
import { FeedRegistry } from "../load/planes.ts";
import { LocalPopulation, WorkerPopulation, type Population } from "../load/population.ts";
import type { ParticipantStats } from "../load/participant.ts";
import { bench, CpuWindow, percentile, udpDrops } from "./lib.ts";

const { values } = parseArgs({
  options: {
    max: { type: "string", default: "50" },
    settle: { type: "string", default: "8000" },
    window: { type: "string", default: "10000" },
    fps: { type: "string", default: "30" },
    videos: { type: "string", default: "9" },
    tile: { type: "string", default: "360" },
    "talk-every": { type: "string", default: "4000" },
    baseline: { type: "string" },
    "stop-loss": { type: "string", default: "0.01" },
    "stop-machine": { type: "string", default: "0.95" },
    // werift's own SRTP/RTP receive stack for every packet instead of test/load/leanReceive.ts.
    "werift-receive": { type: "boolean", default: false },
    // Worker threads hosting the Parley participants (0: all in this thread).
    workers: { type: "string", default: "2" },
  },
});
const MAX = Number(values.max);
const SETTLE_MS = Number(values.settle);
const WINDOW_MS = Number(values.window);
const STOP_LOSS = Number(values["stop-loss"]);
const STOP_MACHINE = Number(values["stop-machine"]);
const TUNING: Tuning = { fps: Number(values.fps), leanReceive: !values["werift-receive"], view: { videos: Number(values.videos), tileHeight: Number(values.tile) } };
const CORES = availableParallelism();
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** 5, 10, then every 10 up to max (max itself included). */
function steps(max: number): number[] {
  const out = [5, 10].filter((n) => n < max);
  for (let n = 20; n < max; n += 10) out.push(n);
  out.push(max);
  return out;
}

interface Step {
  n: number;
  loss: number;
  forwardedPerSecond: number;
  /** Packets the synthetic participants sent per second. */
  sentPerSecond: number;
  janusCores: number;
  parleyCores: number;
  loadgenCores: number;
  machine: number;
  janusUsPerPacket: number;
  /** What the viewers were forwarded in the window: videos per viewer (median) and the commonest layer. */
  shape: { videos: number; layer: number };
  /** Subscriptions that failed so far (all participants), and one reason. */
  errors: { count: number; example: string | null };
  /** Datagrams the kernel dropped in the window (full receive buffers / failed sends). */
  udp: { rcvbuf: number; sndbuf: number };
  /** Simulcast layers each publisher sends (median), after Janus's bitrate estimate (REMB). */
  layersSent: number;
}

/** Per viewer, the video streams that received packets between two readings, and their layers. */
function shapeOf(before: ParticipantStats[], after: ParticipantStats[]): { videos: number; layer: number } {
  const counts: number[] = [];
  const layers = [0, 0, 0];
  after.forEach((a, i) => {
    const prior = new Map(before[i]?.inbound.map((s) => [s.mid, s.packets]));
    const live = a.inbound.filter((s) => s.kind === "video" && s.packets > (prior.get(s.mid) ?? 0));
    counts.push(live.length);
    for (const s of live) if (s.layer !== null) layers[s.layer]!++;
  });
  return { videos: percentile(counts, 50) || 0, layer: layers.indexOf(Math.max(...layers)) };
}

/** One talker at a time, the next one every `everyMs`. */
function rotateTalker(people: Population, everyMs: number): () => void {
  let k = 0;
  const timer = setInterval(() => {
    if (people.size === 0) return;
    people.talk(k % people.size, false);
    k++;
    people.talk(k % people.size, true);
  }, everyMs);
  return () => clearInterval(timer);
}

/** Settles, then measures one window over `people` with Janus's (and Parley's) CPU. */
async function measure(people: Population, pids: { janus: number; parley?: number }): Promise<Step> {
  await people.settled();
  await sleep(SETTLE_MS);
  const statsBefore = await people.snapshot();
  const before = sumStats(statsBefore);
  const udp0 = udpDrops();
  const cpu = new CpuWindow([pids.janus, ...(pids.parley ? [pids.parley] : [])]);
  await sleep(WINDOW_MS);
  const statsAfter = await people.snapshot();
  const after = sumStats(statsAfter);
  const udp1 = udpDrops();
  const shape = shapeOf(statsBefore, statsAfter);
  const received = after.received - before.received;
  const lost = after.lost - before.lost;
  const janusCores = cpu.cores(pids.janus);
  const seconds = cpu.seconds();
  return {
    n: people.size,
    loss: received + lost > 0 ? lost / (received + lost) : 0,
    forwardedPerSecond: received / seconds,
    sentPerSecond: (after.sent - before.sent) / seconds,
    janusCores,
    parleyCores: pids.parley ? cpu.cores(pids.parley) : 0,
    loadgenCores: cpu.self(),
    machine: cpu.machine(),
    janusUsPerPacket: received > 0 ? (janusCores * seconds * 1e6) / received : Number.NaN,
    shape,
    udp: { rcvbuf: udp1.rcvbuf - udp0.rcvbuf, sndbuf: udp1.sndbuf - udp0.sndbuf },
    errors: { count: statsAfter.reduce((a, x) => a + x.errors, 0), example: statsAfter.find((x) => x.lastError)?.lastError ?? null },
    layersSent: percentile(statsAfter.map((x) => x.sent.layers), 50),
  };
}

function report(label: string, s: Step): void {
  const pct = (x: number) => `${(x * 100).toFixed(1)} %`;
  console.log(
    `${label} ${s.n}: forwarded ${s.forwardedPerSecond.toFixed(0)} packets/s, loss ${(s.loss * 100).toFixed(2)} %, ` +
      `sent ${s.sentPerSecond.toFixed(0)} packets/s, janus ${pct(s.janusCores)} core (${s.janusUsPerPacket.toFixed(1)} us/packet), parley ${pct(s.parleyCores)} core, ` +
      `loadgen ${pct(s.loadgenCores)} core, machine ${pct(s.machine)}; udp drops ${s.udp.rcvbuf} rcvbuf ${s.udp.sndbuf} sndbuf; each viewer got ${s.shape.videos} videos, mostly layer ${s.shape.layer}; publishers send ${s.layersSent} layers`,
  );
}

async function capacity(A: Institution): Promise<Step | undefined> {
  const workers = Number(values.workers);
  const o = { inst: A, room: A.alias("capacity"), tuning: TUNING };
  const people: Population = workers > 0 ? new WorkerPopulation(o, workers) : LocalPopulation.parley(o);
  const stopTalking = rotateTalker(people, Number(values["talk-every"]));
  let best: Step | undefined;
  try {
    for (const n of steps(MAX)) {
      try {
        await people.add(n - people.size);
      } catch (err) {
        console.log(`participants ${n}: a join failed, stopping: ${String(err)}`);
        break;
      }
      const step = await measure(people, { janus: A.janus!.process.pid, parley: A.parley.pid });
      report("participants", step);
      // The machine is shared: it counts as saturated by this call only when Janus, Parley and the
      // load generator are most of what keeps it busy.
      const ours = step.janusCores + step.parleyCores + step.loadgenCores;
      const saturated = step.machine >= STOP_MACHINE && ours >= 0.75 * step.machine * CORES;
      if (step.machine >= STOP_MACHINE && !saturated) console.log(`(the machine is busy with other work: ${(ours * 100).toFixed(0)} % core is this call's)`);
      if (step.errors.count > 0) console.log(`${step.errors.count} subscriptions failed, e.g. ${step.errors.example}`);
      if (step.loss >= STOP_LOSS || saturated || step.errors.count > 0) {
        console.log(`stopping: ${step.loss >= STOP_LOSS ? "loss" : saturated ? "machine saturated" : "subscriptions failed"}`);
        break;
      }
      best = step;
    }
  } finally {
    stopTalking();
    await people.close();
  }
  return best;
}

/** A tile height that makes the agreed layer rule pick `layer`. */
const TILE_FOR_LAYER = [100, 360, 720];

async function baseline(A: Institution, n: number, shape: { videos: number; layer: number }): Promise<Step> {
  const j = A.janus!;
  const sfu = await createSfu({ nodes: [{ id: "baseline", url: j.wsUrl, apiSecret: j.apiSecret, adminKey: j.videoroomAdminKey }] });
  const tuning = { ...TUNING, view: { videos: shape.videos, tileHeight: TILE_FOR_LAYER[shape.layer]! } };
  const workers = Number(values.workers);
  const registry = new FeedRegistry();
  let people: Population | undefined;
  let stopTalking = () => {};
  try {
    // Parley caps every publisher of a large call (meetings.media.largeCall, REMB): the same cap here,
    // so that Janus takes in the same layers in both runs (the synthetic senders follow REMB).
    const large = A.parley.config.meetings.media.largeCall;
    const room = await sfu.createRoom(`baseline-${Date.now()}`, { publishers: n + 1, ...(n >= large.from ? { bitrate: large.publisherBitrate } : {}) });
    // Generated as the Parley run was: in the same number of worker threads.
    people =
      workers > 0
        ? new WorkerPopulation({ inst: A, room: "", tuning, janus: { janus: { url: j.wsUrl, apiSecret: j.apiSecret, adminKey: j.videoroomAdminKey }, room, tuning } }, workers)
        : new LocalPopulation((from, count) => startJanusParticipants({ target: { sfu, room, registry }, count, from, tuning }));
    stopTalking = rotateTalker(people, Number(values["talk-every"]));
    await people.add(n);
    const step = await measure(people, { janus: j.process.pid });
    report("baseline (Janus only)", step);
    return step;
  } finally {
    stopTalking();
    await people?.close();
    await sfu.stop();
  }
}

const stack = await startInstitutions({
  count: 1,
  allow: () => [],
  janus: true,
  // Every synthetic participant signals from this one address.
  calls: () => ({ limits: { socketsPerAddress: 10_000 } }),
});
try {
  const A = stack.institutions[0]!;
  const best = await capacity(A);
  bench("participants_per_call_max", best?.n ?? 0, "participants");
  if (best) {
    bench("janus_us_per_forwarded_packet", best.janusUsPerPacket, "us");
    bench("parley_cpu_per_participant", (best.parleyCores * 100) / best.n, "%core");
    bench("loadgen_cpu_per_participant", (best.loadgenCores * 100) / best.n, "%core");
    // What the generator costs per packet it sends or receives (sealing, SRTP, RTP both ways).
    bench("loadgen_us_per_packet", (best.loadgenCores * 1e6) / (best.sentPerSecond + best.forwardedPerSecond), "us");
  }
  const n = values.baseline !== undefined ? Number(values.baseline) : (best?.n ?? 5);
  if (n > 0) {
    // Janus alone forwards what Parley had it forward at its largest passing step.
    const base = await baseline(A, n, best?.shape ?? { videos: n - 1, layer: 1 });
    bench("baseline_janus_us_per_forwarded_packet", base.janusUsPerPacket, "us");
    bench("baseline_loadgen_cpu_per_participant", (base.loadgenCores * 100) / base.n, "%core");
    if (best) {
      bench("janus_us_per_forwarded_packet_parley_over_baseline", best.janusUsPerPacket / base.janusUsPerPacket, "x");
      bench("forwarded_packets_per_second_parley_over_baseline", best.forwardedPerSecond / base.forwardedPerSecond, "x");
    }
  }
} finally {
  await stack.stop();
}
