// One call's end-to-end encryption: the E2EE media (worker, transforms) plus the key exchange the
// server's hello asks for (participant or provisioned keys), started once the Matrix client that
// carries the keys is ready. The call view reads `state` for its "encrypted" indicator.
import { ParleyClientError } from "../../errors.ts";
import { getLogger } from "../../log.ts";
import { Store } from "../../state/store.ts";
import type { E2eeInfo } from "../protocol.ts";
import type { DecryptState, KeyMode } from "./cipher.ts";
import type { E2eeMedia } from "./e2eeMedia.ts";
import { ParticipantKeyShare, ProvisionedKeys, type CallMembersPort, type KeyTransport } from "./keyShare.ts";

export interface KeyChannel {
  transport: KeyTransport;
  members: CallMembersPort;
}

export interface EncryptionState {
  mode: KeyMode | null;
  /** Decryption health by participant ("<user id>|<device id>"), for those whose frames arrived. */
  health: Map<string, DecryptState>;
  /** Why keys cannot be exchanged (no Matrix crypto), if so. */
  error: string | null;
}

export class CallEncryption {
  readonly state = new Store<EncryptionState>({ mode: null, health: new Map(), error: null });
  readonly media: E2eeMedia;
  private readonly log = getLogger("e2ee");
  private readonly o: { roomId: string; userId: string; deviceId: string; channel: () => Promise<KeyChannel>; useDelayMs?: number; graceMs?: number };
  private share: ParticipantKeyShare | ProvisionedKeys | null = null;
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

  /** The server said hello: set the key mode and start exchanging keys (in the background). */
  begin(info: E2eeInfo | undefined): void {
    if (this.share || this.stopped) return;
    const mode: KeyMode = info?.keys ?? "participant";
    this.media.setMode(mode);
    this.state.update({ mode });
    void this.o
      .channel()
      .then((channel) => {
        if (this.stopped) return;
        const common = { roomId: this.o.roomId, transport: channel.transport, sink: this.media, ...(this.o.useDelayMs === undefined ? {} : { useDelayMs: this.o.useDelayMs }) };
        if (mode === "provisioned") {
          this.share = new ProvisionedKeys({ ...common, bot: info?.bot ?? "" });
        } else {
          this.share = new ParticipantKeyShare({
            ...common,
            self: { userId: this.o.userId, deviceId: this.o.deviceId },
            members: channel.members,
            ...(this.o.graceMs === undefined ? {} : { graceMs: this.o.graceMs }),
          });
        }
        this.share.start();
      })
      .catch((err: unknown) => {
        this.log.warn("media keys cannot be exchanged", { err: String(err) });
        const why = err instanceof ParleyClientError ? err.human : "your Matrix session has no encryption.";
        this.state.update({ error: `Media keys can't be exchanged: ${why}` });
      });
  }

  stop(): void {
    this.stopped = true;
    this.share?.stop();
    this.media.dispose();
  }
}
