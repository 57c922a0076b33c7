import { beforeEach, describe, expect, it } from "vitest";
import { CallRoster, type CallPush, type Member } from "../../../appservice/src/calls/callRoster.ts";
import { Moderation, type ModerationRecorder } from "../../../appservice/src/calls/moderation.ts";
import type { SfuMediaSession } from "../../../appservice/src/calls/ports.ts";
import { moderationEmpty, type ModerationRecord } from "../../../appservice/src/store/store.ts";

class FakeMedia {
  readonly blocks: string[] = [];
  readonly feedId: string;
  constructor(feedId: string) {
    this.feedId = feedId;
  }
  async moderate(kind: string, muted: boolean) {
    this.blocks.push(`${kind}:${muted ? "block" : "unblock"}`);
  }
}

let now: number;
let roster: CallRoster<string>;
let moderation: Moderation<string>;
let pushes: Map<string, CallPush[]>;

function member(seat: string, userId: string, source: "camera" | "screen" = "camera"): Member<string> & { media: FakeMedia } {
  const media = new FakeMedia(`f-${seat}`);
  const m = {
    seat, userId, deviceId: "D", media: media as unknown as SfuMediaSession, streams: [{ mid: "0", kind: "audio" as const }], published: true,
    videoSource: source, muted: { audio: false, video: false },
    client: { push: (p: CallPush) => pushes.get(seat)!.push(p) },
  };
  pushes.set(seat, []);
  roster.add("call", m);
  return m as unknown as Member<string> & { media: FakeMedia };
}

beforeEach(() => {
  now = 1000;
  pushes = new Map();
  roster = new CallRoster<string>((callId, m) => ({ hand: moderation.handOf(callId, m.userId), forced: moderation.forcedOf(callId, m.userId) }));
  moderation = new Moderation({ reactions: { perMinute: 60, burst: 2 } }, { roster: () => roster, clock: { now: () => now } });
});

describe("moderation at the SFU", () => {
  it("a forced mute blocks the user's stream on every seat, tells each, and survives a republish until allowed", async () => {
    const a1 = member("s1", "@bob:b"), a2 = member("s2", "@bob:b"), other = member("s3", "@eve:b");
    expect(await moderation.setForced("call", "@bob:b", "audio", true, "@host:a")).toBe(2);
    expect(a1.media.blocks).toEqual(["audio:block"]);
    expect(a2.media.blocks).toEqual(["audio:block"]);
    expect(other.media.blocks).toEqual([]);
    expect(pushes.get("s1")).toContainEqual({ type: "moderated", kind: "audio", muted: true, by: "@host:a" });
    expect(roster.participants("call").find((p) => p.user_id === "@bob:b")).toMatchObject({ forced: { audio: true, video: false }, muted: { audio: true } });
    expect(() => moderation.assertMayUnmute("call", "@bob:b", "audio", false)).toThrow(expect.objectContaining({ errcode: "M_FORBIDDEN" }));
    expect(() => moderation.assertMayUnmute("call", "@bob:b", "video", false)).not.toThrow();

    const again = member("s4", "@bob:b");
    await moderation.onPublished(again, "call");
    expect(again.media.blocks).toEqual(["audio:block"]);
    // A reconnecting seat is told again who muted it.
    const told: CallPush[] = [];
    moderation.replay("call", "@bob:b", (p) => told.push(p));
    expect(told).toEqual([{ type: "moderated", kind: "audio", muted: true, by: "@host:a" }]);

    await moderation.setForced("call", "@bob:b", "audio", false, "@host:a");
    expect(a1.media.blocks.at(-1)).toBe("audio:unblock");
    const none: CallPush[] = [];
    moderation.replay("call", "@bob:b", (p) => none.push(p));
    expect(none).toEqual([]);
    expect(() => moderation.assertMayUnmute("call", "@bob:b", "audio", false)).not.toThrow();
  });

  it("a stopped share blocks the video until the client shows its camera; a forced video mute outlasts that", async () => {
    const sharer = member("s1", "@bob:b", "screen");
    member("s2", "@eve:b");
    expect(await moderation.stopShare("call", "@eve:b", "@host:a")).toBe(0);
    expect(await moderation.stopShare("call", "@bob:b", "@host:a")).toBe(1);
    expect(pushes.get("s1")).toContainEqual({ type: "stop_share", by: "@host:a" });
    expect(sharer.media.blocks).toEqual(["video:block"]);
    await moderation.onSource(sharer, "call", "screen");
    expect(sharer.media.blocks.at(-1)).toBe("video:block");
    await moderation.onSource(sharer, "call", "camera");
    expect(sharer.media.blocks.at(-1)).toBe("video:unblock");

    await moderation.setForced("call", "@bob:b", "video", true, "@host:a");
    await moderation.stopShare("call", "@bob:b", "@host:a"); // not sharing now: nothing
    sharer.videoSource = "camera";
    const before = sharer.media.blocks.length;
    await moderation.onSource(sharer, "call", "camera");
    expect(sharer.media.blocks.length).toBe(before);
  });

  it("hands are raised once (the first time counts) and lowered; the participant list shows them", () => {
    member("s1", "@bob:b");
    moderation.raiseHand("call", "@bob:b", true);
    now = 5000;
    moderation.raiseHand("call", "@bob:b", true);
    expect(moderation.handOf("call", "@bob:b")).toBe(1000);
    expect(pushes.get("s1")!.at(-1)).toMatchObject({ type: "participants", participants: [{ user_id: "@bob:b", hand: 1000 }] });
    moderation.raiseHand("call", "@bob:b", false);
    expect(moderation.handOf("call", "@bob:b")).toBeNull();
  });

  it("reactions are one of the list, reach every seat, and are rate-limited per user", () => {
    member("s1", "@bob:b");
    member("s2", "@eve:b");
    expect(() => moderation.react("call", "@bob:b", "<script>")).toThrow(expect.objectContaining({ errcode: "M_INVALID_PARAM" }));
    moderation.react("call", "@bob:b", "👍");
    moderation.react("call", "@bob:b", "🎉");
    expect(() => moderation.react("call", "@bob:b", "👍")).toThrow(expect.objectContaining({ errcode: "M_LIMIT_EXCEEDED" }));
    moderation.react("call", "@eve:b", "👍");
    expect(pushes.get("s2")!.filter((p) => p.type === "reaction")).toHaveLength(3);
    now += 1000;
    moderation.react("call", "@bob:b", "👍");
  });

  it("a call's state goes when the call is forgotten", async () => {
    member("s1", "@bob:b");
    await moderation.setForced("call", "@bob:b", "audio", true, "@host:a");
    expect(moderation.size()).toBe(1);
    moderation.forget("call");
    expect(moderation.size()).toBe(0);
    expect(moderation.forcedOf("call", "@bob:b")).toEqual({ audio: false, video: false });
  });
});

describe("moderation kept across a Parley restart (docs/resilience.md)", () => {
  /** A store answering each write after the next ones were asked (out of order, if nothing kept the order). */
  function slowStore() {
    const rows = new Map<string, ModerationRecord>();
    const log: string[] = [];
    let delay = 30;
    const later = () => new Promise<void>((r) => setTimeout(r, (delay = Math.max(1, delay - 10))));
    return {
      rows,
      log,
      recorder: {
        save: async (r: ModerationRecord) => {
          await later();
          log.push(`save ${r.userId}`);
          if (moderationEmpty(r)) rows.delete(`${r.callId}|${r.userId}`);
          else rows.set(`${r.callId}|${r.userId}`, r);
        },
        forget: async (callId: string) => {
          await later();
          log.push(`forget ${callId}`);
          for (const k of [...rows.keys()]) if (k.startsWith(`${callId}|`)) rows.delete(k);
        },
      },
    };
  }
  const settle = () => new Promise((r) => setTimeout(r, 100));
  const recordedTo = (recorder: ModerationRecorder) => new Moderation({ reactions: { perMinute: 60, burst: 2 } }, { roster: () => roster, clock: { now: () => now }, recorder });
  /** Moderation recorded to a slow store, where Bob shares his screen: a host mutes his microphone and stops his share. */
  async function bobMutedAndStopped() {
    const store = slowStore();
    moderation = recordedTo(store.recorder);
    member("s1", "@bob:b", "screen");
    await moderation.setForced("call", "@bob:b", "audio", true, "@host:a");
    await moderation.stopShare("call", "@bob:b", "@host:a");
    return store;
  }

  it("each change is recorded in the order made; a user with nothing left has no row; the call's rows go with it", async () => {
    const store = await bobMutedAndStopped();
    moderation.raiseHand("call", "@eve:b", true);
    moderation.raiseHand("call", "@eve:b", false);
    await settle();
    expect([...store.rows.values()]).toEqual([
      { callId: "call", userId: "@bob:b", forcedAudioBy: "@host:a", forcedVideoBy: null, shareStopped: true, handAt: null, updatedAt: 1000 },
    ]);
    expect(store.log).toEqual(["save @bob:b", "save @bob:b", "save @eve:b", "save @eve:b"]);
    moderation.raiseHand("call", "@eve:b", true);
    moderation.forget("call");
    moderation.forget("another call"); // none of its own: nothing to write
    await settle();
    expect(store.rows.size).toBe(0);
    expect(store.log.slice(-2)).toEqual(["save @eve:b", "forget call"]);
  });

  it("a restarted Parley's moderation holds again: the mute is forced (and by whom), a reconnect is blocked, the hand is up, the share stays stopped", async () => {
    const store = await bobMutedAndStopped();
    now = 1500;
    moderation.raiseHand("call", "@eve:b", true);
    await settle();

    // The next process: nothing in memory, the store's rows read back before any seat.
    pushes = new Map();
    roster = new CallRoster<string>((callId, m) => ({ hand: moderation.handOf(callId, m.userId), forced: moderation.forcedOf(callId, m.userId) }));
    moderation = recordedTo(store.recorder);
    moderation.restore([...store.rows.values()]);
    expect(moderation.forcedOf("call", "@bob:b")).toEqual({ audio: true, video: false });
    expect(() => moderation.assertMayUnmute("call", "@bob:b", "audio", false)).toThrow(expect.objectContaining({ errcode: "M_FORBIDDEN" }));
    expect(moderation.handOf("call", "@eve:b")).toBe(1500);
    const told: CallPush[] = [];
    moderation.replay("call", "@bob:b", (p) => told.push(p));
    expect(told).toEqual([{ type: "moderated", kind: "audio", muted: true, by: "@host:a" }]);
    const reconnect = member("s2", "@bob:b", "screen");
    await moderation.onPublished(reconnect, "call");
    expect(reconnect.media.blocks).toEqual(["audio:block", "video:block"]);
    await moderation.onSource(reconnect, "call", "camera");
    expect(reconnect.media.blocks.at(-1)).toBe("video:unblock");
    // Allowed again after the restart: the row says so too.
    await moderation.setForced("call", "@bob:b", "audio", false, "@host:a");
    await settle();
    expect(store.rows.has("call|@bob:b")).toBe(false);
  });

  it("a store that fails is reported, and moderation goes on in memory", async () => {
    const failures: unknown[] = [];
    moderation = recordedTo({ save: () => Promise.reject(new Error("disk full")), forget: async () => undefined, failed: (err) => failures.push(err) });
    member("s1", "@bob:b");
    await moderation.setForced("call", "@bob:b", "video", true, "@host:a");
    await settle();
    expect(failures).toEqual([new Error("disk full")]);
    expect(moderation.forcedOf("call", "@bob:b").video).toBe(true);
  });
});
