// A participant's VideoRoom publisher handle: join (without SDP), publish with the browser's
// offer, configure, unpublish, leave. The e2ee flag Janus checks is written into the JSEP here.
import type { Jsep } from "./messages.ts";
import { VideoRoomHandle } from "./roomHandle.ts";
import {
  call,
  configuredSchema,
  joinedSchema,
  okSchema,
  requireJsep,
  talkingSchema,
  type PublishedStream,
  type RoomPublisher,
} from "./videoroom.ts";

/** A talking / stopped-talking of one of this publisher's audio streams (room audiolevel_event). */
export interface TalkingEvent {
  talking: boolean;
  mid: string | undefined;
  /** The average audio level (dBov, 0 loudest .. 127 silence) over the detection window. */
  level: number | undefined;
}

export interface PublisherJoined {
  id: string;
  /** Ties this participant's subscriptions to it (`private_id`). */
  privateId: number;
  /** Publishers already in the room. */
  publishers: RoomPublisher[];
}

export interface PublishRequest {
  /** The browser's offer. */
  jsep: Jsep;
  /** Whether the frames are end-to-end encrypted; written into the JSEP Janus reads. */
  e2ee: boolean;
  /** Simulcast RID order of the offer: "lmh" for libwebrtc's ascending order (Janus assumes "hml"). */
  ridOrder?: "hml" | "lmh" | undefined;
  /** Bitrate cap in bit/s. */
  bitrate?: number | undefined;
  audiocodec?: string | undefined;
  videocodec?: string | undefined;
  /** Labels per m-line ("camera", "screen") other participants see. */
  descriptions?: { mid: string; description: string }[] | undefined;
  /** Ask the browser for Opus DTX (see withOpusDtx). */
  opusDtx?: boolean | undefined;
}

export interface ConfigureRequest {
  /** A renegotiation offer, if any. */
  jsep?: Jsep | undefined;
  e2ee?: boolean | undefined;
  ridOrder?: "hml" | "lmh" | undefined;
  bitrate?: number | undefined;
  keyframe?: boolean | undefined;
  display?: string | undefined;
  descriptions?: { mid: string; description: string }[] | undefined;
  /** Per-m-line switches, e.g. stop relaying a muted track. */
  streams?: { mid: string; send?: boolean; keyframe?: boolean }[] | undefined;
}

function publisherJsep(jsep: Jsep, e2ee: boolean | undefined, ridOrder: "hml" | "lmh" | undefined): Jsep {
  return { ...jsep, ...(e2ee !== undefined ? { e2ee } : {}), ...(ridOrder ? { rid_order: ridOrder } : {}) };
}

/**
 * The offer with `usedtx=1` on its Opus payload types. Janus 1.1.2 ignores the room's `opus_dtx`
 * when answering: it writes `usedtx=1` into its answer only when the publisher's offer had it
 * (janus_videoroom.c, ps->opusdtx; parsed while opus_fec is on, the default). Browsers do not
 * offer it, and a browser's Opus encoder uses DTX when the answer asks for it. Nothing else of
 * the offer changes.
 */
export function withOpusDtx(sdp: string): string {
  const eol = sdp.includes("\r\n") ? "\r\n" : "\n";
  const lines = sdp.split(eol);
  const opus = new Set(lines.flatMap((l) => /^a=rtpmap:(\d+) opus\//i.exec(l)?.[1] ?? []));
  const withFmtp = new Set<string>();
  const out = lines.map((l) => {
    const m = /^a=fmtp:(\d+) (.*)$/.exec(l);
    if (!m || !opus.has(m[1]!)) return l;
    withFmtp.add(m[1]!);
    return /(^|;)\s*usedtx=/.test(m[2]!) ? l : `${l};usedtx=1`;
  });
  return out.flatMap((l) => {
    const pt = /^a=rtpmap:(\d+) opus\//i.exec(l)?.[1];
    return pt && !withFmtp.has(pt) ? [l, `a=fmtp:${pt} usedtx=1`] : [l];
  }).join(eol);
}

function defined(fields: Record<string, unknown>): Record<string, unknown> {
  return Object.fromEntries(Object.entries(fields).filter(([, v]) => v !== undefined));
}

/** A publisher handle. After `leave` Janus 1.1.2 wants a new handle (425 on a second join). */
export class VideoRoomPublisher extends VideoRoomHandle {
  private joinedId: string | undefined;

  /** Joins without publishing (no SDP yet). 436 ID_EXISTS if the id is in the room already. */
  async join(r: { room: string; id: string; display: string }): Promise<PublisherJoined> {
    const body = { request: "join", ptype: "publisher", room: r.room, id: r.id, display: r.display };
    const { data } = await call(this.handle, body, joinedSchema, "async");
    this.joinedId = data.id;
    return { id: data.id, privateId: data.private_id, publishers: data.publishers };
  }

  /**
   * This publisher's talking events. Janus 1.1.2 sends every talking / stopped-talking of a room
   * to every publisher handle in it (janus_videoroom_notify_participants, the speaker included),
   * so each handle keeps only its own: each event is handled once, by its speaker's handle.
   */
  onTalking(listener: (e: TalkingEvent) => void): () => void {
    const fn = (data: Record<string, unknown>) => {
      const t = talkingSchema.safeParse(data);
      if (!t.success || this.joinedId === undefined || t.data.id !== this.joinedId) return;
      listener({ talking: t.data.videoroom === "talking", mid: t.data.mid, level: t.data["audio-level-dBov-avg"] });
    };
    this.handle.events.on("event", fn);
    return () => this.handle.events.off("event", fn);
  }

  /** Starts publishing; resolves with Janus's answer. 433 UNAUTHORIZED in an e2ee room without `e2ee`. */
  async publish(r: PublishRequest): Promise<{ answer: Jsep; streams: PublishedStream[] }> {
    const body = defined({
      request: "publish",
      bitrate: r.bitrate,
      audiocodec: r.audiocodec,
      videocodec: r.videocodec,
      descriptions: r.descriptions,
    });
    const offer = r.opusDtx ? { ...r.jsep, sdp: withOpusDtx(r.jsep.sdp) } : r.jsep;
    const reply = await call(this.handle, body, configuredSchema, "async", publisherJsep(offer, r.e2ee, r.ridOrder));
    return { answer: requireJsep(reply.jsep, "answer", "publish"), streams: reply.data.streams ?? [] };
  }

  /** Changes a running publication (bitrate, muted m-lines, renegotiation with `jsep`). */
  async configure(r: ConfigureRequest): Promise<{ answer: Jsep | undefined }> {
    const body = defined({
      request: "configure",
      bitrate: r.bitrate,
      keyframe: r.keyframe,
      display: r.display,
      descriptions: r.descriptions,
      streams: r.streams,
    });
    const jsep = r.jsep ? publisherJsep(r.jsep, r.e2ee, r.ridOrder) : undefined;
    const reply = await call(this.handle, body, configuredSchema, "async", jsep);
    return { answer: jsep ? requireJsep(reply.jsep, "answer", "configure") : undefined };
  }

  /** Stops publishing (435 NOT_PUBLISHED if it was not). */
  async unpublish(): Promise<void> {
    await call(this.handle, { request: "unpublish" }, okSchema, "async");
  }




}
