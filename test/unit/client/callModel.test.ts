import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ParleyClientError } from "../../../client/src/errors.ts";
import { SpeakerSelector } from "../../../client/src/rtc/speaker.ts";
import { initialsOf } from "../../../client/src/state/callModel.ts";
import { samePlain, Store } from "../../../client/src/state/store.ts";
import type { EncryptionState } from "../../../client/src/rtc/e2ee/callEncryption.ts";
import { remote, setup } from "./callFakes.ts";
import { FakeTrack, tick } from "./fakes.ts";

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

describe("CallViewModel", () => {
  it("joins the call, then publishes the MatrixRTC membership", async () => {
    const { vm, membership } = setup();
    await vm.join();
    expect(vm.state.get().phase).toBe("connected");
    expect(membership.join).toHaveBeenCalledOnce();
  });

  it("builds tiles with display names, initials and avatars", async () => {
    const { vm, call } = setup();
    await vm.join();
    call.state.update({ remotes: [remote("7", "@b:y", { muted: { audio: true, video: true } }), remote("8", "@c:z")] });
    await tick();
    const tiles = vm.state.get().tiles;
    expect(tiles.map((t) => [t.key, t.name, t.initials, t.audioMuted, t.local])).toEqual([
      ["local", "Alice Liddell (you)", "AL", false, true],
      ["7", "Bob", "BO", true, false],
      ["8", "@c:z", "C", false, false],
    ]);
    expect(tiles[0]!.avatarUrl).toBe("blob:alice");
    expect(tiles[0]!.videoOn).toBe(true);
    expect(tiles[1]!.videoOn).toBe(false);
  });

  it("mutes by disabling the track and telling the server", async () => {
    const { vm, call, audio } = setup();
    await vm.join();
    await vm.toggleMic();
    expect(audio.enabled).toBe(false);
    expect(vm.state.get().micOn).toBe(false);
    expect(call.log).toContain("mute audio true");
    expect(vm.state.get().tiles[0]!.audioMuted).toBe(true);
    await vm.toggleMic();
    expect(audio.enabled).toBe(true);
    expect(call.log).toContain("mute audio false");
  });

  it("turns the camera off (released) and on again (a new track)", async () => {
    const { vm, call, camera, media } = setup();
    await vm.join();
    await vm.toggleCamera();
    expect(camera.readyState).toBe("ended");
    expect(call.log.slice(-2)).toEqual(["replace video null", "mute video true"]);
    expect(vm.state.get().tiles[0]!.videoOn).toBe(false);
    await vm.toggleCamera();
    expect(call.log.slice(-2)).toEqual([`replace video ${media.opened[0]!.id}`, "mute video false"]);
    expect(vm.outgoing().video).toBe(media.opened[0]);
  });

  it("shares the screen in place of the camera and goes back when the share ends", async () => {
    const { vm, call, media, camera } = setup();
    await vm.join();
    media.screen = new FakeTrack("video");
    await vm.toggleScreenShare();
    expect(vm.state.get().sharing).toBe(true);
    expect(call.log).toContain(`replace video ${media.screen.id}`);
    expect(vm.state.get().tiles[0]).toMatchObject({ screen: true, localVideo: media.screen });
    media.screen.end(); // the browser's "Stop sharing"
    await tick(10);
    expect(vm.state.get().sharing).toBe(false);
    expect(call.log).toContain(`replace video ${camera.id}`);
  });

  it("does nothing when the screen picker is cancelled", async () => {
    const { vm, call } = setup();
    await vm.join();
    const before = call.log.length;
    await vm.toggleScreenShare();
    expect(vm.state.get().sharing).toBe(false);
    expect(call.log).toHaveLength(before);
  });

  it("marks its own tile speaking from the microphone level, never a remote one from levels", async () => {
    const { vm, call } = setup();
    await vm.join();
    call.state.update({ remotes: [remote("7", "@b:y")] });
    call.levels.set("local", 0.5);
    await vi.advanceTimersByTimeAsync(300);
    expect(vm.state.get().tiles.map((t) => [t.key, t.speaking])).toEqual([["local", true], ["7", false]]);
    expect(vm.state.get().talking).toEqual(["Alice Liddell (you)"]);
    expect(vm.state.get().activeSpeaker).toBeNull();
  });

  it("shows reconnecting and clears it when connected again", async () => {
    const { vm, call } = setup();
    await vm.join();
    call.state.update({ phase: "reconnecting" });
    expect(vm.state.get().notice).toBe("Connection lost. Reconnecting…");
    call.state.update({ phase: "connected" });
    expect(vm.state.get().notice).toBeNull();
  });

  it("shows why joining failed, and takes back the membership it published while connecting", async () => {
    const { vm, call, membership } = setup();
    call.failStart = new ParleyClientError("M_FORBIDDEN", "join");
    await vm.join();
    expect(vm.state.get().phase).toBe("failed");
    expect(vm.state.get().error).toBe("You're not allowed to join this call. Only members of the room can join; ask someone in it to invite you.");
    // Published early (so media keys come sooner), withdrawn when the call failed.
    expect(membership.join).toHaveBeenCalledTimes(1);
    expect(membership.leave).toHaveBeenCalledTimes(1);
  });

  it("keeps the call going when the membership can't be written, and says so", async () => {
    const { vm, membership } = setup();
    membership.join.mockRejectedValueOnce(new ParleyClientError("M_FORBIDDEN", "room"));
    await vm.join();
    expect(vm.state.get().phase).toBe("connected");
    expect(vm.state.get().notice).toMatch(/may not see you in the call/);
  });

  it("removes the membership when the call fails later", async () => {
    const { vm, call, membership } = setup();
    await vm.join();
    call.state.update({ phase: "failed", error: new ParleyClientError("EVICTED", "signalling") });
    await tick();
    expect(membership.leave).toHaveBeenCalledOnce();
    expect(vm.state.get().error).toBe("You were removed from the call.");
  });

  it("takes back a membership whose join is still on its way when the call is left (the port orders the two)", async () => {
    const { vm, membership } = setup();
    let published!: () => void;
    membership.join.mockImplementationOnce(() => new Promise<undefined>((r) => (published = () => r(undefined))));
    // The port's leave follows that join (its lane): the screen does not wait for either.
    membership.leave.mockImplementationOnce(() => new Promise<undefined>(() => undefined));
    const joined = vm.join();
    await tick();
    await vm.leave();
    expect(membership.leave).toHaveBeenCalledOnce(); // not only once the join is answered
    published();
    await joined;
    expect(membership.leave).toHaveBeenCalledOnce();
  });

  it("leaves: call, membership, and every track stopped", async () => {
    const { vm, call, membership, audio, camera } = setup();
    await vm.join();
    await vm.leave();
    expect(call.log).toContain("leave");
    expect(membership.leave).toHaveBeenCalledOnce();
    expect(audio.readyState).toBe("ended");
    expect(camera.readyState).toBe("ended");
  });

  it("skips the reconnect wait when the browser is back online", async () => {
    const { vm, call } = setup();
    vm.networkBack();
    expect(call.log).toContain("reconnectNow");
  });
});

describe("initialsOf", () => {
  it.each([
    ["Alice Liddell", "AL"],
    ["@bob:example.org", "BO"],
    ["émile zola", "ÉZ"],
    ["", "?"],
  ])("%s -> %s", (name, initials) => expect(initialsOf(name)).toBe(initials));
});

describe("SpeakerSelector", () => {
  it("picks the loudest above the threshold, with a hold against flicker", () => {
    const s = new SpeakerSelector({ threshold: 0.05, holdMs: 500, smoothing: 1 });
    expect(s.update(new Map([["a", 0.01], ["b", 0.02]]), 0)).toBeNull();
    expect(s.update(new Map([["a", 0.3], ["b", 0.1]]), 100)).toBe("a");
    // b gets louder, but must stay louder for the hold time
    expect(s.update(new Map([["a", 0.1], ["b", 0.4]]), 200)).toBe("a");
    expect(s.update(new Map([["a", 0.1], ["b", 0.4]]), 600)).toBe("a");
    expect(s.update(new Map([["a", 0.1], ["b", 0.4]]), 700)).toBe("b");
    // silence: the highlight lingers briefly, then clears
    expect(s.update(new Map([["a", 0], ["b", 0]]), 800)).toBe("b");
    expect(s.update(new Map([["a", 0], ["b", 0]]), 2000)).toBeNull();
  });

  it("forgets someone who left", () => {
    const s = new SpeakerSelector({ smoothing: 1 });
    s.update(new Map([["a", 0.5]]), 0);
    expect(s.update(new Map(), 10)).toBeNull();
  });
});

describe("CallViewModel: the key mode in the call header", () => {
  it("says who makes the media keys, as the room's state decided", () => {
    const encryption = new Store<EncryptionState>({ mode: null, bot: null, health: new Map(), error: null });
    const { vm } = setup({ encryption });
    expect(vm.state.get().e2ee).toBeNull();
    encryption.update({ mode: "participant" });
    expect(vm.state.get().e2ee?.keys).toBe("Keys: each participant");
    encryption.update({ mode: "provisioned", bot: "@parley:b.example" });
    expect(vm.state.get().e2ee?.keys).toBe("Keys: provisioned by @parley:b.example");
  });
});

describe("CallViewModel: a rebuild that comes out the same", () => {
  it("notifies nobody (the call's views redraw only on a change), and a real change still notifies", async () => {
    const { vm, call } = setup();
    await vm.join();
    call.state.update({ remotes: [remote("7", "@b:y")] });
    await tick();
    let notified = 0;
    vm.state.subscribe(() => notified++);
    // The call's state replaced by an equal copy (a push that changed nothing this view shows).
    call.state.update({ remotes: [remote("7", "@b:y")] });
    await tick();
    expect(notified).toBe(0);
    call.state.update({ remotes: [remote("7", "@b:y", { muted: { audio: true, video: false } })] });
    await tick();
    expect(notified).toBe(1);
    expect(vm.state.get().tiles[1]!.audioMuted).toBe(true);
  });
});

describe("Store.patch and samePlain", () => {
  it("merges only a patch that changes something as data; objects that are not plain data compare by identity", () => {
    const track = new FakeTrack("video");
    const s = new Store<{ a: number; list: { k: string; t: unknown }[]; m: Map<string, number> }>({ a: 1, list: [{ k: "x", t: track }], m: new Map() });
    const seen: unknown[] = [];
    s.subscribe((v) => seen.push(v));
    s.patch({ a: 1, list: [{ k: "x", t: track }] });
    expect(seen).toHaveLength(0);
    s.patch({ list: [{ k: "x", t: new FakeTrack("video") }] }); // another track: a change
    expect(seen).toHaveLength(1);
    s.patch({ m: new Map() }); // a Map is not plain data: a new one is a change
    expect(seen).toHaveLength(2);
    s.patch({ list: [] });
    expect(s.get().list).toEqual([]);
    expect(seen).toHaveLength(3);
    expect(samePlain({ a: [1, { b: null }] }, { a: [1, { b: null }] })).toBe(true);
    expect(samePlain({ a: 1 }, { a: 1, b: undefined })).toBe(false);
    expect(samePlain([1, 2], [2, 1])).toBe(false);
    expect(samePlain(Number.NaN, Number.NaN)).toBe(true);
  });
});
