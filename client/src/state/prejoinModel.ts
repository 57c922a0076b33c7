// The pre-join screen: camera preview, microphone level, device choice, and whether to join with
// the mic and camera on. When the user joins, the tracks are handed to the call (not stopped).
import { toClientError } from "../errors.ts";
import { isTrusted, type CallHost } from "../matrix/callTrust.ts";
import type { DeviceLists } from "../rtc/devices.ts";
import { Store } from "./store.ts";

export interface PrejoinMediaPort {
  list(): Promise<DeviceLists>;
  open(kind: "audio" | "video", deviceId?: string): Promise<MediaStreamTrack>;
  stop(track: MediaStreamTrack | null): void;
  /** Calls back when devices are plugged in or out; returns the unsubscribe. */
  onDeviceChange(fn: () => void): () => void;
}

export interface PrejoinState {
  devices: DeviceLists;
  audioDeviceId: string | null;
  videoDeviceId: string | null;
  micOn: boolean;
  cameraOn: boolean;
  audio: MediaStreamTrack | null;
  video: MediaStreamTrack | null;
  /** Starting a device. */
  starting: { audio: boolean; video: boolean };
  micError: string | null;
  cameraError: string | null;
  /** Where the user's identity goes for the call; "ask" until the user says yes to the host. */
  host: CallHost | null;
}

/** The call's host as decided for the room, and how the user's yes to it is recorded. */
export interface HostConsentPort {
  host: CallHost;
  /** Remembers the yes for this host; returns the decision made again. */
  confirm(): CallHost;
}

export interface LocalMediaHandoff {
  audio: MediaStreamTrack | null;
  video: MediaStreamTrack | null;
  micOn: boolean;
  cameraOn: boolean;
  audioDeviceId: string | null;
  videoDeviceId: string | null;
}

const NO_DEVICES: DeviceLists = { audioinput: [], videoinput: [], audiooutput: [] };

export class PrejoinModel {
  readonly state = new Store<PrejoinState>({
    devices: NO_DEVICES,
    audioDeviceId: null,
    videoDeviceId: null,
    micOn: true,
    cameraOn: true,
    audio: null,
    video: null,
    starting: { audio: false, video: false },
    micError: null,
    cameraError: null,
    host: null,
  });
  private readonly media: PrejoinMediaPort;
  private consent: HostConsentPort | undefined;
  private offDeviceChange: (() => void) | null = null;
  private handedOff = false;
  private disposed = false;

  constructor(media: PrejoinMediaPort, consent?: HostConsentPort) {
    this.media = media;
    if (consent) this.setConsent(consent);
  }

  /**
   * The call's host, once known: a pre-join shown while asking to join starts before the room
   * is open (and so before its call is known), and learns it when the room opens.
   */
  setConsent(consent: HostConsentPort): void {
    this.consent = consent;
    this.state.update({ host: consent.host });
  }

  /** Whether the call may start: no host, or one the user's identity may go to. */
  get canJoin(): boolean {
    const { host } = this.state.get();
    return !host || isTrusted(host);
  }

  /** The user said yes to sending their identity to the call's host. */
  confirmHost(): void {
    if (this.consent && this.state.get().host?.trust === "ask") this.state.update({ host: this.consent.confirm() });
  }

  async start(): Promise<void> {
    this.offDeviceChange = this.media.onDeviceChange(() => void this.refreshDevices());
    await Promise.all([this.openDevice("audio"), this.openDevice("video")]);
    await this.refreshDevices();
  }

  async setMic(on: boolean): Promise<void> {
    this.state.update({ micOn: on });
    const { audio } = this.state.get();
    // A muted mic keeps its track (disabled) so unmuting in the call is instant.
    if (audio) audio.enabled = on;
    else if (on) await this.openDevice("audio");
  }

  async setCamera(on: boolean): Promise<void> {
    this.state.update({ cameraOn: on });
    if (!on) {
      // A camera that is off is released (its light goes out).
      this.media.stop(this.state.get().video);
      this.state.update({ video: null, cameraError: null });
    } else await this.openDevice("video");
  }

  async chooseDevice(kind: "audio" | "video", deviceId: string): Promise<void> {
    this.state.update(kind === "audio" ? { audioDeviceId: deviceId } : { videoDeviceId: deviceId });
    const { micOn, cameraOn } = this.state.get();
    if (kind === "audio" || cameraOn) await this.openDevice(kind);
    if (kind === "audio" && !micOn) {
      const a = this.state.get().audio;
      if (a) a.enabled = false;
    }
  }

  /** The call takes the tracks over; this model no longer stops them. */
  handOff(): LocalMediaHandoff {
    this.handedOff = true;
    const s = this.state.get();
    return {
      audio: s.audio,
      video: s.cameraOn ? s.video : null,
      micOn: s.micOn && !!s.audio,
      cameraOn: s.cameraOn && !!s.video,
      audioDeviceId: s.audioDeviceId,
      videoDeviceId: s.videoDeviceId,
    };
  }

  dispose(): void {
    this.disposed = true;
    this.offDeviceChange?.();
    if (!this.handedOff) {
      const { audio, video } = this.state.get();
      this.media.stop(audio);
      this.media.stop(video);
    }
  }

  /** Device opens in flight: joining waits for them (see settled). */
  private readonly inflight = new Set<Promise<void>>();

  /** Resolves once no device is being opened: what the user sees is what the call gets. */
  async settled(): Promise<void> {
    while (this.inflight.size > 0) await Promise.allSettled([...this.inflight]);
  }

  private openDevice(kind: "audio" | "video"): Promise<void> {
    const opening = this.openDeviceNow(kind);
    this.inflight.add(opening);
    void opening.finally(() => this.inflight.delete(opening)).catch(() => undefined);
    return opening;
  }

  private async openDeviceNow(kind: "audio" | "video"): Promise<void> {
    const s = this.state.get();
    // The mic is opened even when muted (a disabled track); the camera only when on.
    if (kind === "video" && !s.cameraOn) return;
    const deviceId = (kind === "audio" ? s.audioDeviceId : s.videoDeviceId) ?? undefined;
    this.state.update({ starting: { ...s.starting, [kind]: true } });
    try {
      const track = await this.media.open(kind, deviceId);
      if (this.disposed) return this.media.stop(track);
      const cur = this.state.get();
      // The camera may have been turned off while it was starting.
      if (kind === "video" && !cur.cameraOn) return this.media.stop(track);
      const old = kind === "audio" ? cur.audio : cur.video;
      if (old && old !== track) this.media.stop(old);
      if (kind === "audio") track.enabled = cur.micOn;
      const chosen = track.getSettings?.().deviceId ?? deviceId ?? null;
      this.state.update(
        kind === "audio"
          ? { audio: track, micError: null, audioDeviceId: chosen, starting: { ...this.state.get().starting, audio: false } }
          : { video: track, cameraError: null, videoDeviceId: chosen, starting: { ...this.state.get().starting, video: false } },
      );
      // Labels appear once permission is granted.
      await this.refreshDevices();
    } catch (err) {
      const human = toClientError(err, "media").human;
      this.state.update(
        kind === "audio"
          ? { micError: human, micOn: false, starting: { ...this.state.get().starting, audio: false } }
          : { cameraError: human, cameraOn: false, starting: { ...this.state.get().starting, video: false } },
      );
    }
  }

  private async refreshDevices(): Promise<void> {
    try {
      const devices = await this.media.list();
      if (!this.disposed) this.state.update({ devices });
    } catch {
      // enumerateDevices failing leaves the lists as they were
    }
  }
}
