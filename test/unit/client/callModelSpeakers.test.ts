// The call view model under last-N: speakers and tile order from the server's `speakers` push,
// video only where its `videos` push forwards it, and E2EE "waiting" only where frames should come.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { EncryptionState } from "../../../client/src/rtc/e2ee/callEncryption.ts";
import { Store } from "../../../client/src/state/store.ts";
import { activeSpeaker, speakerOrder } from "../../../client/src/state/speakers.ts";
import { remote, setup } from "./callFakes.ts";
import { FakeTrack, asTrack, tick } from "./fakes.ts";

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

const withVideo = () => {
  const video = asTrack(new FakeTrack("video"));
  return { feed: 0, userId: "", stream: {} as MediaStream, audio: null, video };
};

describe("speakerOrder", () => {
  const t = (key: string, screen = false) => ({ key, screen });
  it("puts screen shares (join order), then recent speakers, then the rest in join order; talking alone moves nobody", () => {
    const tiles = [t("1"), t("2", true), t("3"), t("4", true), t("5"), t("6")];
    const order = speakerOrder(tiles, { talking: new Set(["5", "1"]), recent: ["4", "3", "6", "5"] });
    expect(order.map((x) => x.key)).toEqual(["2", "4", "3", "6", "5", "1"]);
  });
  it("keeps join order when nobody has spoken", () => {
    expect(speakerOrder([t("9"), t("1"), t("5")], { talking: new Set(["5"]), recent: [] }).map((x) => x.key)).toEqual(["9", "1", "5"]);
  });
});

describe("activeSpeaker", () => {
  it("is the most recent speaker still here, else whoever talks now", () => {
    expect(activeSpeaker({ talking: new Set(["2"]), recent: ["3", "2"] }, () => true)).toBe("3");
    expect(activeSpeaker({ talking: new Set(), recent: ["gone", "2"] }, (k) => k !== "gone")).toBe("2");
    expect(activeSpeaker({ talking: new Set(["4"]), recent: [] }, () => true)).toBe("4");
    expect(activeSpeaker({ talking: new Set(), recent: [] }, () => true)).toBeNull();
  });
});

describe("CallViewModel with the server's speakers and videos", () => {
  it("orders tiles, marks who talks and names them from the speakers push", async () => {
    const { vm, call } = setup();
    await vm.join();
    call.state.update({ remotes: [remote("7", "@b:y"), remote("8", "@c:z"), remote("9", "@d:z")] });
    call.push({ type: "speakers", talking: ["9", "7"], recent: ["9", "8"] });
    await tick();
    const s = vm.state.get();
    expect(s.tiles.map((t) => [t.key, t.speaking])).toEqual([["local", false], ["9", true], ["8", false], ["7", true]]);
    expect(s.activeSpeaker).toBe("9");
    expect(s.talking).toEqual(["@d:z", "Bob"]);
    call.push({ type: "speakers", talking: [], recent: ["9", "8"] });
    expect(vm.state.get().talking).toEqual([]);
    expect(vm.state.get().activeSpeaker).toBe("9"); // kept through a pause
  });

  it("shows every video until the server says which it forwards, then only those", async () => {
    const { vm, call } = setup();
    await vm.join();
    call.state.update({ remotes: [remote("7", "@b:y", { media: withVideo() }), remote("8", "@c:z", { media: withVideo() })] });
    const video = () => vm.state.get().tiles.slice(1).map((t) => [t.key, t.videoOn, t.cameraOn, t.layer]);
    expect(video()).toEqual([["7", true, true, null], ["8", true, true, null]]);
    call.push({ type: "videos", videos: [{ feed: "8", layer: 2 }] });
    expect(video()).toEqual([["7", false, true, null], ["8", true, true, 2]]);
    call.push({ type: "videos", videos: [] });
    expect(video()).toEqual([["7", false, true, null], ["8", false, true, null]]);
  });

  it("does not wait for keys from a tile whose video is not forwarded and whose audio is muted", async () => {
    const encryption = new Store<EncryptionState>({ mode: "participant", bot: null, health: new Map(), error: null });
    const { vm, call } = setup({ encryption });
    await vm.join();
    call.state.update({
      remotes: [
        remote("7", "@b:y", { media: withVideo(), muted: { audio: true, video: false } }),
        remote("8", "@c:z", { media: withVideo(), muted: { audio: true, video: false } }),
      ],
    });
    call.push({ type: "videos", videos: [{ feed: 8, layer: 0 }] });
    expect(vm.state.get().e2ee).toMatchObject({ encrypted: false, waiting: ["@c:z"] });
    encryption.update({ health: new Map([["@c:z|DEV", "ok"]]) });
    expect(vm.state.get().e2ee).toMatchObject({ encrypted: true, waiting: [], failing: [] });
  });
});
