// Guards for everything Janus sends (habit 5): a frame is parsed here before any other sfu/
// module looks at it. Shapes are the Janus 1.1.2 API as observed (see
// test/integration/sfu.test.ts); unknown fields are kept, wrong types are refused.
import { z } from "zod";

/** Janus session and handle ids: random integers below 2^53. */
export const janusId = z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER);

export const jsepSchema = z.looseObject({
  type: z.enum(["offer", "answer"]),
  sdp: z.string(),
  /** Set by senders whose frames are end-to-end encrypted; VideoRoom checks it for publishers. */
  e2ee: z.boolean().optional(),
});
/** A session description as Janus carries it, with the optional flags its core reads. */
export type Jsep = z.infer<typeof jsepSchema> & {
  trickle?: boolean;
  /** Simulcast: the order of the RIDs in the SDP; Janus assumes "hml" unless told. */
  rid_order?: "hml" | "lmh";
  force_relay?: boolean;
};

export const pluginDataSchema = z.looseObject({
  plugin: z.string(),
  data: z.record(z.string(), z.unknown()),
});
export type PluginData = z.infer<typeof pluginDataSchema>;

export const janusMessageSchema = z
  .looseObject({
    janus: z.string().min(1),
    transaction: z.string().optional(),
    session_id: janusId.optional(),
    /** The handle an event comes from. */
    sender: janusId.optional(),
    data: z.looseObject({ id: janusId.optional() }).optional(),
    error: z.looseObject({ code: z.number().int(), reason: z.string() }).optional(),
    plugindata: pluginDataSchema.optional(),
    jsep: jsepSchema.optional(),
  })
  .refine((m) => m.janus !== "error" || m.error !== undefined, { message: "an error message without error{code,reason}" });
export type JanusMessage = z.infer<typeof janusMessageSchema>;

/** Parses one WebSocket frame; `error` lists every problem found (never the frame itself). */
export function parseJanusFrame(text: string): { ok: true; message: JanusMessage } | { ok: false; error: string } {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    return { ok: false, error: "not JSON" };
  }
  const parsed = janusMessageSchema.safeParse(raw);
  if (!parsed.success) {
    return { ok: false, error: parsed.error.issues.map((i) => `${i.path.join(".") || "(root)"}: ${i.message}`).join("; ") };
  }
  return { ok: true, message: parsed.data };
}

// Unsolicited PeerConnection events, per handle (janus.c / ice.c in 1.1.2).
export const mediaEventSchema = z.looseObject({
  type: z.string().optional(),
  mid: z.string().optional(),
  receiving: z.boolean(),
});
export type MediaEvent = z.infer<typeof mediaEventSchema>;

export const slowlinkEventSchema = z.looseObject({
  mid: z.string().optional(),
  media: z.string().optional(),
  uplink: z.boolean(),
  lost: z.number().optional(),
});
export type SlowlinkEvent = z.infer<typeof slowlinkEventSchema>;

export const hangupEventSchema = z.looseObject({ reason: z.string().optional() });

export const trickleCandidateSchema = z.union([
  z.looseObject({ candidate: z.string(), sdpMid: z.string().nullish(), sdpMLineIndex: z.number().nullish() }),
  z.looseObject({ completed: z.literal(true) }),
]);
export type TrickleCandidate = z.infer<typeof trickleCandidateSchema>;
export const trickleEventSchema = z.looseObject({ candidate: trickleCandidateSchema });
