// The view reporter: tells the server what this viewer's layout shows (how many remote videos,
// each visible tile's height in device pixels, the pins) and a rough downlink estimate, so it
// forwards the right last-N videos at the right simulcast layers. Changes are debounced (a resize
// storm sends one message), spaced at least minIntervalMs apart, and only sent when the request
// differs from what the server last got; a (re)connected call gets the current view again. A
// server that does not know `view` yet refuses it: that is logged once and the call goes on.
import { ParleyClientError } from "../errors.ts";
import { getLogger } from "../log.ts";
import type { Store } from "../state/store.ts";
import type { ViewReport } from "../state/layoutModel.ts";
import { realTimers, type Timers } from "../timers.ts";
import type { CallSnapshot } from "./call.ts";
import { viewRequest, type ViewRequest } from "./viewProtocol.ts";

/** Receive totals of the subscriber's connection at one moment. */
export interface ReceiveSample {
  at: number;
  bytes: number;
  packets: number;
  lost: number;
}

/** Sums the inbound RTP streams of a stats report (audio and video). */
export function receiveSample(stats: RTCStatsReport | null, at: number): ReceiveSample | null {
  if (!stats) return null;
  const sample = { at, bytes: 0, packets: 0, lost: 0 };
  stats.forEach((s: { type?: string; bytesReceived?: number; packetsReceived?: number; packetsLost?: number }) => {
    if (s.type !== "inbound-rtp") return;
    sample.bytes += s.bytesReceived ?? 0;
    sample.packets += s.packetsReceived ?? 0;
    sample.lost += Math.max(0, s.packetsLost ?? 0);
  });
  return sample;
}

export interface DownlinkOptions {
  /** Samples older than this are forgotten: the rate and loss are over this window. */
  windowMs?: number;
  /** Loss at or above this share means the downlink is full: the estimate drops to what arrives. */
  lossHigh?: number;
  /** Loss below this lets an estimate grow by `growth` per sample, until it no longer limits anything. */
  lossLow?: number;
  growth?: number;
  /** An estimate above this is no limit at all (dropped). */
  maxKbps?: number;
  /** Never estimate below this (the server still needs room for everyone's audio). */
  minKbps?: number;
}

/**
 * A simple receive-side estimate from the bytes received rate and the loss over a few seconds: no
 * limit while nothing is lost; with heavy loss the downlink carries about what arrives now (a bit
 * less, to drain the queues); with little loss again the estimate grows back until it is no limit.
 */
export class DownlinkEstimator {
  private readonly o: Required<DownlinkOptions>;
  private samples: ReceiveSample[] = [];
  private estimate: number | null = null;

  constructor(opts: DownlinkOptions = {}) {
    this.o = { windowMs: 4000, lossHigh: 0.08, lossLow: 0.02, growth: 1.15, maxKbps: 20_000, minKbps: 200, ...opts };
  }

  add(s: ReceiveSample): void {
    const last = this.samples.at(-1);
    // Counters that went back (a new peer connection after a restart) start a new window.
    if (last && (s.bytes < last.bytes || s.packets < last.packets || s.at <= last.at)) this.samples = [];
    this.samples.push(s);
    this.samples = this.samples.filter((x) => s.at - x.at <= this.o.windowMs);
    const first = this.samples[0]!;
    if (first === s) return;
    const kbps = ((s.bytes - first.bytes) * 8) / (s.at - first.at);
    const lost = s.lost - first.lost;
    const got = s.packets - first.packets;
    const loss = lost + got > 0 ? Math.max(0, lost) / (lost + got) : 0;
    if (loss >= this.o.lossHigh) this.estimate = Math.max(this.o.minKbps, Math.min(this.estimate ?? Infinity, kbps * 0.85));
    else if (loss < this.o.lossLow && this.estimate !== null) {
      this.estimate *= this.o.growth;
      if (this.estimate > this.o.maxKbps) this.estimate = null;
    }
  }

  reset(): void {
    this.samples = [];
    this.estimate = null;
  }

  /** The estimate in kbit/s on steps about 19 % apart (so noise does not make a new request), or null: no limit known. */
  kbps(): number | null {
    if (this.estimate === null) return null;
    return Math.round(2 ** (Math.round(Math.log2(this.estimate) * 4) / 4));
  }
}

/** What the reporter needs of the call (CallConnection). */
export interface ViewCallPort {
  readonly state: Store<CallSnapshot>;
  send(request: ViewRequest): Promise<void>;
  receiveStats(): Promise<RTCStatsReport | null>;
}

/** Where the layout's report comes from (the layout model's state). */
export interface ReportSource {
  get(): { report: ViewReport | null };
  subscribe(fn: () => void): () => void;
}

export interface ViewReporterOptions {
  call: ViewCallPort;
  layout: ReportSource;
  timers?: Timers;
  /** Quiet time after the last change before a request goes. */
  debounceMs?: number;
  /** A layout that keeps changing is still reported this long after its first change. */
  maxWaitMs?: number;
  /** At least this long between two requests (the server's rate limit is far above it). */
  minIntervalMs?: number;
  /** How often the receive stats are read for the downlink estimate (0: never). */
  statsEveryMs?: number;
  downlink?: DownlinkEstimator;
}

/** Errors that say the server does not take `view` at all (an older server). */
const UNSUPPORTED = new Set(["M_UNRECOGNIZED", "M_BAD_JSON"]);

export class ViewReporter {
  private readonly o: Required<Omit<ViewReporterOptions, "downlink">>;
  private readonly downlink: DownlinkEstimator;
  private readonly log = getLogger("view");
  private readonly offs: (() => void)[] = [];
  /** The request the server last accepted (JSON), null when it knows none (a new session). */
  private sent: string | null = null;
  private lastSentAt = -Infinity;
  private firstChangeAt: number | null = null;
  private timer: unknown = null;
  private statsTimer: unknown = null;
  private inFlight = false;
  /** The server refused `view` as unknown: nothing more goes until the next session. */
  private unsupported = false;
  private readonly logged = new Set<string>();
  private stopped = false;

  constructor(opts: ViewReporterOptions) {
    this.o = { timers: realTimers, debounceMs: 300, maxWaitMs: 2000, minIntervalMs: 1000, statsEveryMs: 2000, ...opts };
    this.downlink = opts.downlink ?? new DownlinkEstimator();
    this.offs.push(opts.layout.subscribe(() => this.changed()));
    this.offs.push(
      opts.call.state.subscribe((s, prev) => {
        if (s.phase === "connected" && prev.phase !== "connected") {
          // A new session (first join, reconnect, media restart): the server knows no view yet.
          this.sent = null;
          this.unsupported = false;
          this.downlink.reset();
          this.changed();
        }
      }),
    );
    if (opts.call.state.get().phase === "connected") this.changed();
    this.pollStats();
  }

  stop(): void {
    this.stopped = true;
    this.o.timers.clearTimeout(this.timer);
    this.o.timers.clearTimeout(this.statsTimer);
    for (const off of this.offs.splice(0)) off();
  }

  private changed(): void {
    if (this.stopped) return;
    const now = this.o.timers.now();
    this.firstChangeAt ??= now;
    const at = Math.max(Math.min(now + this.o.debounceMs, this.firstChangeAt + this.o.maxWaitMs), this.lastSentAt + this.o.minIntervalMs);
    this.o.timers.clearTimeout(this.timer);
    this.timer = this.o.timers.setTimeout(() => void this.flush(), Math.max(0, at - now));
  }

  private async flush(): Promise<void> {
    this.timer = null;
    if (this.stopped || this.unsupported || this.o.call.state.get().phase !== "connected") return void (this.firstChangeAt = null);
    if (this.inFlight) return; // the answer's handler looks again
    this.firstChangeAt = null;
    const key = this.currentKey();
    if (key === null || key === this.sent) return;
    const request = JSON.parse(key) as ViewRequest;
    this.inFlight = true;
    this.lastSentAt = this.o.timers.now();
    try {
      await this.o.call.send(request);
      this.sent = key;
    } catch (err) {
      this.refused(err);
    } finally {
      this.inFlight = false;
    }
    // Something changed while the request was out: report that too (after the minimum interval).
    if (!this.stopped && !this.unsupported && this.currentKey() !== key) this.changed();
  }

  private currentKey(): string | null {
    const report = this.o.layout.get().report;
    return report ? JSON.stringify(viewRequest({ ...report, downlinkKbps: this.downlink.kbps() })) : null;
  }

  private refused(err: unknown): void {
    const code = err instanceof ParleyClientError ? err.code : "M_UNKNOWN";
    if (code === "CLOSED" || code === "TIMEOUT") return; // the next session gets the view again
    if (UNSUPPORTED.has(code)) this.unsupported = true;
    if (this.logged.has(code)) return;
    this.logged.add(code);
    this.log.warn(UNSUPPORTED.has(code) ? "the server does not take view requests; it chooses the videos alone" : "view request refused", {
      code,
      detail: err instanceof ParleyClientError ? err.detail : String(err),
    });
  }

  private pollStats(): void {
    if (!this.o.statsEveryMs || this.stopped) return;
    this.statsTimer = this.o.timers.setTimeout(async () => {
      if (this.stopped) return;
      if (this.o.call.state.get().phase === "connected") {
        const before = this.downlink.kbps();
        const sample = receiveSample(await this.o.call.receiveStats().catch(() => null), this.o.timers.now());
        if (sample) this.downlink.add(sample);
        if (this.downlink.kbps() !== before) this.changed();
      }
      this.pollStats();
    }, this.o.statsEveryMs);
  }
}
