// One call's end-to-end encryption: the E2EE media (worker, transforms) plus the key exchange the
// room's `org.parley.call` state asks for (participant or provisioned keys, see keyMode.ts), started
// once the Matrix client that carries the keys is ready and before any media is sent. The call view
// reads `state` for its "encrypted" indicator and the key mode in the header.
import { ParleyClientError } from "../../errors.ts";
import { getLogger } from "../../log.ts";
import { Store } from "../../state/store.ts";
import type { E2eeInfo } from "../protocol.ts";
import type { DecryptState, KeyMode } from "./cipher.ts";
import type { E2eeMedia } from "./e2eeMedia.ts";
import { keyModeFromCallState } from "./keyMode.ts";
import { ParticipantKeyShare, ProvisionedKeys, type CallMembersPort, type KeyTransport } from "./keyShare.ts";

export interface KeyChannel {
  transport: KeyTransport;
  members: CallMembersPort;
  /** The content of the room's `org.parley.call` state (state key ""), null when there is none. */
  callState(): Promise<unknown>;
  /** False when the transport binds a key to its sender's user only (the widget API): the device is the sender's claim. */
  authenticatedDevices?: boolean;
}

export interface EncryptionState {
  mode: KeyMode | null;
  /** Provisioned mode: the bot whose keys are accepted (from the room's state). */
  bot: string | null;
  /** Decryption health by participant ("<user id>|<device id>"), for those whose frames arrived. */
  health: Map<string, DecryptState>;
  /** Why keys cannot be exchanged (no Matrix crypto, no valid key mode), if so. */
  error: string | null;
}

export class CallEncryption {
  readonly state = new Store<EncryptionState>({ mode: null, bot: null, health: new Map(), error: null });
  readonly media: E2eeMedia;
  private readonly log = getLogger("e2ee");
  private readonly o: { roomId: string; userId: string; deviceId: string; channel: () => Promise<KeyChannel>; useDelayMs?: number; graceMs?: number };
  private share: ParticipantKeyShare | ProvisionedKeys | null = null;
  private began = false;
  private stopped = false;

  constructor(media: E2eeMedia, opts: CallEncryption["o"]) {
    this.media = media;
    this.o = opts;
    media.events.on("status", (health) => {
      this.log.info("media decryption", Object.fromEntries(health));
      this.state.update({ health });
    });
    media.events.on("error", (error) => this.log.warn("E2EE worker error", { error }));
  }

  /**
   * The server said hello: read the key mode from the room, set it, and start exchanging keys.
   * Resolves once the mode is set (media must not start before: the worker keys frames by mode).
   * `server` (the hello's e2ee) is only compared with the room's choice, never used.
   */
  async begin(server?: E2eeInfo): Promise<void> {
    if (this.began || this.stopped) return;
    this.began = true;
    let channel: KeyChannel;
    let content: unknown;
    try {
      channel = await this.o.channel();
      content = await channel.callState();
    } catch (err) {
      this.log.warn("media keys cannot be exchanged", { err: String(err) });
      const why = err instanceof ParleyClientError ? err.human : "your Matrix session has no encryption.";
      return this.refuse(`Media keys can't be exchanged: ${why}`);
    }
    if (this.stopped) return;
    const mode = keyModeFromCallState(content);
    if ("error" in mode) {
      this.log.warn("the room's call state names no usable key mode", { why: mode.error });
      return this.refuse("Media keys can't be exchanged: the room's call settings name no valid key mode. Ask the room's admins to fix them.");
    }
    if (mode.keys === "participant" && channel.authenticatedDevices === false) {
      this.log.info("keys are bound to their sender's user by the host's Olm; the device within that user is the sender's claim");
    }
    const bot = mode.keys === "provisioned" ? mode.bot : null;
    if (server && (server.keys !== mode.keys || (bot !== null && server.bot !== bot))) {
      this.log.warn("the server's hello names another key mode than the room; the room's is used", { room: mode.keys, server: server.keys ?? "" });
    }
    this.media.setMode(mode.keys);
    this.state.update({ mode: mode.keys, bot });
    const common = { roomId: this.o.roomId, transport: channel.transport, sink: this.media, ...(this.o.useDelayMs === undefined ? {} : { useDelayMs: this.o.useDelayMs }) };
    if (mode.keys === "provisioned") {
      this.share = new ProvisionedKeys({ ...common, bot: mode.bot });
    } else {
      this.share = new ParticipantKeyShare({
        ...common,
        self: { userId: this.o.userId, deviceId: this.o.deviceId },
        members: channel.members,
        roster: { devices: () => this.media.roster(), onChange: (fn) => this.media.events.on("roster", () => fn()) },
        ...(this.o.graceMs === undefined ? {} : { graceMs: this.o.graceMs }),
      });
    }
    this.share.start();
  }

  /** No keys will be exchanged: media stays undecryptable and unsent, and the header says why. */
  private refuse(error: string): void {
    this.media.setMode("participant");
    this.state.update({ mode: "participant", bot: null, error });
  }

  stop(): void {
    this.stopped = true;
    this.share?.stop();
    this.media.dispose();
  }
}
