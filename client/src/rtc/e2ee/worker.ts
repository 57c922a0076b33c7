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
  /** Makes this sender's encoder produce a key frame (senders; RTCRtpScriptTransform only). */
  generateKeyFrame?(rid?: string): Promise<unknown>;
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
/** Video senders' transformers (this device's camera and screen). */
const videoSenders = new Set<Transformer>();

/**
 * A video decoder that never got a decryptable key frame stays black until the next one: when a
 * participant's key arrives and none was held for it (cipher.ts, `releaseFor`), ask its video
 * senders for one (the SFU relays the request).
 */
function requestKeyFrames(participant: string | null): void {
  for (const [receiverId, transformer] of videoReceivers) {
    if (participant === null || cipher?.participantOf(receiverId) === participant) void transformer.sendKeyFrameRequest?.().catch(() => undefined);
  }
}

/** After a key was set: the page hears of frames passed on; with none, the sender is asked for a key frame. */
function released(frames: number, participant: string | null): void {
  if (frames > 0) scope.postMessage({ type: "released", frames });
  else requestKeyFrames(participant);
}

/**
 * This device switched to a new key at once (a ratchet for joiners, keyShare.ts): the joiners
 * cannot read anything sent before it, so their picture starts at the first key frame under the
 * new key. One now, rather than the one a joiner asks for once the key reaches it (a round trip
 * through the SFU to this encoder: 250-300 ms of black on the joiner's screen). Every layer: the
 * joiners' layers are not known here.
 */
function generateKeyFrames(): void {
  for (const transformer of videoSenders) void transformer.generateKeyFrame?.().catch(() => undefined);
}

function cipherFor(self: string, mode: KeyMode): FrameCipher {
  cipher ??= new FrameCipher({ self, mode, onStatus: (status) => scope.postMessage({ type: "status", ...status }) });
  (globalThis as unknown as { __parleyE2eeStats: unknown }).__parleyE2eeStats = cipher.stats;
  return cipher;
}

function pipe(readable: ReadableStream, writable: WritableStream, o: TransformOptions, transformer: Transformer | null): void {
  const c = cipherFor(o.self, o.mode);
  if (o.operation === "decrypt" && o.kind === "video" && o.receiverId !== undefined && transformer) videoReceivers.set(o.receiverId, transformer);
  if (o.operation === "encrypt" && o.kind === "video" && transformer) videoSenders.add(transformer);
  const kind: MediaKind = o.kind;
  const transform = o.operation === "encrypt" ? c.encryptTransform(kind) : c.decryptTransform(o.receiverId ?? "", kind);
  if (o.operation === "decrypt" && o.receiverId !== undefined && o.participant !== undefined) c.bindReceiver(o.receiverId, o.participant);
  readable
    .pipeThrough(transform)
    .pipeTo(writable)
    .catch(() => undefined) // the sender or receiver went away
    .finally(() => {
      if (transformer) videoSenders.delete(transformer);
    });
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
  switch (m.type) {
    case "setKey":
      return inOrder(async () => {
        await c.setKey(m.participant, m.index, m.key);
        released(await c.releaseFor(m.participant), m.participant);
      });
    case "setOwnKey":
      // A key used at once while another one was in use: a switch (see generateKeyFrames).
      return inOrder(() => c.setOwnKey(m.index, m.key, m.use).then((switched) => switched && generateKeyFrames()));
    case "useOwnKey":
      return inOrder(() => c.useOwnKey(m.index));
    case "setCallKey":
      return inOrder(async () => {
        await c.setCallKey(m.index, m.key, m.use);
        released(await c.releaseFor(null), null);
      });
    case "forget":
      return inOrder(() => c.forget(m.participant));
    case "bind":
      return inOrder(() => {
        c.bindReceiver(m.receiverId, m.participant);
        requestKeyFrames(m.participant);
      });
  }
};

/**
 * Key messages take effect in the order the page sent them: each waits for the one before (a
 * key's import is asynchronous, and a `forget` or `useOwnKey` overtaking it would leave a gone
 * participant's key in place, or switch to a key not imported yet).
 */
let keyOps: Promise<unknown> = Promise.resolve();
function inOrder(op: () => unknown): void {
  keyOps = keyOps.then(op).catch((err: unknown) => scope.postMessage({ type: "error", error: String(err) }));
}
