// The bot's end-to-end encryption as start() wires it: the Olm device (opened once the bot user
// exists), the encrypted-room notices, and the appservice handlers that feed and use them.
// Work that arrives before the device is open waits for it.
import type { Homeserver } from "../calls/ports.ts";
import { getLogger } from "../log.ts";
import type { AppserviceHandlers } from "../matrix/appserviceHttp.ts";
import type { RawEvent } from "../matrix/events.ts";
import { EncryptedRooms, withEncryptedNotices } from "./encryptedRooms.ts";
import type { CryptoHttp } from "./http.ts";
import { CryptoInbound } from "./inbound.ts";
import { OlmDevice } from "./olmDevice.ts";
import type { BotDevice } from "./port.ts";

export interface BotCryptoOptions {
  userId: string;
  /** crypto.path and crypto.storeKey of the config. */
  file: string;
  storeKey: string;
  http: CryptoHttp;
  displayName?: string;
  /** How often requests that failed (keys upload, queries) are tried again. */
  retryIntervalMs?: number;
}

interface Opened {
  device: OlmDevice;
  rooms: EncryptedRooms;
}

export class BotCrypto {
  private readonly opts: BotCryptoOptions;
  private readonly opened: Promise<Opened>;
  private settle!: { resolve: (o: Opened) => void; reject: (err: unknown) => void };
  private state: "new" | "opening" | "open" | "stopped" = "new";
  private timer: NodeJS.Timeout | undefined;
  private readonly log = getLogger("crypto");

  constructor(opts: BotCryptoOptions) {
    this.opts = opts;
    this.opened = new Promise<Opened>((resolve, reject) => {
      this.settle = { resolve, reject };
    });
    this.opened.catch(() => undefined); // waiters see the failure; start() reports it
  }

  /** Opens (or creates) the device; call once the bot user exists on the homeserver. */
  async start(): Promise<void> {
    if (this.state !== "new") throw new Error(`BotCrypto.start() when ${this.state}`);
    this.state = "opening";
    try {
      const device = await OlmDevice.open(this.opts);
      if (this.stopped()) {
        await device.close();
        throw new Error("the bot's crypto was stopped while it opened");
      }
      const rooms = new EncryptedRooms(device, this.opts.http);
      this.state = "open";
      this.timer = setInterval(() => {
        device.retryOutgoing().catch((err: unknown) => this.log.warn({ err }, "retrying Olm requests failed"));
      }, this.opts.retryIntervalMs ?? 30_000);
      this.timer.unref();
      this.settle.resolve({ device, rooms });
    } catch (err) {
      this.state = "stopped";
      this.settle.reject(err);
      throw err;
    }
  }

  private stopped(): boolean {
    return this.state === "stopped";
  }

  /**
   * Where the device is: "new" or "opening" (start() not done), "open", or "stopped" (stopped,
   * or failed to open). The health check probes an open device further (OlmDevice.probe).
   */
  get status(): "new" | "opening" | "open" | "stopped" {
    return this.state;
  }

  /** Resolves once the open device answers (see OlmDevice.probe); rejects unless it is open. */
  async probe(): Promise<void> {
    if (this.state !== "open") throw new Error(`the bot's Olm device is ${this.state}`);
    await (await this.opened).device.probe();
  }

  /** The device's port (for sending keys to devices). */
  async device(): Promise<BotDevice> {
    return (await this.opened).device;
  }

  /** The homeserver port with notices to encrypted rooms Megolm-encrypted. */
  homeserver(inner: Homeserver): Homeserver {
    return withEncryptedNotices(inner, async () => (await this.opened).rooms);
  }

  /** Appservice handlers: E2EE parts to the device, encrypted events decrypted, then `route`. */
  handlers(route: (event: RawEvent) => Promise<void>): Pick<AppserviceHandlers, "onEvent" | "onTransactionParts"> {
    let inbound: Promise<CryptoInbound> | undefined;
    const get = () => (inbound ??= this.opened.then(({ device, rooms }) => new CryptoInbound({ device, rooms, route })));
    return {
      onEvent: async (event) => (await get()).onEvent(event),
      onTransactionParts: async (parts) => (await get()).onTransactionParts(parts),
    };
  }

  /** Writes the device's state a last time and closes it. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    const was = this.state;
    this.state = "stopped";
    if (was === "new") this.settle.reject(new Error("the bot's crypto was stopped before it started"));
    if (was === "open") await (await this.opened).device.close();
  }
}
