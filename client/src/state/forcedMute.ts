// A host's mute the user cannot lift (docs/governance.md). It is set by a `moderated` push, which
// says who did it, or found in the user's own participant entry (after a reconnect, or when that
// push was missed), and lifted only by the server: `moderated muted:false`, or the entry no longer
// forced. Meanwhile the device stays off and its button disabled; once lifted, the user turns it
// back on themselves (nothing is unmuted for them).
import type { Kind } from "../rtc/governanceProtocol.ts";

/** Who forced it; null when the server did not say (a participant entry carries no `by`). */
export type ForcedBy = { by: string | null };

export interface Forced {
  audio: ForcedBy | null;
  video: ForcedBy | null;
}

export const NOT_FORCED: Forced = { audio: null, video: null };

export function onModerated(f: Forced, p: { kind: Kind; muted: boolean; by: string }): Forced {
  return { ...f, [p.kind]: p.muted ? { by: p.by } : null };
}

/** The server's participant entry for this device is the truth when it carries `forced`. */
export function onOwnEntry(f: Forced, forced: { audio: boolean; video: boolean } | undefined): Forced {
  if (!forced) return f;
  const audio = forced.audio ? (f.audio ?? { by: null }) : null;
  const video = forced.video ? (f.video ?? { by: null }) : null;
  return audio === f.audio && video === f.video ? f : { audio, video };
}

/** What turned on: the kinds that became forced from `prev` to `next` (they must go off now). */
export function newlyForced(prev: Forced, next: Forced): Kind[] {
  return (["audio", "video"] as const).filter((k) => next[k] && !prev[k]);
}

/** What the user reads next to the disabled buttons, e.g. "Muted by Alice"; null when nothing is forced. */
export function forcedNotice(f: Forced, nameOf: (userId: string) => string): string | null {
  const who = (x: ForcedBy) => (x.by ? nameOf(x.by) : "a host");
  if (f.audio && f.video) {
    return f.audio.by === f.video.by
      ? `Muted by ${who(f.audio)} (microphone and camera)`
      : `Muted by ${who(f.audio)}; camera turned off by ${who(f.video)}`;
  }
  if (f.audio) return `Muted by ${who(f.audio)}`;
  if (f.video) return `Camera turned off by ${who(f.video)}`;
  return null;
}
