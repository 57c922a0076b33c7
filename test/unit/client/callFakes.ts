// Fakes for the call view model's ports: a call that logs what it is asked, media that opens
// fake tracks, two room members, and a view model wired to them.
import { vi } from "vitest";
import type { ParleyClientError } from "../../../client/src/errors.ts";
import type { RoomMember } from "../../../client/src/matrix/timeline.ts";
import type { CallSnapshot, RemoteParticipant } from "../../../client/src/rtc/call.ts";
import type { EncryptionState } from "../../../client/src/rtc/e2ee/callEncryption.ts";
import type { MediaSample } from "../../../client/src/rtc/mediaHealth.ts";
import type { GovernanceRequest, Push } from "../../../client/src/rtc/protocol.ts";
import { CallViewModel, type CallMediaPort, type CallPort, type Tile } from "../../../client/src/state/callModel.ts";
import { Emitter, Store } from "../../../client/src/state/store.ts";
import { asTrack, FakeTrack } from "./fakes.ts";

export function fakeCall() {
  const state = new Store<CallSnapshot>({ phase: "idle", error: null, roomId: null, ownFeed: null, remotes: [] });
  const log: string[] = [];
  const levels = new Map<string, number>();
  const pushes = new Emitter<{ push: Push }>();
  const port: CallPort & { log: string[]; levels: Map<string, number>; failStart: ParleyClientError | null; push(p: Push): void; sent: GovernanceRequest[] } = {
    state,
    log,
    levels,
    failStart: null,
    sent: [],
    push: (p) => pushes.emit("push", p),
    onPush: (fn) => pushes.on("push", fn),
    send: async (r) => void port.sent.push(r),
    start: async () => {
      state.update({ phase: "joining" });
      if (port.failStart) {
        state.update({ phase: "failed", error: port.failStart });
        throw port.failStart;
      }
      state.update({ phase: "connected", ownFeed: 1 });
    },
    leave: async () => {
      log.push("leave");
      state.update({ phase: "ended", remotes: [] });
    },
    setMuted: async (kind, muted) => void log.push(`mute ${kind} ${muted}`),
    setVideoSource: async (source) => void log.push(`source ${source}`),
    replaceTrack: async (kind, track) => void log.push(`replace ${kind} ${(track as unknown as FakeTrack | null)?.id ?? "null"}`),
    ownAudioLevel: async () => levels.get("local") ?? 0,
    reconnectNow: () => void log.push("reconnectNow"),
  };
  return port;
}

export function fakeMedia() {
  const port: CallMediaPort & { screen: FakeTrack | null; opened: FakeTrack[] } = {
    screen: null,
    opened: [],
    open: async (kind, deviceId) => {
      const t = new FakeTrack(kind, deviceId);
      port.opened.push(t);
      return asTrack(t);
    },
    openScreen: async () => (port.screen ? asTrack(port.screen) : null),
    stop: (t) => (t as unknown as FakeTrack | null)?.stop(),
  };
  return port;
}

export const members = new Map<string, RoomMember>([
  ["@a:x", { userId: "@a:x", displayName: "Alice Liddell", avatarMxc: "mxc://x/alice" }],
  ["@b:y", { userId: "@b:y", displayName: "Bob", avatarMxc: null }],
]);

export function setup(
  opts: { micOn?: boolean; cameraOn?: boolean; encryption?: Store<EncryptionState>; callState?: () => Promise<unknown>; mediaStats?: () => Promise<MediaSample> } = {},
) {
  const call = fakeCall();
  if (opts.mediaStats) call.mediaStats = opts.mediaStats;
  const media = fakeMedia();
  const membership = { join: vi.fn(async () => undefined), leave: vi.fn(async () => undefined) };
  const audio = new FakeTrack("audio");
  const camera = new FakeTrack("video");
  let onMembers: ((m: ReadonlyMap<string, RoomMember>) => void) | null = null;
  const vm = new CallViewModel({
    call,
    membership,
    members: { members: () => members, onMembers: (fn) => ((onMembers = fn), () => undefined) },
    media,
    avatars: async (mxc) => (mxc === "mxc://x/alice" ? "blob:alice" : null),
    self: { userId: "@a:x" },
    local: {
      audio: asTrack(audio),
      video: opts.cameraOn === false ? null : asTrack(camera),
      micOn: opts.micOn ?? true,
      cameraOn: opts.cameraOn ?? true,
      audioDeviceId: null,
      videoDeviceId: null,
    },
    levelsEveryMs: 100,
    ...(opts.encryption ? { encryption: opts.encryption } : {}),
    ...(opts.callState ? { callState: opts.callState } : {}),
  });
  return { vm, call, media, membership, audio, camera, fireMembers: () => onMembers?.(members) };
}

export const remote = (key: string, userId: string, over: Partial<RemoteParticipant> = {}): RemoteParticipant => ({
  key, feed: Number(key), userId, deviceId: "DEV", muted: { audio: false, video: false }, screen: false, media: null, ...over,
});

/** A tile as the call's view model makes them: video on, `local` for this device's own. */
export const fakeTile = (key: string, over: Partial<Tile> = {}): Tile => ({
  key,
  feed: key === "local" ? null : key,
  userId: `@${key}:x`,
  name: key,
  initials: key,
  avatarUrl: null,
  stream: null,
  localVideo: null,
  videoOn: true,
  cameraOn: true,
  layer: null,
  audioMuted: false,
  speaking: false,
  local: key === "local",
  screen: false,
  undecryptable: false,
  stale: false,
  ...over,
});
