// End-to-end encrypted media for one call, on the page's side: attaches every sender and receiver
// to the E2EE worker (RTCRtpScriptTransform where the browser has it, else createEncodedStreams
// with `encodedInsertableStreams`), hands the worker the media keys the key exchange produces,
// and keeps each remote participant's decryption health for the UI.
import { markStep } from "../../timeline.ts";
import { Emitter } from "../../state/store.ts";
import type { LetInBy, MediaTransformHook, PublishingDevice, ReceiverInfo } from "../transforms.ts";
import { participantId, type CipherStatus, type DecryptState, type KeyMode, type MediaKind } from "./cipher.ts";
import type { FromWorker, ToWorker, TransformOptions } from "./workerProtocol.ts";

export interface WorkerLike {
  postMessage(message: ToWorker, transfer?: Transferable[]): void;
  addEventListener(type: "message", fn: (ev: MessageEvent<FromWorker>) => void): void;
  terminate(): void;
}

type ScriptTransformCtor = new (worker: WorkerLike, options: TransformOptions) => unknown;

interface EncodedStreamsCapable {
  createEncodedStreams(): { readable: ReadableStream; writable: WritableStream };
}

export interface E2eeMediaEvents extends Record<string, unknown> {
  status: Map<string, DecryptState>;
  error: string;
  /** The devices in the call's media changed (see `roster` and `arrived`). */
  roster: undefined;
  /** A device in the pre-join, as the server announced it. */
  arriving: { userId: string; deviceId: string };
  /** A user let in from the lobby, as the server told it or by this device's own admit. */
  letIn: { userId: string; by: LetInBy };
  /** This device's own admit of a user, refused by the server. */
  letInRefused: { userId: string };
}

/**
 * The browser's way of attaching transforms, or null when it has none (no E2EE possible).
 * RTCRtpScriptTransform counts only with the `transform` attribute on senders and receivers: a
 * browser can have the constructor without it, and assigning `sender.transform` would then just
 * add a plain property, sending every frame in the clear.
 */
export function browserTransformApi(): { scriptTransform: ScriptTransformCtor | null; encodedStreams: boolean } | null {
  const g = globalThis as unknown as { RTCRtpScriptTransform?: ScriptTransformCtor; RTCRtpSender?: { prototype: object }; RTCRtpReceiver?: { prototype: object } };
  const sender = g.RTCRtpSender?.prototype;
  const receiver = g.RTCRtpReceiver?.prototype;
  if (!sender || !receiver) return null;
  if (g.RTCRtpScriptTransform && "transform" in sender && "transform" in receiver) return { scriptTransform: g.RTCRtpScriptTransform, encodedStreams: false };
  if ("createEncodedStreams" in sender && "createEncodedStreams" in receiver) return { scriptTransform: null, encodedStreams: true };
  return null;
}

function newE2eeWorker(): WorkerLike {
  return new Worker(new URL("./worker.ts", import.meta.url), { type: "module", name: "parley-e2ee" }) as unknown as WorkerLike;
}

/** The next call's worker, started while the pre-join shows (warmE2eeWorker); it holds no key until a call takes it. */
let spareWorker: WorkerLike | undefined;

/**
 * Starts the next call's E2EE worker now, when this browser can transform frames: its script
 * fetched, compiled and running before Join (on a busy 2-core machine, 150-200 ms of the join's
 * path otherwise, beside the peer connections). One at most; the next call takes it.
 */
export function warmE2eeWorker(): void {
  if (!spareWorker && browserTransformApi()) spareWorker = newE2eeWorker();
}

/** A worker for one call: the one warmed for it, or a new one. Never shared: each call's keys stay in its own. */
export function createE2eeWorker(): WorkerLike {
  const worker = spareWorker ?? newE2eeWorker();
  spareWorker = undefined;
  return worker;
}

export class E2eeMedia implements MediaTransformHook {
  readonly e2ee = true;
  readonly peerConfig: Partial<RTCConfiguration>;
  readonly events = new Emitter<E2eeMediaEvents>();
  readonly self: string;
  #mode: KeyMode = "participant";
  readonly #worker: WorkerLike;
  readonly #scriptTransform: ScriptTransformCtor | null;
  readonly #receivers = new WeakMap<RTCRtpReceiver, string>();
  #nextReceiver = 0;
  readonly #status = new Map<string, DecryptState>();
  #roster: PublishingDevice[] = [];

  constructor(opts: { userId: string; deviceId: string; worker: WorkerLike; scriptTransform: ScriptTransformCtor | null }) {
    this.self = participantId(opts.userId, opts.deviceId);
    this.#worker = opts.worker;
    this.#scriptTransform = opts.scriptTransform;
    // createEncodedStreams needs this (Chrome's non-standard flag); RTCRtpScriptTransform does not.
    this.peerConfig = opts.scriptTransform ? {} : ({ encodedInsertableStreams: true } as Partial<RTCConfiguration>);
    this.#worker.addEventListener("message", (ev) => this.#onWorker(ev.data));
  }

  get mode(): KeyMode {
    return this.#mode;
  }

  /** The call's key mode (from the server's hello); set before media starts. */
  setMode(mode: KeyMode): void {
    this.#mode = mode;
    this.#post({ type: "init", self: this.self, mode });
  }

  attachSender(sender: RTCRtpSender, kind: MediaKind): void {
    this.#attach(sender, { operation: "encrypt", kind, self: this.self, mode: this.#mode });
  }

  attachReceiver(receiver: RTCRtpReceiver, info: ReceiverInfo): void {
    const receiverId = `r${++this.#nextReceiver}`;
    this.#receivers.set(receiver, receiverId);
    const participant = participantId(info.userId, info.deviceId);
    this.#attach(receiver, { operation: "decrypt", kind: info.kind, self: this.self, mode: this.#mode, receiverId, participant });
  }

  receiverReassigned(receiver: RTCRtpReceiver, info: ReceiverInfo): void {
    const receiverId = this.#receivers.get(receiver);
    if (receiverId) this.#post({ type: "bind", receiverId, participant: participantId(info.userId, info.deviceId) });
  }

  /** The SFU's participant list changed: the devices in the call's media now, publishing or not yet. */
  participants(devices: PublishingDevice[]): void {
    const key = (list: PublishingDevice[]) => list.map((d) => `${participantId(d.userId, d.deviceId)} ${d.publishing !== false}`).sort().join("\n");
    if (key(devices) === key(this.#roster)) return;
    this.#roster = devices.map((d) => ({ userId: d.userId, deviceId: d.deviceId, publishing: d.publishing !== false }));
    this.events.emit("roster", undefined);
  }

  /** A device in the pre-join, as the server announced it: the key share may send it the key. */
  arriving(device: PublishingDevice): void {
    this.events.emit("arriving", { userId: device.userId, deviceId: device.deviceId });
  }

  /** A user let in from the lobby: the key share may send them the key (once it confirmed the invite, when the server told it). */
  letIn(userId: string, by: LetInBy): void {
    this.events.emit("letIn", { userId, by });
  }

  /** The server refused this device's own admit of a user: the key share takes back the key it sent them. */
  letInRefused(userId: string): void {
    this.events.emit("letInRefused", { userId });
  }

  /** The devices publishing media in the call, as the SFU's participant list last said. */
  roster(): { userId: string; deviceId: string }[] {
    return this.#roster.filter((d) => d.publishing).map((d) => ({ userId: d.userId, deviceId: d.deviceId }));
  }

  /** Every device in the call's media, publishing or not yet (Parley admitted its session). */
  arrived(): { userId: string; deviceId: string }[] {
    return this.#roster.map((d) => ({ userId: d.userId, deviceId: d.deviceId }));
  }

  setKey(participant: string, index: number, key: Uint8Array): void {
    this.#post({ type: "setKey", participant, index, key });
  }

  setOwnKey(index: number, key: Uint8Array, use: boolean): void {
    this.#post({ type: "setOwnKey", index, key, use });
  }

  useOwnKey(index: number): void {
    this.#post({ type: "useOwnKey", index });
  }

  setCallKey(index: number, key: Uint8Array, use: boolean): void {
    this.#post({ type: "setCallKey", index, key, use });
  }

  /** A participant left: drop its keys and its health entry. */
  forget(participant: string): void {
    this.#post({ type: "forget", participant });
    if (this.#status.delete(participant)) this.events.emit("status", new Map(this.#status));
  }

  dispose(): void {
    this.#worker.terminate();
  }

  #attach(target: RTCRtpSender | RTCRtpReceiver, options: TransformOptions): void {
    if (this.#scriptTransform) {
      (target as { transform: unknown }).transform = new this.#scriptTransform(this.#worker, options);
      return;
    }
    const { readable, writable } = (target as unknown as EncodedStreamsCapable).createEncodedStreams();
    this.#post({ type: "streams", readable, writable, options }, [readable as unknown as Transferable, writable as unknown as Transferable]);
  }

  #post(message: ToWorker, transfer: Transferable[] = []): void {
    this.#worker.postMessage(message, transfer);
  }

  #onWorker(m: FromWorker): void {
    if (m.type === "error") return void this.events.emit("error", m.error);
    if (m.type === "released") return void markStep("held-released");
    const status: CipherStatus = m;
    if (this.#status.get(status.participant) === status.state) return;
    this.#status.set(status.participant, status.state);
    this.events.emit("status", new Map(this.#status));
  }
}
