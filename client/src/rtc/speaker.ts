// Who is speaking: audio levels in (from getStats or an AnalyserNode), one active speaker out,
// with smoothing and a hold time so the highlight doesn't flicker between two voices.

export interface SpeakerOptions {
  /** Level (0..1, WebRTC audioLevel scale) above which someone counts as speaking. */
  threshold?: number;
  /** A new speaker must be louder than the current one for this long to take over. */
  holdMs?: number;
  /** Exponential smoothing factor for each new sample (0..1). */
  smoothing?: number;
}

export class SpeakerSelector {
  private readonly threshold: number;
  private readonly holdMs: number;
  private readonly smoothing: number;
  private readonly smoothed = new Map<string, number>();
  private active: string | null = null;
  private challenger: { id: string; since: number } | null = null;
  private lastHeard = 0;

  constructor(opts: SpeakerOptions = {}) {
    this.threshold = opts.threshold ?? 0.02;
    this.holdMs = opts.holdMs ?? 800;
    this.smoothing = opts.smoothing ?? 0.5;
  }

  /** Feeds one round of levels; returns the active speaker (null when nobody speaks). */
  update(levels: ReadonlyMap<string, number>, now: number): string | null {
    for (const id of [...this.smoothed.keys()]) if (!levels.has(id)) this.smoothed.delete(id);
    for (const [id, level] of levels) {
      const prev = this.smoothed.get(id) ?? 0;
      this.smoothed.set(id, prev + this.smoothing * (level - prev));
    }
    let loudest: string | null = null;
    let max = this.threshold;
    for (const [id, v] of this.smoothed) {
      if (v > max) {
        max = v;
        loudest = id;
      }
    }
    if (this.active && !this.smoothed.has(this.active)) this.active = null;
    if (loudest === null) {
      // Silence: keep the last speaker highlighted a little, then clear.
      if (this.active && now - this.lastHeard > this.holdMs * 2) this.active = null;
      this.challenger = null;
      return this.active;
    }
    if (loudest === this.active || this.active === null) {
      this.active = loudest;
      this.lastHeard = now;
      this.challenger = null;
      return this.active;
    }
    if (this.challenger?.id !== loudest) this.challenger = { id: loudest, since: now };
    if (now - this.challenger.since >= this.holdMs) {
      this.active = loudest;
      this.lastHeard = now;
      this.challenger = null;
    }
    return this.active;
  }

  level(id: string): number {
    return this.smoothed.get(id) ?? 0;
  }
}

/** A microphone level meter for the pre-join screen (AnalyserNode, RMS of the waveform). */
export class LevelMeter {
  private readonly ctx: AudioContext;
  private readonly analyser: AnalyserNode;
  private readonly source: MediaStreamAudioSourceNode;
  private readonly buf: Float32Array<ArrayBuffer>;

  constructor(track: MediaStreamTrack) {
    this.ctx = new AudioContext();
    this.source = this.ctx.createMediaStreamSource(new MediaStream([track]));
    this.analyser = this.ctx.createAnalyser();
    this.analyser.fftSize = 512;
    this.buf = new Float32Array(this.analyser.fftSize);
    this.source.connect(this.analyser);
    // Created after a click (sign in, open), but some browsers still start it suspended.
    if (this.ctx.state === "suspended") void this.ctx.resume().catch(() => undefined);
  }

  /** 0..1 */
  level(): number {
    this.analyser.getFloatTimeDomainData(this.buf);
    let sum = 0;
    for (const v of this.buf) sum += v * v;
    return Math.min(1, Math.sqrt(sum / this.buf.length) * 4);
  }

  close(): void {
    this.source.disconnect();
    void this.ctx.close().catch(() => undefined);
  }
}
