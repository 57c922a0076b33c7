// The E2EE worker: frames of every sender and receiver of the call pass through its FrameCipher,
// by RTCRtpScriptTransform (`rtctransform` events) or, in browsers without it, by the streams of
// createEncodedStreams posted here. Keys arrive as messages from the page (e2eeMedia.ts); they
// are never posted back. Decryption health goes back as `status` messages.
import { FrameCipher, type KeyMode, type MediaKind } from "./cipher.ts";
import type { ToWorker, TransformOptions } from "./workerProtocol.ts";

interface Transformer {
  readable: ReadableStream;
  writable: WritableStream;
  options: TransformOptions;
  /** Asks the sender for a key frame (receivers; RTCRtpScriptTransform only). */
  sendKeyFrameRequest?(): Promise<void>;
}

interface WorkerScope {
  postMessage(message: unknown): void;
  onmessage: ((ev: MessageEvent<ToWorker>) => void) | null;
  onrtctransform: ((ev: { transformer: Transformer }) => void) | null;
}
const scope = globalThis as unknown as WorkerScope;

let cipher: FrameCipher | null = null;
/** Video receivers' transformers by receiver id (whose media each carries is the cipher's record). */
const videoReceivers = new Map<string, Transformer>();

/**
 * A video decoder that never got a decryptable key frame stays black until the next one: when a
 * participant's key arrives, ask its video senders for one (the SFU relays the request).
 */
function requestKeyFrames(participant: string | null): void {
  for (const [receiverId, transformer] of videoReceivers) {
    if (participant === null || cipher?.participantOf(receiverId) === participant) void transformer.sendKeyFrameRequest?.().catch(() => undefined);
  }
}

function cipherFor(self: string, mode: KeyMode): FrameCipher {
  cipher ??= new FrameCipher({ self, mode, onStatus: (status) => scope.postMessage({ type: "status", ...status }) });
  (globalThis as unknown as { __parleyE2eeStats: unknown }).__parleyE2eeStats = cipher.stats;
  return cipher;
}

function pipe(readable: ReadableStream, writable: WritableStream, o: TransformOptions, transformer: Transformer | null): void {
  const c = cipherFor(o.self, o.mode);
  if (o.operation === "decrypt" && o.kind === "video" && o.receiverId !== undefined && transformer) videoReceivers.set(o.receiverId, transformer);
  const kind: MediaKind = o.kind;
  const transform = o.operation === "encrypt" ? c.encryptTransform(kind) : c.decryptTransform(o.receiverId ?? "", kind);
  if (o.operation === "decrypt" && o.receiverId !== undefined && o.participant !== undefined) c.bindReceiver(o.receiverId, o.participant);
  readable
    .pipeThrough(transform)
    .pipeTo(writable)
    .catch(() => undefined); // the sender or receiver went away
}

scope.onrtctransform = (ev) => pipe(ev.transformer.readable, ev.transformer.writable, ev.transformer.options, ev.transformer);

scope.onmessage = (ev) => {
  const m = ev.data;
  switch (m.type) {
    case "init":
      cipherFor(m.self, m.mode);
      return;
    case "streams":
      return pipe(m.readable, m.writable, m.options, null);
  }
  const c = cipher;
  if (!c) return;
  const done = (p: Promise<unknown> | void) => void Promise.resolve(p).catch((err: unknown) => scope.postMessage({ type: "error", error: String(err) }));
  switch (m.type) {
    case "setKey":
      return done(c.setKey(m.participant, m.index, m.key).then(() => requestKeyFrames(m.participant)));
    case "setOwnKey":
      return done(c.setOwnKey(m.index, m.key, m.use));
    case "useOwnKey":
      return done(c.useOwnKey(m.index));
    case "setCallKey":
      return done(c.setCallKey(m.index, m.key, m.use).then(() => requestKeyFrames(null)));
    case "forget":
      return c.forget(m.participant);
    case "bind":
      c.bindReceiver(m.receiverId, m.participant);
      return requestKeyFrames(m.participant);
  }
};
