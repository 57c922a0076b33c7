// A participant's multistream VideoRoom subscriber handle: one PeerConnection receiving many
// feeds. Janus makes the offers (join, subscribe, unsubscribe); the browser answers via start.
import type { Jsep } from "./messages.ts";
import { VideoRoomHandle } from "./roomHandle.ts";
import {
  attachedSchema,
  call,
  okSchema,
  requireJsep,
  substreamSchema,
  updatedSchema,
  type SubscriptionStream,
} from "./videoroom.ts";

/** One stream to receive: all of a publisher's feed, or one of its m-lines. */
export interface StreamRef {
  feed: string;
  mid?: string | undefined;
  /** The simulcast substream a new video m-line starts on (Janus's default: 2, the highest). */
  substream?: 0 | 1 | 2 | undefined;
  /**
   * false: the m-line is made not forwarding (a `subscribe` takes it per stream, and asks its
   * publisher for no key frame, unlike a `configure` that resumes one). Janus's `join` ignores it.
   */
  send?: false | undefined;
}

/** A subscriber m-line to drop: by publisher feed (and its mid) or by the subscriber's own mid. */
export interface UnsubscribeRef {
  feed?: string | undefined;
  mid?: string | undefined;
  subMid?: string | undefined;
}

export interface LayerRequest {
  /** The subscriber's m-line. */
  mid: string;
  /** Simulcast substream: 0 lowest ... 2 highest. */
  substream?: number | undefined;
  /** Temporal layer: 0 lowest ... 2 highest. */
  temporal?: number | undefined;
  /** false pauses relaying this m-line. */
  send?: boolean | undefined;
}

export interface SubscriptionUpdate {
  /** Janus's new offer when the m-lines changed (answer it with `start`). */
  offer: Jsep | undefined;
  streams: SubscriptionStream[];
}

export class VideoRoomSubscriber extends VideoRoomHandle {
  /** Joins as subscriber; Janus answers with its offer. 428 NO_SUCH_FEED for a feed that is not publishing. */
  async join(r: { room: string; streams: StreamRef[]; privateId?: number | undefined }): Promise<{ offer: Jsep; streams: SubscriptionStream[] }> {
    const body = {
      request: "join",
      ptype: "subscriber",
      room: r.room,
      use_msid: true,
      streams: r.streams.map(streamBody),
      ...(r.privateId !== undefined ? { private_id: r.privateId } : {}),
    };
    const reply = await call(this.handle, body, attachedSchema, "async");
    return { offer: requireJsep(reply.jsep, "offer", "join(subscriber)"), streams: reply.data.streams };
  }

  async subscribe(streams: StreamRef[]): Promise<SubscriptionUpdate> {
    const reply = await call(this.handle, { request: "subscribe", streams: streams.map(streamBody) }, updatedSchema, "async");
    return { offer: reply.jsep, streams: reply.data.streams ?? [] };
  }

  async unsubscribe(streams: UnsubscribeRef[]): Promise<SubscriptionUpdate> {
    const body = {
      request: "unsubscribe",
      streams: streams.map((s) => ({
        ...(s.feed !== undefined ? { feed: s.feed } : {}),
        ...(s.mid !== undefined ? { mid: s.mid } : {}),
        ...(s.subMid !== undefined ? { sub_mid: s.subMid } : {}),
      })),
    };
    const reply = await call(this.handle, body, updatedSchema, "async");
    return { offer: reply.jsep, streams: reply.data.streams ?? [] };
  }

  /** Sends the browser's answer to Janus's latest offer. */
  async start(answer: Jsep, e2ee?: boolean): Promise<void> {
    const jsep = e2ee === undefined ? answer : { ...answer, e2ee };
    await call(this.handle, { request: "start" }, okSchema, "async", jsep);
  }

  /** Picks the simulcast substream / temporal layer per m-line, or pauses an m-line. */
  async configure(layers: LayerRequest[]): Promise<void> {
    const streams = layers.map((l) => ({
      mid: l.mid,
      ...(l.substream !== undefined ? { substream: l.substream } : {}),
      ...(l.temporal !== undefined ? { temporal: l.temporal } : {}),
      ...(l.send !== undefined ? { send: l.send } : {}),
    }));
    await call(this.handle, { request: "configure", streams }, okSchema, "async");
  }

  /**
   * The substream each m-line forwards, as Janus reports it: on the first key frame of a new
   * subscription and on every switch (a `configure`'s target reached, or Janus's own fall-back
   * when a layer stops arriving).
   */
  onSubstream(listener: (mid: string, substream: 0 | 1 | 2) => void): () => void {
    const fn = (data: Record<string, unknown>) => {
      const e = substreamSchema.safeParse(data);
      if (e.success) listener(e.data.mid, e.data.substream as 0 | 1 | 2);
    };
    this.handle.events.on("event", fn);
    return () => this.handle.events.off("event", fn);
  }
}

function streamBody(s: StreamRef): Record<string, unknown> {
  return {
    feed: s.feed,
    ...(s.mid !== undefined ? { mid: s.mid } : {}),
    ...(s.substream !== undefined ? { substream: s.substream } : {}),
    ...(s.send === false ? { send: false } : {}),
  };
}
