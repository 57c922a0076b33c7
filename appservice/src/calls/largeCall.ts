// The per-publisher bitrate cap of large calls (docs/large-meetings.md): once a call has `from`
// members, every publisher is capped at `publisherBitrate` (Janus sends it as REMB); below that
// again the cap is lifted to `liftedBitrate`. A publisher is told only when its target changes.

export interface LargeCallConfig {
  /** Members from which the call counts as large. */
  from: number;
  /** Cap per publisher in a large call (bit/s). */
  publisherBitrate: number;
  /** What a publisher is told when its call is no longer large (bit/s; libwebrtc keeps the last REMB). */
  liftedBitrate: number;
}

export interface BitratePublisher {
  /** The same object for as long as the publisher's SFU session lives. */
  readonly key: object;
  /** Whether it publishes (a cap is sent only to publishers). */
  readonly published: boolean;
  setBitrate(bitsPerSecond: number): Promise<void>;
}

export class LargeCallBitrate {
  private readonly told = new WeakMap<object, number>();
  private readonly cfg: LargeCallConfig;
  private readonly failed: (err: unknown) => void;

  constructor(cfg: LargeCallConfig, failed: (err: unknown) => void) {
    this.cfg = cfg;
    this.failed = failed;
  }

  /** The bitrate every publisher of a call of `members` should have. */
  target(members: number): number {
    return members >= this.cfg.from ? this.cfg.publisherBitrate : this.cfg.liftedBitrate;
  }

  /** Tells each publisher whose target changed (a publisher never capped is not told to lift). */
  apply(publishers: readonly BitratePublisher[], members: number): void {
    const target = this.target(members);
    const large = members >= this.cfg.from;
    for (const p of publishers) {
      if (!p.published) continue;
      const told = this.told.get(p.key);
      if (told === target || (told === undefined && !large)) continue;
      this.told.set(p.key, target);
      p.setBitrate(target).catch((err: unknown) => {
        if (this.told.get(p.key) === target) this.told.delete(p.key);
        this.failed(err);
      });
    }
  }
}
