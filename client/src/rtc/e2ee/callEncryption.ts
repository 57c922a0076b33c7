// One call's end-to-end encryption: the E2EE media (worker, transforms) plus the key exchange the
// room's `org.parley.call` state asks for (participant or provisioned keys, see keyMode.ts), started
// once the Matrix client that carries the keys is ready and before any media is sent. The call view
// reads `state` for its "encrypted" indicator and the key mode in the header.
import { ParleyClientError } from "../../errors.ts";
import { getLogger } from "../../log.ts";
import { Store } from "../../state/store.ts";
import { markStep } from "../../timeline.ts";
import type { E2eeInfo } from "../protocol.ts";
import type { DecryptState, KeyMode } from "./cipher.ts";
import type { E2eeMedia } from "./e2eeMedia.ts";
import { keyModeFromCallState, type CallKeyMode } from "./keyMode.ts";
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
  private readonly o: {
    roomId: string;
    userId: string;
    deviceId: string;
    channel: () => Promise<KeyChannel>;
    /** The room's `org.parley.call` content read when the meeting was opened (null: none); absent: not read. */
    roomState?: unknown;
    useDelayMs?: number;
    graceMs?: number;
  };
  private share: ParticipantKeyShare | ProvisionedKeys | null = null;
  private began = false;
  private stopped = false;

  constructor(media: E2eeMedia, opts: CallEncryption["o"]) {
    this.media = media;
    this.o = opts;
    media.events.on("status", (health) => {
      this.log.info("media decryption", Object.fromEntries(health));
      if ([...health.values()].includes("ok")) markStep("decrypted");
      this.state.update({ health });
    });
    media.events.on("error", (error) => this.log.warn("E2EE worker error", { error }));
  }

  /**
   * The server said hello: set the key mode the room's `org.parley.call` state names and start
   * exchanging keys. Resolves once the mode is set (media must not start before: the worker keys
   * frames by mode). The room's state as read when the meeting was opened (`roomState`, from the
   * user's own homeserver like the synced one) sets it at once, and the key exchange starts in the
   * background once the Matrix client that carries the keys is ready: media connects meanwhile,
   * its frames dropped until keys exist. Without it, the synced room's state is awaited.
   * `server` (the hello's e2ee) is only compared with the room's choice, never used.
   */
  async begin(server?: E2eeInfo): Promise<void> {
    if (this.began || this.stopped) return;
    this.began = true;
    if (this.o.roomState !== undefined) {
      const mode = this.modeFrom(this.o.roomState, server);
      if (!mode) return;
      void this.channelThen(async (channel) => {
        // Keys flow at once (the synced room may come 100-400 ms later on a busy page; whom to
        // send to comes with it). The synced state must agree with what was read at open: a
        // change in between is refused, not followed, and the key exchange stops.
        this.startShare(mode, channel);
        const now = keyModeFromCallState(await channel.callState());
        if ("error" in now || now.keys !== mode.keys || (now.keys === "provisioned" && mode.keys === "provisioned" && now.bot !== mode.bot)) {
          this.log.warn("the room's key mode changed while the call started");
          return this.refuse("Media keys can't be exchanged: the room's key mode changed while the call started. Join again.");
        }
      });
      return;
    }
    await this.channelThen(async (channel) => {
      const mode = this.modeFrom(await channel.callState(), server);
      if (mode) this.startShare(mode, channel);
    });
  }

  /** Runs `then` with the key channel once it is ready; a channel that cannot start refuses keys. */
  private async channelThen(then: (channel: KeyChannel) => Promise<void>): Promise<void> {
    let channel: KeyChannel;
    try {
      channel = await this.o.channel();
      if (this.stopped) return;
      await then(channel);
    } catch (err) {
      this.log.warn("media keys cannot be exchanged", { err: String(err) });
      const why = err instanceof ParleyClientError ? err.human : "your Matrix session has no encryption.";
      this.refuse(`Media keys can't be exchanged: ${why}`);
    }
  }

  /** Sets the media's key mode from the room's state content; null (and refused) if it names none. */
  private modeFrom(content: unknown, server: E2eeInfo | undefined): CallKeyMode | null {
    const mode = keyModeFromCallState(content);
    if ("error" in mode) {
      this.log.warn("the room's call state names no usable key mode", { why: mode.error });
      this.refuse("Media keys can't be exchanged: the room's call settings name no valid key mode. Ask the room's admins to fix them.");
      return null;
    }
    const bot = mode.keys === "provisioned" ? mode.bot : null;
    if (server && (server.keys !== mode.keys || (bot !== null && server.bot !== bot))) {
      this.log.warn("the server's hello names another key mode than the room; the room's is used", { room: mode.keys, server: server.keys ?? "" });
    }
    this.media.setMode(mode.keys);
    this.state.update({ mode: mode.keys, bot });
    return mode;
  }

  private startShare(mode: CallKeyMode, channel: KeyChannel): void {
    if (this.stopped || this.share) return;
    if (mode.keys === "participant" && channel.authenticatedDevices === false) {
      this.log.info("keys are bound to their sender's user by the host's Olm; the device within that user is the sender's claim");
    }
    const common = { roomId: this.o.roomId, transport: channel.transport, sink: this.media, ...(this.o.useDelayMs === undefined ? {} : { useDelayMs: this.o.useDelayMs }) };
    if (mode.keys === "provisioned") {
      this.share = new ProvisionedKeys({ ...common, bot: mode.bot });
    } else {
      this.share = new ParticipantKeyShare({
        ...common,
        self: { userId: this.o.userId, deviceId: this.o.deviceId },
        members: channel.members,
        roster: {
          devices: () => this.media.roster(),
          arrived: () => this.media.arrived(),
          onChange: (fn) => this.media.events.on("roster", () => fn()),
          onArriving: (fn) => this.media.events.on("arriving", fn),
          onLetIn: (fn) => this.media.events.on("letIn", (e) => fn(e.userId, e.by)),
          onLetInRefused: (fn) => this.media.events.on("letInRefused", (e) => fn(e.userId)),
        },
        ...(this.o.graceMs === undefined ? {} : { graceMs: this.o.graceMs }),
      });
    }
    this.share.start();
  }

  /** No keys will be exchanged: media stays undecryptable and unsent, and the header says why. */
  private refuse(error: string): void {
    this.share?.stop();
    this.share = null;
    if (this.state.get().mode === null) this.media.setMode("participant");
    this.state.update({ mode: this.state.get().mode ?? "participant", bot: this.state.get().bot, error });
  }

  stop(): void {
    this.stopped = true;
    this.share?.stop();
    this.media.dispose();
  }
}
