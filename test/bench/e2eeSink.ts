// The E2EE key benchmark's key sink (test/bench/e2ee.ts): a device's KeySink as the E2EE worker
// is one, a real FrameCipher fed in order, each key recorded with when it reached the cipher.
import { FrameCipher, type KeyMode } from "../../client/src/rtc/e2ee/cipher.ts";
import type { KeySink } from "../../client/src/rtc/e2ee/keyShare.ts";

const now = () => performance.now();

export interface Held {
  key: Uint8Array;
  /** When the key was derived into the cipher (performance.now()). */
  at: number;
}

/**
 * A device's KeySink as the E2EE worker is one: a real FrameCipher fed in order, each call
 * recorded with the time its key was derived and in the ring. Provisioned call keys count as
 * the device's own keys (it sends with them).
 */
export class RecordingSink implements KeySink {
  readonly cipher: FrameCipher;
  readonly own = new Map<number, Held & { usedAt?: number }>();
  /** Remote participants' keys: participant -> index -> key. */
  readonly received = new Map<string, Map<number, Held>>();
  latestOwn: number | undefined;
  private chain: Promise<void> = Promise.resolve();

  /** `failed`: told of a key the cipher refused (the benchmark's failed checks). */
  private readonly failed: (what: string) => void;

  constructor(self: string, mode: KeyMode, failed: (what: string) => void) {
    this.cipher = new FrameCipher({ self, mode });
    this.failed = failed;
  }

  private queue(op: () => Promise<void> | void): void {
    this.chain = this.chain.then(op).catch((err: unknown) => this.failed(`cipher: ${String(err)}`));
  }

  /** Resolves when every key handed over so far is in the cipher. */
  idle(): Promise<void> {
    return this.chain;
  }

  private ownSet(index: number, key: Uint8Array, use: boolean): void {
    const at = now();
    this.own.set(index, { key, at, ...(use ? { usedAt: at } : {}) });
    this.latestOwn = index;
  }

  setOwnKey(index: number, key: Uint8Array, use: boolean): void {
    this.queue(async () => {
      await this.cipher.setOwnKey(index, key, use);
      this.ownSet(index, key, use);
    });
  }

  setCallKey(index: number, key: Uint8Array, use: boolean): void {
    this.queue(async () => {
      await this.cipher.setCallKey(index, key, use);
      this.ownSet(index, key, use);
    });
  }

  useOwnKey(index: number): void {
    this.queue(() => {
      this.cipher.useOwnKey(index);
      const own = this.own.get(index);
      if (own) own.usedAt = now();
    });
  }

  setKey(participant: string, index: number, key: Uint8Array): void {
    this.queue(async () => {
      await this.cipher.setKey(participant, index, key);
      const byIndex = this.received.get(participant) ?? new Map<number, Held>();
      byIndex.set(index, { key, at: now() });
      this.received.set(participant, byIndex);
    });
  }

  forget(participant: string): void {
    this.queue(() => {
      this.cipher.forget(participant);
      this.received.delete(participant);
    });
  }

  /** The key this device sends with now, if it has switched to its latest one. */
  sending(): (Held & { index: number; usedAt: number }) | undefined {
    const index = this.latestOwn;
    const own = index === undefined ? undefined : this.own.get(index);
    return index !== undefined && own?.usedAt !== undefined && this.cipher.ownKeyIndex === index ? { ...own, index, usedAt: own.usedAt } : undefined;
  }
}
