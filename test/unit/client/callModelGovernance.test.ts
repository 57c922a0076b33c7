// The call view model under a host's hand: forced mutes, a stopped screen share, the meeting ended
// or the user removed; and switching devices mid-call.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ParleyClientError } from "../../../client/src/errors.ts";
import type { Participant } from "../../../client/src/rtc/protocol.ts";
import { forcedNotice, newlyForced, NOT_FORCED, onModerated, onOwnEntry } from "../../../client/src/state/forcedMute.ts";
import { setup } from "./callFakes.ts";
import { FakeTrack, tick } from "./fakes.ts";

const own = (forced?: { audio: boolean; video: boolean }): Participant => ({
  user_id: "@a:x",
  device_id: "D",
  feed_id: 1,
  streams: [],
  muted: { audio: false, video: false },
  ...(forced ? { forced } : {}),
});

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

describe("the forced-mute rule", () => {
  const names = (u: string) => ({ "@h:x": "Hana", "@k:x": "Kim" })[u] ?? u;

  it("is set and lifted by moderated pushes, and names who did it", () => {
    const f = onModerated(NOT_FORCED, { kind: "audio", muted: true, by: "@h:x" });
    expect(f).toEqual({ audio: { by: "@h:x" }, video: null });
    expect(forcedNotice(f, names)).toBe("Muted by Hana");
    expect(newlyForced(NOT_FORCED, f)).toEqual(["audio"]);
    expect(onModerated(f, { kind: "audio", muted: false, by: "@h:x" })).toEqual(NOT_FORCED);
  });

  it("takes the user's own participant entry as the truth when it says, keeping who from the push", () => {
    const f = onModerated(NOT_FORCED, { kind: "audio", muted: true, by: "@h:x" });
    expect(onOwnEntry(f, { audio: true, video: false })).toBe(f);
    expect(onOwnEntry(f, undefined)).toBe(f); // an older server: the push alone decides
    expect(onOwnEntry(NOT_FORCED, { audio: false, video: true })).toEqual({ audio: null, video: { by: null } });
    expect(onOwnEntry(f, { audio: false, video: false })).toEqual(NOT_FORCED);
  });

  it("words both kinds, by one host or two, and an unnamed host", () => {
    expect(forcedNotice({ audio: { by: "@h:x" }, video: { by: "@h:x" } }, names)).toBe("Muted by Hana (microphone and camera)");
    expect(forcedNotice({ audio: { by: "@h:x" }, video: { by: "@k:x" } }, names)).toBe("Muted by Hana; camera turned off by Kim");
    expect(forcedNotice({ audio: null, video: { by: null } }, names)).toBe("Camera turned off by a host");
    expect(forcedNotice(NOT_FORCED, names)).toBeNull();
  });
});

describe("CallViewModel: a host's forced mute", () => {
  it("turns the microphone off, keeps it off until lifted, then leaves unmuting to the user", async () => {
    const { vm, call, audio } = setup();
    await vm.join();
    call.push({ type: "moderated", kind: "audio", muted: true, by: "@b:y" });
    await tick();
    expect(audio.enabled).toBe(false);
    expect(vm.state.get()).toMatchObject({ micOn: false, forced: { audio: "Bob", video: null }, forcedNotice: "Muted by Bob" });
    expect(call.log).toContain("mute audio true");

    await vm.toggleMic(); // the button is disabled; a click that gets through changes nothing
    expect(vm.state.get().micOn).toBe(false);
    expect(call.log).not.toContain("mute audio false");

    call.push({ type: "moderated", kind: "audio", muted: false, by: "@b:y" });
    expect(vm.state.get()).toMatchObject({ micOn: false, forced: { audio: null }, forcedNotice: null });
    expect(vm.state.get().notice).toMatch(/allowed you/);
    await vm.toggleMic();
    expect(vm.state.get().micOn).toBe(true);
    expect(call.log).toContain("mute audio false");
  });

  it("turns the camera and a screen share off for a forced video mute", async () => {
    const { vm, call, media, camera } = setup();
    await vm.join();
    media.screen = new FakeTrack("video");
    await vm.toggleScreenShare();
    call.push({ type: "moderated", kind: "video", muted: true, by: "@b:y" });
    await tick(10);
    expect(camera.readyState).toBe("ended");
    expect(media.screen.readyState).toBe("ended");
    expect(vm.state.get()).toMatchObject({ cameraOn: false, sharing: false, forcedNotice: "Camera turned off by Bob" });
    expect(call.log.slice(-3)).toEqual(["replace video null", "source camera", "mute video true"]);
    const opened = media.opened.length;
    await vm.toggleCamera();
    await vm.toggleScreenShare();
    expect(media.opened).toHaveLength(opened);
    expect(vm.state.get().cameraOn).toBe(false);
  });

  it("finds a forced mute in its own participant entry (after a reconnect) and ignores others'", async () => {
    const { vm, call } = setup();
    await vm.join();
    call.push({ type: "participants", participants: [{ ...own(), user_id: "@b:y", feed_id: 7, forced: { audio: true, video: true } }, own()] });
    expect(vm.state.get().forcedNotice).toBeNull();
    call.push({ type: "participants", participants: [own({ audio: true, video: false })] });
    await tick();
    expect(vm.state.get()).toMatchObject({ micOn: false, forcedNotice: "Muted by a host" });
    call.push({ type: "participants", participants: [own({ audio: false, video: false })] });
    expect(vm.state.get().forcedNotice).toBeNull();
  });
});

describe("CallViewModel: stop_share", () => {
  it("goes back to the camera and says who stopped the share", async () => {
    const { vm, call, media, camera } = setup();
    await vm.join();
    media.screen = new FakeTrack("video");
    await vm.toggleScreenShare();
    call.push({ type: "stop_share", by: "@b:y" });
    await tick(10);
    expect(vm.state.get()).toMatchObject({ sharing: false, cameraOn: true, notice: "Bob stopped your screen share." });
    expect(media.screen.readyState).toBe("ended");
    expect(call.log.slice(-3)).toEqual([`replace video ${camera.id}`, "source camera", "mute video false"]);
  });

  it("is ignored when nothing is shared", async () => {
    const { vm, call } = setup();
    await vm.join();
    const before = call.log.length;
    call.push({ type: "stop_share", by: "@b:y" });
    await tick();
    expect(call.log).toHaveLength(before);
    expect(vm.state.get().notice).toBeNull();
  });
});

describe("CallViewModel: the call ended by a person", () => {
  const ended = new ParleyClientError("M_NOT_FOUND", "signalling", { detail: "the call has ended" });

  it("says which host ended the meeting", async () => {
    const { vm, call } = setup();
    await vm.join();
    call.state.update({ evicted: { errcode: "M_NOT_FOUND", by: "@b:y", reason: null } });
    call.state.update({ phase: "failed", error: ended });
    expect(vm.state.get().error).toBe("Bob ended the meeting.");
  });

  it("says 'You' to the host who ended it, and names who removed the user and why", async () => {
    const a = setup();
    await a.vm.join();
    a.call.state.update({ phase: "failed", error: ended, evicted: { errcode: "M_NOT_FOUND", by: "@a:x", reason: null } });
    expect(a.vm.state.get().error).toBe("You ended the meeting.");

    const b = setup();
    await b.vm.join();
    b.call.state.update({ phase: "failed", error: new ParleyClientError("M_FORBIDDEN", "signalling"), evicted: { errcode: "M_FORBIDDEN", by: "@b:y", reason: "off topic" } });
    expect(b.vm.state.get().error).toBe("Bob removed you from the meeting: off topic");
  });

  it("reads who ended it from the room's state when the eviction does not say (the state may come a moment later)", async () => {
    let content: unknown = { api: "https://p" };
    const { vm, call } = setup({ callState: async () => content });
    await vm.join();
    call.state.update({ phase: "failed", error: ended, evicted: { errcode: "M_NOT_FOUND", by: null, reason: null } });
    expect(vm.state.get().error).toBe("The call has ended.");
    await vi.advanceTimersByTimeAsync(500);
    content = { api: "https://p", ended: { by: "@b:y", at: 1 } };
    await vi.advanceTimersByTimeAsync(1500);
    expect(vm.state.get().error).toBe("Bob ended the meeting.");
  });

  it("reads who ended it also when only the socket's close said the call has ended", async () => {
    const { vm, call } = setup({ callState: async () => ({ ended: { by: "@b:y", at: 1 } }) });
    await vm.join();
    call.state.update({ phase: "failed", error: ended });
    await tick();
    expect(vm.state.get().error).toBe("Bob ended the meeting.");
  });

  it("reads the room's state once, and gives up quietly when it never says", async () => {
    const read = vi.fn(async () => ({ ended: { by: "not a user id" } }));
    const { vm, call } = setup({ callState: read });
    await vm.join();
    call.state.update({ phase: "failed", error: ended, evicted: { errcode: "M_NOT_FOUND", by: null, reason: null } });
    call.state.update({ remotes: [] });
    await vi.advanceTimersByTimeAsync(10_000);
    expect(read).toHaveBeenCalledTimes(4);
    expect(vm.state.get().error).toBe("The call has ended.");
  });

  it("says why the meeting's server refused the join: the meeting was ended, or is locked", async () => {
    const refused = new ParleyClientError("M_FORBIDDEN", "join", { status: 403 });
    for (const [content, text] of [
      [{ ended: { by: "@b:y", at: 1 } }, "Bob ended the meeting. Only a host can start it again."],
      [{ locked: true }, "This meeting is locked: nobody new can join until a host unlocks it."],
      [{ locked: false }, refused.human],
    ] as const) {
      const { vm, call } = setup({ callState: async () => content });
      call.failStart = refused;
      await vm.join();
      await tick();
      call.state.update({ remotes: [] }); // later updates keep the words
      expect(vm.state.get().error).toBe(text);
    }
  });

  it("keeps the plain words when nobody is named", async () => {
    const { vm, call } = setup();
    await vm.join();
    call.state.update({ phase: "failed", error: ended, evicted: { errcode: "M_NOT_FOUND", by: null, reason: null } });
    expect(vm.state.get().error).toBe("The call has ended.");
  });
});

describe("CallViewModel: switching devices during the call", () => {
  it("swaps a live microphone without renegotiating and keeps it muted if it was", async () => {
    const { vm, call, media, audio } = setup({ micOn: false });
    await vm.join();
    await vm.switchDevice("audio", "usb-mic");
    const next = media.opened[0]!;
    expect(next.deviceId).toBe("usb-mic");
    expect(next.enabled).toBe(false);
    expect(call.log).toContain(`replace audio ${next.id}`);
    expect(audio.readyState).toBe("ended");
    expect(vm.deviceIds().audio).toBe("usb-mic");
  });

  it("swaps the camera, but not under a screen share; a camera that is off opens with the choice later", async () => {
    const { vm, call, media, camera } = setup();
    await vm.join();
    media.screen = new FakeTrack("video");
    await vm.toggleScreenShare();
    await vm.switchDevice("video", "cam-2");
    expect(camera.readyState).toBe("ended");
    expect(call.log).not.toContain(`replace video ${media.opened[0]!.id}`);
    expect(vm.outgoing().video).toBe(media.screen);

    const off = setup({ cameraOn: false });
    await off.vm.join();
    await off.vm.switchDevice("video", "cam-3");
    expect(off.media.opened).toHaveLength(0);
    await off.vm.toggleCamera();
    expect(off.media.opened[0]!.deviceId).toBe("cam-3");
  });

  it("says when the new device can't be started and keeps the old one", async () => {
    const { vm, media, audio } = setup();
    await vm.join();
    media.open = async () => Promise.reject(new ParleyClientError("MEDIA_IN_USE", "media", { human: "Your microphone couldn't be started." }));
    await vm.switchDevice("audio", "broken");
    expect(vm.state.get().notice).toBe("Your microphone couldn't be started.");
    expect(audio.readyState).toBe("live");
    expect(vm.outgoing().audio).toBe(audio);
  });
});
