// The VideoRoom plugin (layer 4): reply guards shared by its three roles, the request helper
// that turns `error_code` replies into VideoRoomError, and room administration on a control
// handle. The publisher and subscriber roles are publisher.ts and subscriber.ts. Room and
// participant ids are strings (Parley's Janus config sets string_ids).
import { z } from "zod";
import { JanusReplyError, VideoRoomError } from "./errors.ts";
import type { JanusPluginHandle } from "./handle.ts";
import type { Jsep } from "./messages.ts";

export const VIDEOROOM_PLUGIN = "janus.plugin.videoroom";

const participantSchema = z.looseObject({
  id: z.string(),
  display: z.string().optional(),
  publisher: z.boolean(),
  talking: z.boolean().optional(),
});
export type RoomParticipant = z.infer<typeof participantSchema>;

export const publishedStreamSchema = z.looseObject({
  type: z.string(),
  mid: z.string(),
  codec: z.string().optional(),
  description: z.string().optional(),
  disabled: z.boolean().optional(),
  simulcast: z.boolean().optional(),
});
export const publisherSchema = z.looseObject({
  id: z.string(),
  display: z.string().optional(),
  streams: z.array(publishedStreamSchema).optional(),
});
export type RoomPublisher = z.infer<typeof publisherSchema>;
export type PublishedStream = z.infer<typeof publishedStreamSchema>;

export const subscriptionStreamSchema = z.looseObject({
  /** The subscriber's own m-line. */
  mid: z.string(),
  type: z.string(),
  feed_id: z.string().optional(),
  feed_mid: z.string().optional(),
  feed_display: z.string().optional(),
  active: z.boolean().optional(),
});
export type SubscriptionStream = z.infer<typeof subscriptionStreamSchema>;

export const okSchema = z.looseObject({ videoroom: z.string() });
const createdSchema = z.looseObject({ videoroom: z.literal("created"), room: z.string() });
const destroyedSchema = z.looseObject({ videoroom: z.literal("destroyed") });
const existsSchema = z.looseObject({ exists: z.boolean() });
const participantsSchema = z.looseObject({ participants: z.array(participantSchema) });
const forwardersSchema = z.looseObject({
  forwarders: z.array(z.looseObject({ stream_id: z.number(), mid: z.string().optional(), port: z.number() })),
});

/** A forward of one published stream to a local UDP port (plain RTP: the frames as Janus holds them). */
export interface RtpForward {
  streamId: number;
  mid?: string | undefined;
  port: number;
}
export const joinedSchema = z.looseObject({
  videoroom: z.literal("joined"),
  id: z.string(),
  private_id: z.number().int(),
  publishers: z.array(publisherSchema).default([]),
});
export const configuredSchema = z.looseObject({ configured: z.literal("ok"), streams: z.array(publishedStreamSchema).optional() });
export const attachedSchema = z.looseObject({ videoroom: z.literal("attached"), streams: z.array(subscriptionStreamSchema).default([]) });
export const updatedSchema = z.looseObject({ videoroom: z.enum(["updated", "updating"]), streams: z.array(subscriptionStreamSchema).optional() });

/** Unsolicited VideoRoom events on a handle (new publishers, leaves, kicks, room destroyed...). */
export const notificationSchema = z.looseObject({
  videoroom: z.string(),
  room: z.string().optional(),
  publishers: z.array(publisherSchema).optional(),
  /** A publisher's id (or "ok" for this handle). */
  unpublished: z.string().optional(),
  leaving: z.string().optional(),
  kicked: z.string().optional(),
  reason: z.string().optional(),
  streams: z.array(z.looseObject({ mid: z.string() })).optional(),
  error_code: z.number().int().optional(),
  error: z.string().optional(),
});
export type VideoRoomNotification = z.infer<typeof notificationSchema>;

/** A room's talk detection (audiolevel_event): sent to every publisher handle of the room. */
export const talkingSchema = z.looseObject({
  videoroom: z.enum(["talking", "stopped-talking"]),
  id: z.string(),
  mid: z.string().optional(),
  "audio-level-dBov-avg": z.number().optional(),
});

/**
 * A subscriber m-line now forwards another simulcast substream (Janus switches on the target
 * layer's first key frame after a `configure`, and reports it on the subscriber's handle).
 */
export const substreamSchema = z.looseObject({
  videoroom: z.literal("event"),
  mid: z.string(),
  substream: z.number().int().min(0).max(2),
});

/** Sends one VideoRoom request and parses its reply. */
export async function call<S extends z.ZodType>(
  handle: JanusPluginHandle,
  body: Record<string, unknown>,
  schema: S,
  mode: "sync" | "async",
  jsep?: Jsep,
): Promise<{ data: z.infer<S>; jsep: Jsep | undefined }> {
  const request = String(body["request"]);
  const reply = mode === "sync" ? await handle.message(body, jsep) : await handle.messageAsync(body, jsep);
  const code = reply.data["error_code"];
  if (typeof code === "number") throw new VideoRoomError(code, String(reply.data["error"] ?? ""), request);
  const parsed = schema.safeParse(reply.data);
  if (!parsed.success) throw new JanusReplyError(request, parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; "));
  return { data: parsed.data, jsep: reply.jsep };
}

export function requireJsep(jsep: Jsep | undefined, type: Jsep["type"], request: string): Jsep {
  if (jsep?.type !== type) throw new JanusReplyError(request, `expected a JSEP ${type}`);
  return jsep;
}

/** Listens for VideoRoom notifications on a handle; malformed ones are dropped. */
export function listen(handle: JanusPluginHandle, listener: (n: VideoRoomNotification, jsep: Jsep | undefined) => void): () => void {
  const fn = (data: Record<string, unknown>, jsep: Jsep | undefined) => {
    const n = notificationSchema.safeParse(data);
    if (n.success) listener(n.data, jsep);
  };
  handle.events.on("event", fn);
  return () => handle.events.off("event", fn);
}

export interface CreateRoomRequest {
  room: string;
  /** Needed later to destroy the room and kick participants. */
  secret: string;
  description?: string | undefined;
  /** Publishers must mark their JSEP e2ee (Janus 1.1.2 checks publishers only). */
  requireE2ee: boolean;
  /** Maximum number of concurrent publishers. */
  publishers: number;
  /** Per-publisher bitrate cap in bit/s (0: none). */
  bitrate?: number | undefined;
  videocodec?: string | undefined;
  audiocodec?: string | undefined;
  /** Talk detection (docs/large-meetings.md); absent: Janus's defaults (no talking events). */
  talking?: TalkDetection | undefined;
  /** Negotiate Opus DTX (usedtx=1) with publishers. */
  opusDtx?: boolean | undefined;
}

/** The room's talk detection: Janus averages the audio-level extension over a packet count. */
export interface TalkDetection {
  /** Packets per decision (Janus counts packets, not time: under DTX a silent second has ~2.5). */
  audioActivePackets: number;
  /** Talking when the window's average level is below this (dBov magnitude: 0 loudest, 127 silence). */
  audioLevelAverage: number;
}

/** Room administration on a control handle; `create` needs the VideoRoom admin_key. */
export class VideoRoomAdmin {
  private readonly handle: JanusPluginHandle;
  private readonly adminKey: string;

  constructor(handle: JanusPluginHandle, adminKey: string) {
    this.handle = handle;
    this.adminKey = adminKey;
  }

  /** Creates a private, non-permanent room (427 ROOM_EXISTS if the id is taken). */
  async create(r: CreateRoomRequest): Promise<void> {
    await call(this.handle, {
      request: "create",
      admin_key: this.adminKey,
      room: r.room,
      secret: r.secret,
      description: r.description ?? r.room,
      is_private: true,
      permanent: false,
      require_e2ee: r.requireE2ee,
      publishers: r.publishers,
      ...(r.bitrate !== undefined ? { bitrate: r.bitrate } : {}),
      ...(r.videocodec !== undefined ? { videocodec: r.videocodec } : {}),
      ...(r.audiocodec !== undefined ? { audiocodec: r.audiocodec } : {}),
      ...(r.opusDtx !== undefined ? { opus_dtx: r.opusDtx } : {}),
      ...(r.talking
        ? {
            audiolevel_ext: true,
            audiolevel_event: true,
            audio_active_packets: r.talking.audioActivePackets,
            audio_level_average: r.talking.audioLevelAverage,
          }
        : {}),
    }, createdSchema, "sync");
  }

  /** Destroys a room; participants get a "destroyed" notification (426 if it does not exist). */
  async destroy(room: string, secret: string): Promise<void> {
    await call(this.handle, { request: "destroy", room, secret, permanent: false }, destroyedSchema, "sync");
  }

  async exists(room: string): Promise<boolean> {
    return (await call(this.handle, { request: "exists", room }, existsSchema, "sync")).data.exists;
  }

  /** Removes a participant (its handle gets `leaving` with reason "kicked"). */
  async kick(room: string, secret: string, participantId: string): Promise<void> {
    await call(this.handle, { request: "kick", room, secret, id: participantId }, okSchema, "sync");
  }

  /** A moderator's mute of one published stream (`mid`): Janus stops relaying it until unmuted. */
  async moderate(room: string, secret: string, participantId: string, mid: string, mute: boolean): Promise<void> {
    await call(this.handle, { request: "moderate", room, secret, id: participantId, mid, mute }, okSchema, "sync");
  }

  async listParticipants(room: string): Promise<RoomParticipant[]> {
    return (await call(this.handle, { request: "listparticipants", room }, participantsSchema, "sync")).data.participants;
  }

  /**
   * Forwards a publisher's streams as plain RTP to `host` (Parley's config locks rtp_forward behind
   * the admin_key). What arrives is what the SFU holds: with E2EE, ciphertext frames.
   */
  async rtpForward(room: string, secret: string, publisherId: string, host: string, streams: { mid: string; port: number }[]): Promise<RtpForward[]> {
    const reply = await call(
      this.handle,
      { request: "rtp_forward", room, secret, admin_key: this.adminKey, publisher_id: publisherId, host, host_family: "ipv4", streams },
      forwardersSchema,
      "sync",
    );
    return reply.data.forwarders.map((f) => ({ streamId: f.stream_id, mid: f.mid, port: f.port }));
  }

  async stopRtpForward(room: string, secret: string, publisherId: string, streamId: number): Promise<void> {
    await call(this.handle, { request: "stop_rtp_forward", room, secret, admin_key: this.adminKey, publisher_id: publisherId, stream_id: streamId }, okSchema, "sync");
  }
}

