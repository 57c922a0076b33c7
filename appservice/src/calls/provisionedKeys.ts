// Provisioned media keys: for a call in this mode the bot's Olm device makes one 32-byte call key
// and sends it, Olm-encrypted, to every device joined to the call (a signalling session granted
// after the OpenID and policy checks, with the Matrix device it declared), and makes a new one on
// every membership change: one to-device message per device and rotation, O(N) instead of the
// participant mode's O(N^2). The message has MatrixRTC's to-device key shape; clients accept such
// keys only from the bot (and derive a per-sender frame key from it).
import { getLogger } from "../log.ts";

export const CALL_KEYS_EVENT = "io.element.call.encryption_keys";

/**
 * A key that could not reach some devices (their keys not downloadable yet, no Olm session: a
 * one-time-key claim that came back empty, or the homeserver refusing the send) is sent again
 * to those still in the call after each of these waits, until a newer key supersedes it.
 */
export const PROVISIONED_KEY_RESEND_MS: readonly number[] = [1000, 2000, 4000, 8000, 16000];

export interface KeyDevice {
  userId: string;
  deviceId: string;
}

/** The bot's Olm device, as this service needs it. */
export interface KeySender {
  readonly userId: string;
  deviceId(): Promise<string>;
  sendToDevices(type: string, devices: KeyDevice[], content: Record<string, unknown>): Promise<{ sent: KeyDevice[]; unreachable: KeyDevice[] }>;
}

export interface ProvisionedKeyOptions {
  sender: KeySender;
  random: () => Uint8Array;
  now?: () => number;
  /** Membership changes closer together than this make one rotation. */
  coalesceMs?: number;
  /** The waits before each resend of a key to the devices it did not reach (PROVISIONED_KEY_RESEND_MS). */
  resendMs?: readonly number[];
  /** Told of every rotation (metrics, benchmarks). */
  onRotated?: ((e: { callId: string; index: number; devices: number; unreachable: number }) => void) | undefined;
}

interface CallKeys {
  roomId: string;
  members: Map<object, KeyDevice>;
  index: number;
  timer: ReturnType<typeof setTimeout> | undefined;
  /** The next resend of the current key to devices it did not reach. */
  resend: ReturnType<typeof setTimeout> | undefined;
  /** Rotations (and resends) of one call run one after the other. */
  chain: Promise<void>;
}

export class ProvisionedKeyService {
  private readonly log = getLogger("calls.keys");
  private readonly calls = new Map<string, CallKeys>();
  private readonly o: Required<Omit<ProvisionedKeyOptions, "onRotated">> & Pick<ProvisionedKeyOptions, "onRotated">;

  constructor(opts: ProvisionedKeyOptions) {
    this.o = { now: () => Date.now(), coalesceMs: 50, resendMs: PROVISIONED_KEY_RESEND_MS, ...opts };
  }

  /** A device joined the call (its signalling session said hello with a device id). */
  join(callId: string, roomId: string, member: object, device: KeyDevice): void {
    let call = this.calls.get(callId);
    if (!call) this.calls.set(callId, (call = { roomId, members: new Map(), index: -1, timer: undefined, resend: undefined, chain: Promise.resolve() }));
    call.members.set(member, device);
    this.schedule(callId, call);
  }

  /** A device's session ended: the others get a new key it never sees. */
  leave(callId: string, member: object): void {
    const call = this.calls.get(callId);
    if (!call?.members.delete(member)) return;
    if (call.members.size === 0) {
      clearTimeout(call.timer);
      clearTimeout(call.resend);
      this.calls.delete(callId);
      return;
    }
    this.schedule(callId, call);
  }

  /** Resolves when the rotations queued for `callId` are done (tests, benchmarks). */
  settled(callId: string): Promise<void> {
    return this.calls.get(callId)?.chain ?? Promise.resolve();
  }

  stop(): void {
    for (const call of this.calls.values()) {
      clearTimeout(call.timer);
      clearTimeout(call.resend);
    }
    this.calls.clear();
  }

  private schedule(callId: string, call: CallKeys): void {
    clearTimeout(call.timer);
    clearTimeout(call.resend); // the next key goes to every member
    call.resend = undefined;
    call.timer = setTimeout(() => {
      call.timer = undefined;
      call.chain = call.chain.then(() => this.rotate(callId, call)).catch((err) => this.log.warn({ err, callId }, "call key not sent"));
    }, this.o.coalesceMs);
  }

  private async rotate(callId: string, call: CallKeys): Promise<void> {
    if (this.calls.get(callId) !== call || call.members.size === 0) return;
    const botDevice = await this.o.sender.deviceId();
    // The member set is read after the last wait before sending: a device evicted meanwhile
    // (leave() is synchronous at eviction) is not among the recipients of this key.
    if (this.calls.get(callId) !== call || call.members.size === 0) return;
    call.index = (call.index + 1) % 256;
    const devices = [...new Map([...call.members.values()].map((d) => [deviceKey(d), d])).values()];
    const key = Buffer.from(this.o.random()).toString("base64");
    const content = {
      keys: { index: call.index, key },
      member: { id: `${this.o.sender.userId}:${botDevice}`, claimed_device_id: botDevice },
      room_id: call.roomId,
      session: { application: "m.call", call_id: "", scope: "m.room" },
      sent_ts: this.o.now(),
    };
    const outcome = await this.send(callId, devices, content);
    this.log.info({ callId, index: call.index, devices: outcome.sent.length }, "call key rotated");
    this.o.onRotated?.({ callId, index: call.index, devices: outcome.sent.length, unreachable: outcome.unreachable.length });
    this.scheduleResend(callId, call, call.index, content, outcome.unreachable, 0);
  }

  /** Sends the key; a send that fails outright reached nobody. */
  private async send(callId: string, devices: KeyDevice[], content: Record<string, unknown>): Promise<{ sent: KeyDevice[]; unreachable: KeyDevice[] }> {
    try {
      const outcome = await this.o.sender.sendToDevices(CALL_KEYS_EVENT, devices, content);
      if (outcome.unreachable.length) {
        this.log.warn({ callId, unreachable: outcome.unreachable.map(deviceKey) }, "call key could not be sent to some devices");
      }
      return outcome;
    } catch (err) {
      this.log.warn({ err, callId, devices: devices.length }, "call key not sent");
      return { sent: [], unreachable: devices };
    }
  }

  /**
   * The key at `index` goes again to the devices it missed that are still in the call, after
   * resendMs[`round`], unless a newer key went to everyone meanwhile (a rotation cancels this).
   */
  private scheduleResend(callId: string, call: CallKeys, index: number, content: Record<string, unknown>, missed: KeyDevice[], round: number): void {
    if (!missed.length) return;
    const wait = this.o.resendMs[round];
    if (wait === undefined) {
      this.log.warn({ callId, index, devices: missed.map(deviceKey) }, "call key given up for some devices until the next rotation");
      return;
    }
    clearTimeout(call.resend);
    call.resend = setTimeout(() => {
      call.resend = undefined;
      call.chain = call.chain
        .then(async () => {
          if (this.calls.get(callId) !== call || call.index !== index) return;
          const members = new Set([...call.members.values()].map(deviceKey));
          const still = missed.filter((d) => members.has(deviceKey(d)));
          if (!still.length) return;
          const outcome = await this.send(callId, still, { ...content, sent_ts: this.o.now() });
          if (outcome.sent.length) this.log.info({ callId, index, devices: outcome.sent.length }, "call key sent again to devices it had missed");
          if (this.calls.get(callId) === call && call.index === index) this.scheduleResend(callId, call, index, content, outcome.unreachable, round + 1);
        })
        .catch((err) => this.log.warn({ err, callId }, "call key not sent again"));
    }, wait);
  }
}

const deviceKey = (d: KeyDevice) => `${d.userId}|${d.deviceId}`;
