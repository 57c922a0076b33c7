// The call view model with the stale-media check wired to fake receive stats on fake timers: the
// status and the stale tile follow the stats, and the E2EE badge makes no claim alone or while
// nothing arrives, and claims again once media moves and decrypts.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { EncryptionState } from "../../../client/src/rtc/e2ee/callEncryption.ts";
import type { MediaSample } from "../../../client/src/rtc/mediaHealth.ts";
import { Store } from "../../../client/src/state/store.ts";
import { remote, setup } from "./callFakes.ts";
import { FakeTrack, asTrack } from "./fakes.ts";

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

const media = (key: string) => {
  const audio = asTrack(new FakeTrack("audio"));
  const video = asTrack(new FakeTrack("video"));
  return { feed: Number(key), userId: "", stream: {} as MediaStream, audio, video };
};

describe("the call view model's media state", () => {
  it("follows the receive stats: flowing, one tile stale, the whole call stalled, and back", async () => {
    const encryption = new Store<EncryptionState>({ mode: "participant", bot: null, health: new Map(), error: null });
    const counts = new Map<string, number>();
    const moving = new Set<string>();
    const mediaStats = async (): Promise<MediaSample> => {
      for (const t of moving) counts.set(t, (counts.get(t) ?? 0) + 10);
      return { inbound: [...counts].map(([track, count]) => ({ track, kind: "audio" as const, count })), peers: ["connected"] };
    };
    const { vm, call } = setup({ encryption, mediaStats });
    await vm.join();
    await vi.advanceTimersByTimeAsync(300);
    expect(vm.state.get()).toMatchObject({ media: "alone", e2ee: { state: "alone", encrypted: false } });

    const b = media("7");
    const c = media("8");
    call.state.update({ remotes: [remote("7", "@b:y", { media: b }), remote("8", "@c:z", { media: c })] });
    encryption.update({ health: new Map([["@b:y|DEV", "ok"], ["@c:z|DEV", "ok"]]) });
    for (const t of [b.audio, b.video, c.audio, c.video]) moving.add(t.id);
    await vi.advanceTimersByTimeAsync(1000);
    expect(vm.state.get()).toMatchObject({ media: "flowing", e2ee: { state: "encrypted", text: "Encrypted end to end" } });

    // The signalling socket drops (a Parley restart) while media keeps arriving: nothing to alarm anyone about.
    call.state.update({ phase: "reconnecting" });
    expect(vm.state.get().notice).toBeNull();
    call.state.update({ phase: "connected" });

    moving.delete(b.audio.id);
    moving.delete(b.video.id);
    await vi.advanceTimersByTimeAsync(2000);
    const tiles = () => Object.fromEntries(vm.state.get().tiles.map((t) => [t.key, t.stale]));
    expect(tiles()).toEqual({ local: false, "7": true, "8": false });
    expect(vm.state.get()).toMatchObject({ media: "flowing", e2ee: { state: "encrypted" } });

    moving.clear();
    await vi.advanceTimersByTimeAsync(2000);
    expect(vm.state.get()).toMatchObject({ media: "stalled", e2ee: { state: "no-media", encrypted: false } });
    call.state.update({ phase: "reconnecting" });
    expect(vm.state.get().notice).toBe("Connection lost. Reconnecting…");
    call.state.update({ phase: "connected" });
    expect(tiles()).toEqual({ local: false, "7": true, "8": true });

    moving.add(c.audio.id);
    await vi.advanceTimersByTimeAsync(500);
    expect(vm.state.get()).toMatchObject({ media: "flowing", e2ee: { state: "encrypted" } });
    expect(tiles()).toEqual({ local: false, "7": true, "8": false });
    await vm.leave();
  });
});
