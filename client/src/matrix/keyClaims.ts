// One-time-key claims of this device's Rust crypto (matrix-js-sdk's KeyClaimManager, asked by
// every to-device encryption and by the room feed's Olm preparation), as Parley wants them:
//
// - a claim waits while the crypto takes in a sync carrying encrypted to-device messages
//   (claimsAfterIncoming);
// - a device whose claim came back without a key is claimed again after a second (doubling), not
//   after Rust crypto's 15 s (claimsRetrySooner).
import type { MatrixClient } from "matrix-js-sdk";
import type { Logger } from "../log.ts";
import { participantId } from "../rtc/e2ee/cipher.ts";
import { realTimers, type Timers } from "../timers.ts";
import { settledWithin, type RustCryptoInternals } from "./deviceCrypto.ts";

/** The longest a one-time-key claim waits for the encrypted to-device messages of a sync being taken in (claimsAfterIncoming). */
export const CLAIM_WAITS_FOR_INCOMING_MS = 1000;

/**
 * A one-time-key claim (the start of a new Olm session, matrix-js-sdk's KeyClaimManager, asked by
 * every to-device encryption and by our own preparation) waits while the device's crypto takes in
 * a sync that carries encrypted to-device messages. One of them may be a pre-key message from the
 * very device the claim is for: a host's media key to the knocker it lets in, while the knocker's
 * page sends its own key to that host at its arrival in the call. Taken in first, that message
 * makes the session both ways, and the claim is not needed. Claimed first, the claim's answer
 * and the message's decryption both write the device's Olm state to its store, and the message
 * waited for the claim: on a busy knocker's page the host's key came out of its sync 260-510 ms
 * after the sync answered (docs/join.md, twenty-ninth pass). A claim waits at most `waitMs`.
 */
export function claimsAfterIncoming(client: MatrixClient, log?: Logger, waitMs = CLAIM_WAITS_FOR_INCOMING_MS): void {
  const internals = client.getCrypto() as unknown as (RustCryptoInternals & { processSyncChanges?: (changes: { toDeviceEvents?: { type?: unknown }[] }) => Promise<unknown> }) | undefined;
  const claims = internals?.keyClaimManager;
  const process = internals?.processSyncChanges;
  if (!internals || !claims || typeof process !== "function") return;
  const incoming = new Set<Promise<unknown>>();
  internals.processSyncChanges = (changes) => {
    const out = process.call(internals, changes);
    if (changes.toDeviceEvents?.some((e) => e.type === "m.room.encrypted")) {
      const taken = out.then(
        () => undefined,
        () => undefined,
      );
      incoming.add(taken);
      void taken.then(() => incoming.delete(taken));
    }
    return out;
  };
  const claim = claims.ensureSessionsForUsers;
  claims.ensureSessionsForUsers = async (logger, users) => {
    if (incoming.size) {
      const started = performance.now();
      await settledWithin(Promise.all(incoming), waitMs);
      log?.debug("a key claim waited for the to-device messages being taken in", { ms: Math.round(performance.now() - started) });
    }
    return claim.call(claims, logger, users);
  };
}

export interface ClaimRetryLimits {
  /** A device whose one-time-key claim came back without a key is first claimed again after this... */
  firstMs: number;
  /** ... doubling with each claim that comes back without one, up to this (Rust crypto's own ceiling). */
  maxMs: number;
  /** Devices whose claims came back without a key, remembered at most (the oldest forgotten first). */
  devices: number;
}

export const CLAIM_RETRY: ClaimRetryLimits = { firstMs: 1000, maxMs: 15 * 60_000, devices: 1000 };

/**
 * When a device may be claimed again after claims that came back without a one-time key for it:
 * `firstMs` after the first, doubling with each one after, up to `maxMs`. A claim that brings a
 * key forgets the device.
 */
export class EmptyClaimBackoff {
  private readonly failed = new Map<string, { failures: number; until: number }>();
  private readonly limits: ClaimRetryLimits;
  private readonly now: () => number;

  constructor(limits: ClaimRetryLimits = CLAIM_RETRY, now: () => number = () => Date.now()) {
    this.limits = limits;
    this.now = now;
  }

  /** Whether the device is still waiting out its last empty claim. */
  waiting(userId: string, deviceId: string): boolean {
    const f = this.failed.get(participantId(userId, deviceId));
    return !!f && this.now() < f.until;
  }

  /** The claim came back without a key for the device: returns how long until it is claimed again. */
  emptied(userId: string, deviceId: string): number {
    const k = participantId(userId, deviceId);
    const failures = (this.failed.get(k)?.failures ?? 0) + 1;
    const ms = Math.min(this.limits.firstMs * 2 ** Math.min(failures - 1, 30), this.limits.maxMs);
    this.failed.delete(k);
    this.failed.set(k, { failures, until: this.now() + ms });
    while (this.failed.size > this.limits.devices) this.failed.delete(this.failed.keys().next().value!);
    return ms;
  }

  /** The claim brought a key for the device. */
  claimed(userId: string, deviceId: string): void {
    this.failed.delete(participantId(userId, deviceId));
  }
}

/** What claimsRetrySooner needs of matrix-sdk-crypto-wasm (the module, or a fake in unit tests). */
export interface ClaimWasm {
  KeysClaimRequest: new (id: string, body: string) => ClaimRequest;
  RequestType: { KeysClaim: number };
}

interface ClaimRequest {
  readonly id: string;
  readonly body: string;
  readonly type: number;
}

/** `{ user: { device: algorithm } }`, as a claim asks and answers. */
type DeviceMap = Record<string, Record<string, unknown>>;

function devicesIn(map: unknown): [string, string][] {
  if (!map || typeof map !== "object") return [];
  return Object.entries(map as DeviceMap).flatMap(([u, ds]) => (ds && typeof ds === "object" ? Object.keys(ds).map((d): [string, string] => [u, d]) : []));
}

const serverOf = (userId: string) => userId.slice(userId.indexOf(":") + 1);

/**
 * A device whose one-time-key claim comes back without a key is claimed again after
 * `CLAIM_RETRY.firstMs` (doubling), where Rust crypto would not claim it again for 15 s
 * (doubling), and would meanwhile skip it in every encryption.
 *
 * The case that matters: a device claimed as its keys go up. Synapse stores a device's keys before
 * its one-time keys, so a key query and a claim in between find the device with no one-time key
 * (in a kept failed run, the host's claim reached the knocker's homeserver 8 ms before the
 * knocker's upload was answered). A host's page prepares its Olm session with a knocker as the
 * knock comes (roomFeed.ts), and a knocker's keys may go up just then (another client's, or a
 * device new to the meeting). Rust crypto then had no session with the knocker for 15 s after
 * that claim, and the media key of the admission that followed reached nobody
 * (prejoinKeys.test.ts, flaky in 1 of 4 fresh-clone CI runs and 1 of 6 local runs on 4 December).
 *
 * How: a claim's answer that lacks a device it asked for (not one whose server failed: Rust crypto
 * keeps that back-off, per server) is handed to the machine under another request id, so that it
 * makes the sessions the answer allows and records no failure for the missing devices (it
 * records them only for the answer to the request it stashed); the device waits here instead
 * (EmptyClaimBackoff), and a claim asked meanwhile leaves it out.
 */
export function claimsRetrySooner(client: MatrixClient, wasm: ClaimWasm, log?: Logger, limits: ClaimRetryLimits = CLAIM_RETRY, timers: Pick<Timers, "now"> = realTimers): EmptyClaimBackoff | undefined {
  const internals = client.getCrypto() as unknown as RustCryptoInternals | undefined;
  const processor = internals?.outgoingRequestProcessor;
  const machine = internals?.olmMachine;
  const mark = machine?.markRequestAsSent;
  if (!processor || !machine || typeof mark !== "function") return undefined;
  const backoff = new EmptyClaimBackoff(limits, () => timers.now());
  /** Each claim in flight (by request id): the devices the machine asked for, and those sent. */
  const asked = new Map<string, { all: [string, string][]; sent: [string, string][] }>();
  const send = processor.makeOutgoingRequest;
  processor.makeOutgoingRequest = async (request, ...rest) => {
    const r = request as Partial<ClaimRequest> | null;
    if (r?.type !== wasm.RequestType.KeysClaim || typeof r.id !== "string" || typeof r.body !== "string") return send.call(processor, request, ...rest);
    const body = JSON.parse(r.body) as { one_time_keys?: DeviceMap };
    const all = devicesIn(body.one_time_keys);
    const sent = all.filter(([u, d]) => !backoff.waiting(u, d));
    asked.set(r.id, { all, sent });
    try {
      if (sent.length === all.length) return await send.call(processor, request, ...rest);
      log?.debug("a key claim leaves out devices whose last claim brought no key", { devices: all.filter((x) => !sent.includes(x)).map(([u, d]) => participantId(u, d)) });
      if (!sent.length) return;
      const keep: DeviceMap = {};
      for (const [u, d] of sent) (keep[u] ??= {})[d] = body.one_time_keys![u]![d];
      return await send.call(processor, new wasm.KeysClaimRequest(r.id, JSON.stringify({ ...body, one_time_keys: keep })), ...rest);
    } finally {
      asked.delete(r.id);
    }
  };
  machine.markRequestAsSent = (id, type, response) => {
    const claim = type === wasm.RequestType.KeysClaim ? asked.get(id) : undefined;
    if (!claim) return mark.call(machine, id, type, response);
    let answer: { one_time_keys?: DeviceMap; failures?: Record<string, unknown> } = {};
    try {
      answer = JSON.parse(response) as typeof answer;
    } catch {
      // (the machine says what is wrong with it)
    }
    const got = new Set(devicesIn(answer.one_time_keys).map(([u, d]) => participantId(u, d)));
    const failedServers = new Set(Object.keys(answer.failures ?? {}));
    const unanswered = ([u, d]: [string, string]) => !got.has(participantId(u, d)) && !failedServers.has(serverOf(u));
    for (const [u, d] of claim.sent) if (got.has(participantId(u, d))) backoff.claimed(u, d);
    const empty = claim.sent.filter(unanswered);
    if (empty.length) {
      const retryIn = empty.map(([u, d]) => backoff.emptied(u, d));
      log?.info("no one-time key for some devices: claiming again soon", { devices: empty.map(([u, d]) => participantId(u, d)), ms: Math.min(...retryIn) });
    }
    // Under the claim's own id only when the machine would record no failure from it: every
    // device it asked for answered (or on a failed server). A device left out is as unanswered to it.
    return mark.call(machine, claim.all.some(unanswered) ? `${id}:parley-empty` : id, type, response);
  };
  return backoff;
}
