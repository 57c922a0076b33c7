// What the call screen may say about the others' media: the watch that samples the receive stats
// a few times a second (rtc/mediaHealth.ts judges them), and the E2EE badge, which speaks only
// about media that is arriving: alone in the call, or while nothing arrives, it makes no claim.
import { MediaHealth, type CallMedia, type ExpectedFeed, type MediaSample, type MediaVerdict } from "../rtc/mediaHealth.ts";
import { keyModeText } from "../rtc/e2ee/keyMode.ts";
import type { Timers } from "../timers.ts";

export type { CallMedia, MediaVerdict };

/** Samples often enough that a stop shows within 2 s (STALE_MS plus two of these at most). */
export const MEDIA_EVERY_MS = 250;

export interface MediaWatchOptions {
  sample: () => Promise<MediaSample>;
  feeds: () => ExpectedFeed[];
  onChange: (verdict: MediaVerdict) => void;
  timers: Timers;
  everyMs?: number;
  health?: MediaHealth;
}

export class MediaWatch {
  private readonly o: Required<MediaWatchOptions>;
  private timer: unknown;
  private running = false;
  private last: MediaVerdict | null = null;

  constructor(opts: MediaWatchOptions) {
    this.o = { everyMs: MEDIA_EVERY_MS, health: new MediaHealth(), ...opts };
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.schedule();
  }

  stop(): void {
    this.running = false;
    this.o.timers.clearTimeout(this.timer);
  }

  private schedule(): void {
    this.timer = this.o.timers.setTimeout(async () => {
      if (!this.running) return;
      const sample = await this.o.sample().catch(() => ({ inbound: [], peers: [] }));
      if (!this.running) return;
      const verdict = this.o.health.update(this.o.timers.now(), this.o.feeds(), sample);
      if (!this.last || !sameVerdict(this.last, verdict)) {
        this.last = verdict;
        this.o.onChange(verdict);
      }
      this.schedule();
    }, this.o.everyMs);
  }
}

function sameVerdict(a: MediaVerdict, b: MediaVerdict): boolean {
  const same = (x: ReadonlySet<string>, y: ReadonlySet<string>) => x.size === y.size && [...x].every((k) => y.has(k));
  return a.call === b.call && same(a.stale, b.stale) && same(a.flowing, b.flowing);
}

/** The call's encryption as the toolbar shows it. */
export interface E2eeView {
  mode: "participant" | "provisioned";
  /** Media arrives from someone, and every stream that arrives decrypts. */
  encrypted: boolean;
  /**
   * encrypted; failing (some arriving media does not decrypt); waiting (for keys, or the first
   * frames); alone (nobody else here: no claim); no-media (nothing arrives: no claim).
   */
  state: "encrypted" | "failing" | "waiting" | "alone" | "no-media";
  /** Names of participants whose media does not decrypt. */
  failing: string[];
  /** Names of participants whose first frames have not arrived or decrypted yet. */
  waiting: string[];
  text: string;
  /** Who makes the media keys, as the room's state decides: "Keys: each participant" / "Keys: provisioned by <bot>". */
  keys: string;
}

export const NO_ONE_ELSE_TEXT = "Encryption unconfirmed: no one else is here";
export const NO_MEDIA_TEXT = "Encryption unconfirmed: no media arriving";

/**
 * The badge. `media`: alone (no remote publishes), none (nothing arrives now; `connecting`: not
 * yet since the call started, the keys we wait for are named then), ok (something arrives, or
 * there is no watch to say otherwise). `failing` and `waiting` name only feeds not stale.
 */
export function e2eeView(
  mode: E2eeView["mode"],
  bot: string | null,
  names: { failing: string[]; waiting: string[] },
  error: string | null,
  media: "alone" | "none" | "connecting" | "ok",
): E2eeView {
  const { failing, waiting } = names;
  const how = mode === "provisioned" ? "Encrypted end to end with keys provisioned by the meeting's server" : "Encrypted end to end";
  const [state, text]: [E2eeView["state"], string] = error
    ? ["waiting", error]
    : failing.length
      ? ["failing", `Can't decrypt media from ${failing.join(", ")}`]
      : media === "alone"
        ? ["alone", NO_ONE_ELSE_TEXT]
        : media === "none" || (media === "connecting" && !waiting.length)
          ? ["no-media", NO_MEDIA_TEXT]
          : waiting.length
            ? ["waiting", `Waiting for media keys from ${waiting.join(", ")}`]
            : ["encrypted", how];
  return { mode, encrypted: state === "encrypted", state, failing, waiting, text, keys: keyModeText(mode, bot) };
}
