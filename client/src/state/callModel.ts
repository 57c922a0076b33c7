// The call screen: one tile per participant (display name, avatar, video, mute state, speaking),
// in the order the server's `speakers` push gives, with video only where its `videos` push
// forwards it (last-N: the others show their avatar);
// the toolbar toggles (mic, camera, screen share), switching devices, the connection banner, and
// leaving; a host's forced mute and stop-share act on this device's media here. Talks to the
// call, the membership and the room's members through narrow ports.
import { toClientError } from "../errors.ts";
import type { AvatarSource } from "../matrix/media.ts";
import type { CallPhase, CallSnapshot } from "../rtc/call.ts";
import type { EncryptionState } from "../rtc/e2ee/callEncryption.ts";
import type { ExpectedFeed, MediaSample } from "../rtc/mediaHealth.ts";
import type { FeedId, GovernanceRequest, Kind, Layer, Push } from "../rtc/protocol.ts";
import { SpeakerSelector } from "../rtc/speaker.ts";
import { realTimers, type Timers } from "../timers.ts";
import { endedByOf, evictionText, fromRoomState, joinRefusalText } from "./callEnded.ts";
import { forcedNotice, newlyForced, NOT_FORCED, onModerated, onOwnEntry, type Forced } from "./forcedMute.ts";
import { initialsOf, MemberDirectory, type MembersPort } from "./memberDirectory.ts";
import { e2eeView, MediaWatch, type CallMedia, type E2eeView, type MediaVerdict } from "./mediaState.ts";
import type { LocalMediaHandoff } from "./prejoinModel.ts";
import { activeSpeaker, forwardedFrom, NO_SPEAKERS, speakerOrder, speakersFrom, type Forwarded, type Speakers } from "./speakers.ts";
import { Store } from "./store.ts";

export { initialsOf, type E2eeView, type MembersPort };

export interface CallPort {
  readonly state: Store<CallSnapshot>;
  start(): Promise<void>;
  leave(): Promise<void>;
  setMuted(kind: "audio" | "video", muted: boolean): Promise<void>;
  setVideoSource(source: "camera" | "screen"): Promise<void>;
  replaceTrack(kind: "audio" | "video", track: MediaStreamTrack | null): Promise<void>;
  /** This device's microphone level (0..1) as sent: its own tile's speaking mark. */
  ownAudioLevel(): Promise<number>;
  reconnectNow(): void;
  /** Every push from the server (governance: forced mutes, stop-share, the meeting, the lobby). */
  onPush(fn: (p: Push) => void): () => void;
  send(request: GovernanceRequest): Promise<void>;
  /** The media connections' receive stats now (absent: the others' media is taken to arrive). */
  mediaStats?(): Promise<MediaSample>;
}

export interface MembershipPort {
  join(): Promise<void>;
  /** May come while join() is on its way: the leave then follows it; before it, nothing is published. */
  leave(): Promise<void>;
}

export interface CallMediaPort {
  open(kind: "audio" | "video", deviceId?: string): Promise<MediaStreamTrack>;
  openScreen(): Promise<MediaStreamTrack | null>;
  stop(track: MediaStreamTrack | null): void;
}

export interface Tile {
  key: string;
  /** The remote feed (null for this device). */
  feed: FeedId | null;
  userId: string;
  name: string;
  initials: string;
  avatarUrl: string | null;
  /** Remote media (audio and video); null for this device. */
  stream: MediaStream | null;
  /** This device's outgoing video (camera or screen). */
  localVideo: MediaStreamTrack | null;
  /** Video shows: the camera (or screen) is on and, for a remote, the server forwards it. */
  videoOn: boolean;
  /** The participant sends video (camera or screen on), forwarded to this viewer or not. */
  cameraOn: boolean;
  /** The simulcast layer the server forwards (null: not said, or this device). */
  layer: Layer | null;
  audioMuted: boolean;
  speaking: boolean;
  local: boolean;
  screen: boolean;
  /** This participant's media does not decrypt (missing or wrong key). */
  undecryptable: boolean;
  /** This participant's media stopped arriving though it should (or never started). */
  stale: boolean;
}

export interface CallViewState {
  phase: CallPhase;
  error: string | null;
  /** A non-fatal note: reconnecting, membership not published, a device that failed. */
  notice: string | null;
  tiles: Tile[];
  micOn: boolean;
  cameraOn: boolean;
  sharing: boolean;
  busy: { mic: boolean; camera: boolean; screen: boolean };
  /** Who forced the microphone / camera off (a host's mute the user cannot lift), null if nobody. */
  forced: { audio: string | null; video: string | null };
  /** "Muted by Alice": shown next to the disabled buttons while a forced mute lasts. */
  forcedNotice: string | null;
  /** The remote speaker the speaker view shows large (the server's most recent speaker), or null. */
  activeSpeaker: string | null;
  /** Names of who talks now (the server's talking events; this device from its own microphone). */
  talking: string[];
  /** Null when the call's media is not end-to-end encrypted from this client. */
  e2ee: E2eeView | null;
  /** Whether the others' media arrives (mediaState.ts); null before the first look, or without stats. */
  media: CallMedia | null;
}

export interface CallViewModelOptions {
  call: CallPort;
  membership: MembershipPort | null;
  members: MembersPort;
  media: CallMediaPort;
  avatars: AvatarSource;
  /** The call's E2EE state (null: not encrypted from here). */
  encryption?: Store<EncryptionState> | null;
  self: { userId: string; displayName?: string };
  local: LocalMediaHandoff;
  timers?: Timers;
  levelsEveryMs?: number;
  /** How often the receive stats are read for the stale-media check. */
  mediaEveryMs?: number;
  /** The room's `org.parley.call` content: who ended the meeting, when the eviction does not say. */
  callState?: (() => Promise<unknown>) | null;
}

export class CallViewModel {
  readonly state: Store<CallViewState>;
  private readonly o: Required<CallViewModelOptions>;
  private audio: MediaStreamTrack | null;
  private camera: MediaStreamTrack | null;
  private screen: MediaStreamTrack | null = null;
  private audioDeviceId: string | null;
  private videoDeviceId: string | null;
  private forced: Forced = NOT_FORCED;
  /** Asking the room's state why the call ended or was refused (once per call). */
  private stateLookup: Promise<void> | null = null;
  /** What the room's state said about it, once it did. */
  private explained: string | null = null;
  private readonly directory: MemberDirectory;
  /** This device's microphone only: remote speakers come from the server's `speakers` push. */
  private readonly ownSpeaker = new SpeakerSelector();
  private ownSpeaking = false;
  private speakers: Speakers = NO_SPEAKERS;
  private forwarded: Forwarded = null;
  private levelsTimer: unknown;
  private readonly mediaWatch: MediaWatch | null;
  private mediaVerdict: MediaVerdict | null = null;
  private readonly offs: (() => void)[] = [];
  /**
   * The membership was asked for (its join may still be on its way): a leave now must follow it,
   * or the membership it publishes stays in the room after the call (the port orders the two).
   */
  private membershipAsked = false;
  private disposed = false;

  constructor(opts: CallViewModelOptions) {
    this.o = { timers: realTimers, levelsEveryMs: 250, mediaEveryMs: 250, encryption: null, callState: null, ...opts };
    this.audio = opts.local.audio;
    this.camera = opts.local.video;
    this.audioDeviceId = opts.local.audioDeviceId;
    this.videoDeviceId = opts.local.videoDeviceId;
    this.directory = new MemberDirectory(opts.members, opts.avatars, opts.self, () => {
      if (!this.disposed) this.rebuild();
    });
    this.state = new Store<CallViewState>({
      phase: "idle",
      error: null,
      notice: null,
      tiles: [],
      micOn: opts.local.micOn,
      cameraOn: opts.local.cameraOn,
      sharing: false,
      busy: { mic: false, camera: false, screen: false },
      forced: { audio: null, video: null },
      forcedNotice: null,
      activeSpeaker: null,
      talking: [],
      e2ee: null,
      media: null,
    });
    const stats = opts.call.mediaStats?.bind(opts.call);
    this.mediaWatch = stats
      ? new MediaWatch({
          sample: stats,
          feeds: () => this.expectedFeeds(),
          onChange: (v) => {
            this.mediaVerdict = v;
            this.rebuild();
          },
          timers: this.o.timers,
          everyMs: this.o.mediaEveryMs,
        })
      : null;
    this.offs.push(this.o.call.state.subscribe((s, prev) => this.onCall(s, prev)));
    if (this.o.encryption) this.offs.push(this.o.encryption.subscribe(() => this.rebuild()));
    this.offs.push(this.o.members.onMembers(() => this.rebuild()));
    this.offs.push(this.o.call.onPush((p) => this.onPush(p)));
    this.rebuild();
  }

  /** The tracks the call publishes right now (asked again after every reconnect). */
  outgoing = () => {
    const s = this.state.get();
    return {
      audio: this.audio,
      video: this.screen ?? (s.cameraOn ? this.camera : null),
      muted: { audio: !s.micOn, video: !s.cameraOn && !this.screen },
    };
  };

  async join(): Promise<void> {
    // The MatrixRTC membership goes out while the call connects: the others' devices send their
    // media keys as soon as they see it, so a late joiner decrypts sooner.
    this.membershipAsked = !!this.o.membership;
    const membership = this.o.membership
      ? this.o.membership.join().then(
          () => undefined,
          (err: unknown) => {
            this.state.update({
              notice: `Others using other Matrix apps may not see you in the call: ${toClientError(err, "room").human}`,
            });
          },
        )
      : Promise.resolve();
    try {
      await this.o.call.start();
    } catch {
      await membership;
      await this.leaveMembership();
      return; // the call's state carries the error
    }
    await membership;
    if (this.disposed || this.o.call.state.get().phase === "ended") {
      await this.leaveMembership();
      return;
    }
    this.pollLevels();
    this.mediaWatch?.start();
  }

  async toggleMic(): Promise<void> {
    const on = !this.state.get().micOn;
    if (on && this.forced.audio) return;
    this.setBusy("mic", true);
    try {
      if (on && !this.audio) {
        this.audio = await this.o.media.open("audio", this.audioDeviceId ?? undefined);
        await this.o.call.replaceTrack("audio", this.audio);
      }
      if (this.audio) this.audio.enabled = on;
      this.state.update({ micOn: on && !!this.audio, notice: null });
      await this.o.call.setMuted("audio", !on);
    } catch (err) {
      this.state.update({ notice: toClientError(err, "media").human });
    } finally {
      this.setBusy("mic", false);
    }
    this.rebuild();
  }

  async toggleCamera(): Promise<void> {
    const on = !this.state.get().cameraOn;
    if (on && this.forced.video) return;
    this.setBusy("camera", true);
    try {
      if (on) {
        const track = await this.o.media.open("video", this.videoDeviceId ?? undefined);
        if (this.disposed) return this.o.media.stop(track);
        this.camera = track;
        if (!this.screen) await this.o.call.replaceTrack("video", track);
      } else {
        if (!this.screen) await this.o.call.replaceTrack("video", null);
        this.o.media.stop(this.camera);
        this.camera = null;
      }
      this.state.update({ cameraOn: on, notice: null });
      if (!this.screen) await this.o.call.setMuted("video", !on);
    } catch (err) {
      this.state.update({ notice: toClientError(err, "media").human });
    } finally {
      this.setBusy("camera", false);
    }
    this.rebuild();
  }

  async toggleScreenShare(): Promise<void> {
    if (this.screen) return this.stopSharing();
    if (this.forced.video) return;
    this.setBusy("screen", true);
    try {
      const track = await this.o.media.openScreen();
      if (!track) return; // the user closed the picker
      if (this.disposed) return this.o.media.stop(track);
      this.screen = track;
      track.addEventListener("ended", () => void this.stopSharing());
      await this.o.call.replaceTrack("video", track);
      this.state.update({ sharing: true, notice: null });
      await this.o.call.setVideoSource("screen");
      await this.o.call.setMuted("video", false);
    } catch (err) {
      this.state.update({ notice: toClientError(err, "media").human });
    } finally {
      this.setBusy("screen", false);
      this.rebuild();
    }
  }

  /** The chosen device: a live microphone or camera is swapped without renegotiating; one that is off opens with it next time. */
  async switchDevice(kind: Kind, deviceId: string): Promise<void> {
    const current = kind === "audio" ? this.audio : this.camera;
    if (kind === "audio") this.audioDeviceId = deviceId;
    else this.videoDeviceId = deviceId;
    if (!current) return;
    const busy = kind === "audio" ? "mic" : "camera";
    this.setBusy(busy, true);
    try {
      const track = await this.o.media.open(kind, deviceId);
      // The device may have been turned off (or the call left) while the new one was starting.
      if (this.disposed || (kind === "audio" ? this.audio : this.camera) !== current) return this.o.media.stop(track);
      if (kind === "audio") {
        track.enabled = this.state.get().micOn;
        this.audio = track;
        await this.o.call.replaceTrack("audio", track);
      } else {
        this.camera = track;
        if (!this.screen) await this.o.call.replaceTrack("video", track);
      }
      this.o.media.stop(current);
      this.state.update({ notice: null });
    } catch (err) {
      this.state.update({ notice: toClientError(err, "media").human });
    } finally {
      this.setBusy(busy, false);
    }
    this.rebuild();
  }

  /** The devices in use now (what the device pickers show as chosen). */
  deviceIds(): { audio: string | null; video: string | null } {
    const id = (t: MediaStreamTrack | null, chosen: string | null) => t?.getSettings?.().deviceId ?? chosen;
    return { audio: id(this.audio, this.audioDeviceId), video: id(this.camera, this.videoDeviceId) };
  }

  async leave(): Promise<void> {
    this.stopLevels();
    this.mediaWatch?.stop();
    // The membership's leave goes on behind: the screen waits neither for the homeserver nor for
    // a join still on its way, and the port keeps the leave before a next call's join.
    void this.leaveMembership();
    await this.o.call.leave();
    this.stopAll();
    this.rebuild();
  }

  /** The browser is back online: skip the reconnect backoff. */
  networkBack(): void {
    this.o.call.reconnectNow();
  }

  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    this.directory.dispose();
    this.stopLevels();
    this.mediaWatch?.stop();
    for (const off of this.offs.splice(0)) off();
    void this.o.call.leave();
    void this.leaveMembership();
    this.stopAll();
  }

  private async stopSharing(): Promise<void> {
    const screen = this.screen;
    if (!screen) return;
    this.screen = null;
    this.o.media.stop(screen);
    const cameraOn = this.state.get().cameraOn;
    this.state.update({ sharing: false });
    await this.o.call.replaceTrack("video", cameraOn ? this.camera : null).catch(() => undefined);
    await this.o.call.setVideoSource("camera");
    await this.o.call.setMuted("video", !cameraOn);
    this.rebuild();
  }

  private onPush(p: Push): void {
    if (p.type === "moderated") this.setForced(onModerated(this.forced, p));
    else if (p.type === "participants") {
      const own = this.o.call.state.get().ownFeed;
      const entry = own === null ? undefined : p.participants.find((x) => String(x.feed_id) === String(own));
      this.setForced(onOwnEntry(this.forced, entry?.forced));
    } else if (p.type === "speakers") {
      this.speakers = speakersFrom(p);
      this.rebuild();
    } else if (p.type === "videos") {
      this.forwarded = forwardedFrom(p);
      this.rebuild();
    } else if (p.type === "stop_share" && this.screen) {
      this.state.update({ notice: `${this.directory.name(p.by)} stopped your screen share.` });
      void this.stopSharing();
    }
  }

  /** A host's mute set or lifted: what became forced goes off now; what was lifted stays off. */
  private setForced(next: Forced): void {
    const prev = this.forced;
    if (next === prev) return;
    this.forced = next;
    const name = (f: Forced["audio"]) => (f ? (f.by ? this.directory.name(f.by) : "a host") : null);
    const lifted = (["audio", "video"] as const).some((k) => prev[k] && !next[k]);
    this.state.update({
      forced: { audio: name(next.audio), video: name(next.video) },
      forcedNotice: forcedNotice(next, (u) => this.directory.name(u)),
      ...(lifted && !next.audio && !next.video ? { notice: "A host allowed you to turn your microphone and camera back on." } : {}),
    });
    for (const kind of newlyForced(prev, next)) void this.forceOff(kind);
  }

  private async forceOff(kind: Kind): Promise<void> {
    const s = this.state.get();
    if (kind === "audio") {
      if (this.audio) this.audio.enabled = false;
      if (!s.micOn) return;
      this.state.update({ micOn: false });
      await this.o.call.setMuted("audio", true);
    } else {
      const screen = this.screen;
      if (!screen && !s.cameraOn) return;
      this.screen = null;
      this.o.media.stop(screen);
      this.o.media.stop(this.camera);
      this.camera = null;
      this.state.update({ cameraOn: false, sharing: false });
      await this.o.call.replaceTrack("video", null).catch(() => undefined);
      if (screen) await this.o.call.setVideoSource("camera");
      await this.o.call.setMuted("video", true);
    }
    this.rebuild();
  }

  /**
   * The call ended, or the join was refused, for a reason the room's state tells better than the
   * error (who ended the meeting; that it is locked): its words replace the error's.
   */
  private explainFromRoom(pick: (content: unknown) => string | null, delaysMs?: readonly number[]): void {
    const read = this.o.callState;
    if (!read || this.stateLookup) return;
    this.stateLookup = fromRoomState(read, pick, this.o.timers, delaysMs).then((text) => {
      if (!text || this.disposed) return;
      this.explained = text;
      if (this.o.call.state.get().phase === "failed") this.state.update({ error: text });
    });
  }

  private async leaveMembership(): Promise<void> {
    if (!this.membershipAsked || !this.o.membership) return;
    this.membershipAsked = false;
    await this.o.membership.leave().catch(() => undefined);
  }

  private stopAll(): void {
    for (const t of [this.audio, this.camera, this.screen]) this.o.media.stop(t);
    this.audio = this.camera = this.screen = null;
  }

  private setBusy(kind: keyof CallViewState["busy"], on: boolean): void {
    this.state.update({ busy: { ...this.state.get().busy, [kind]: on } });
  }

  private onCall(s: CallSnapshot, prev: CallSnapshot): void {
    const patch: Partial<CallViewState> = { phase: s.phase };
    if (s.phase === "failed") {
      patch.error = this.explained ?? evictionText(s.evicted, this.o.self.userId, (u) => this.directory.name(u)) ?? s.error?.human ?? "The call ended unexpectedly.";
      // The call ended (an eviction, or only the socket's 4404): who ended it, if nobody said.
      const ended = (s.evicted?.errcode ?? (s.error?.context === "signalling" ? s.error.code : null)) === "M_NOT_FOUND";
      if (ended && !s.evicted?.by) {
        this.explainFromRoom((c) => {
          const by = endedByOf(c);
          return by && evictionText({ errcode: "M_NOT_FOUND", by, reason: null }, this.o.self.userId, (u) => this.directory.name(u));
        });
      } else if (s.error?.context === "join" && s.error.code === "M_FORBIDDEN") {
        this.explainFromRoom((c) => joinRefusalText(c, this.o.self.userId, (u) => this.directory.name(u)), [0]);
      }
      this.stopLevels();
      this.mediaWatch?.stop();
      void this.leaveMembership();
      // Camera and microphone off while nothing is being sent (pre-join reopens them).
      this.stopAll();
    }
    // A Parley restart drops only the signalling socket: media keeps arriving (the server keeps
    // it for the client), and a loss nobody can see or hear is not announced (docs/resilience.md).
    const media = this.state.get().media;
    if (s.phase === "reconnecting") patch.notice = media === "flowing" || media === "quiet" ? null : "Connection lost. Reconnecting…";
    else if (prev.phase === "reconnecting" && s.phase === "connected") patch.notice = null;
    this.state.patch(patch);
    this.rebuild();
  }

  private pollLevels(): void {
    this.stopLevels();
    this.levelsTimer = this.o.timers.setTimeout(async () => {
      if (this.disposed) return;
      const level = this.state.get().micOn ? await this.o.call.ownAudioLevel().catch(() => 0) : 0;
      const speaking = this.ownSpeaker.update(new Map([["local", level]]), this.o.timers.now()) === "local";
      if (speaking !== this.ownSpeaking) {
        this.ownSpeaking = speaking;
        this.rebuild();
      }
      const phase = this.o.call.state.get().phase;
      if (phase !== "ended" && phase !== "failed") this.pollLevels();
    }, this.o.levelsEveryMs);
  }

  private stopLevels(): void {
    this.o.timers.clearTimeout(this.levelsTimer);
  }

  /** What each remote feed should be sending this viewer now (the stale-media check's yardstick). */
  private expectedFeeds(): ExpectedFeed[] {
    return this.o.call.state.get().remotes.map((r) => {
      const forwarded = !this.forwarded || this.forwarded.has(r.key);
      return {
        key: r.key,
        audio: { track: r.media?.audio?.id ?? null, expected: !r.muted.audio },
        // A still screen share sends frames only when the picture changes: its audio speaks for it.
        video: { track: r.media?.video?.id ?? null, expected: !r.muted.video && forwarded && !r.screen },
      };
    });
  }

  private rebuild(): void {
    const s = this.state.get();
    const call = this.o.call.state.get();
    const self = this.directory.profile(this.o.self.userId);
    const ended = call.phase === "ended" || call.phase === "failed";
    const localVideo = ended ? null : (this.screen ?? (s.cameraOn ? this.camera : null));
    const tiles: Tile[] = [
      {
        key: "local",
        feed: null,
        userId: this.o.self.userId,
        name: `${self.name} (you)`,
        initials: initialsOf(self.name),
        avatarUrl: self.avatarUrl,
        stream: null,
        localVideo,
        videoOn: !!localVideo,
        cameraOn: !!localVideo,
        layer: null,
        audioMuted: !s.micOn,
        speaking: this.ownSpeaking && s.micOn && !ended,
        local: true,
        screen: !!this.screen,
        undecryptable: false,
        stale: false,
      },
    ];
    const verdict = this.mediaVerdict;
    const enc = this.o.encryption?.get() ?? null;
    const failing: string[] = [];
    const waiting: string[] = [];
    const talking = tiles[0]!.speaking ? [tiles[0]!.name] : [];
    for (const r of speakerOrder(call.remotes, this.speakers)) {
      const m = this.directory.profile(r.userId);
      const layer = this.forwarded ? this.forwarded.get(r.key) : null;
      const forwarded = layer !== undefined;
      // Waiting for keys only where frames should arrive: audio that is on, video the server forwards.
      const expectsFrames = !r.muted.audio || (forwarded && !r.muted.video);
      const health = enc?.health.get(`${r.userId}|${r.deviceId}`);
      const stale = !!verdict?.stale.has(r.key);
      const undecryptable = !!enc && health !== undefined && health !== "ok";
      // The badge names only media that arrives: a stale feed's last word on decryption is old news.
      if (undecryptable && !stale) failing.push(m.name);
      else if (enc && health === undefined && r.media && expectsFrames && !stale) waiting.push(m.name);
      const video = r.media?.video ?? null;
      const speaking = this.speakers.talking.has(r.key);
      if (speaking) talking.push(m.name);
      tiles.push({
        key: r.key,
        feed: r.feed,
        userId: r.userId,
        name: m.name,
        initials: initialsOf(m.name),
        avatarUrl: m.avatarUrl,
        stream: r.media?.stream ?? null,
        localVideo: null,
        videoOn: !!video && !r.muted.video && forwarded,
        cameraOn: !r.muted.video,
        layer: layer ?? null,
        audioMuted: r.muted.audio,
        speaking,
        local: false,
        screen: r.screen,
        undecryptable,
        stale,
      });
    }
    const present = new Set(call.remotes.map((r) => r.key));
    this.state.patch({
      tiles,
      talking,
      activeSpeaker: activeSpeaker(this.speakers, (k) => present.has(k)),
      e2ee: enc?.mode ? e2eeView(enc.mode, enc.bot, { failing, waiting }, enc.error, this.mediaForBadge()) : null,
      // Alone shows with the roster, not at the next sample: the badge says so at the same moment.
      media: verdict ? (call.remotes.length ? verdict.call : "alone") : null,
    });
  }

  private mediaForBadge(): "alone" | "none" | "connecting" | "ok" {
    const call = this.o.call.state.get();
    if (!call.remotes.length) return "alone";
    const v = this.mediaVerdict;
    if (!v) return this.mediaWatch ? "connecting" : "ok";
    if (v.call === "connecting") return "connecting";
    return v.flowing.size ? "ok" : "none";
  }
}
