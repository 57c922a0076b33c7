// The call's key mode comes from the room's org.parley.call state, never from the server's hello.
import { describe, expect, it, vi } from "vitest";
import { CallEncryption, type KeyChannel } from "../../../../client/src/rtc/e2ee/callEncryption.ts";
import { E2eeMedia, type WorkerLike } from "../../../../client/src/rtc/e2ee/e2eeMedia.ts";
import { keyContent, type KeySender } from "../../../../client/src/rtc/e2ee/keyShare.ts";
import type { ToWorker } from "../../../../client/src/rtc/e2ee/workerProtocol.ts";

const ROOM = "!call:a";
const BOT = "@parley:b";

function setup(callState: unknown, opts: { authenticatedDevices?: boolean; roomState?: unknown; channel?: Promise<void>; synced?: Promise<void> } = {}) {
  const posted: ToWorker[] = [];
  const worker: WorkerLike = { postMessage: (m) => void posted.push(m), addEventListener: () => undefined, terminate: () => undefined };
  const media = new E2eeMedia({ userId: "@me:a", deviceId: "MEDEV", worker, scriptTransform: null });
  const keyListeners: ((from: KeySender, c: unknown) => void)[] = [];
  const channel: KeyChannel = {
    transport: { send: async () => undefined, onKeys: (fn) => (keyListeners.push(fn), () => undefined) },
    members: { devices: () => [], onChange: () => () => undefined },
    callState: async () => {
      await opts.synced;
      return callState;
    },
    ...(opts.authenticatedDevices === undefined ? {} : { authenticatedDevices: opts.authenticatedDevices }),
  };
  const enc = new CallEncryption(media, {
    roomId: ROOM,
    userId: "@me:a",
    deviceId: "MEDEV",
    channel: async () => {
      await opts.channel;
      return channel;
    },
    ...("roomState" in opts ? { roomState: opts.roomState } : {}),
  });
  const receive = (from: KeySender, index: number) => keyListeners.forEach((l) => l(from, keyContent(ROOM, { userId: from.userId, deviceId: from.deviceId ?? "X" }, index, new Uint8Array(32).fill(1), 0)));
  return { enc, posted, receive, media };
}

const hello = { required: true, keys: "provisioned" as const, bot: "@evil:server" };

describe("CallEncryption: the key mode", () => {
  it("is the room's: a hello that asks for provisioned keys from its own bot changes nothing", async () => {
    const { enc, posted, receive } = setup({ version: 1, api: "https://p" });
    await enc.begin(hello);
    expect(enc.state.get()).toMatchObject({ mode: "participant", bot: null, error: null });
    expect(posted[0]).toMatchObject({ type: "init", mode: "participant" });
    receive({ userId: "@evil:server", deviceId: "EVIL" }, 0);
    expect(posted.some((m) => m.type === "setCallKey")).toBe(false);
  });

  it("provisioned by the bot the room names: its keys are accepted, the hello's bot's are not", async () => {
    const { enc, posted, receive } = setup({ version: 1, e2ee: { keys: "provisioned", bot: BOT } });
    await enc.begin(hello);
    expect(enc.state.get()).toMatchObject({ mode: "provisioned", bot: BOT, error: null });
    receive({ userId: "@evil:server", deviceId: "EVIL" }, 0);
    expect(posted.filter((m) => m.type === "setCallKey")).toEqual([]);
    receive({ userId: BOT, deviceId: "BOTDEV" }, 1);
    expect(posted.filter((m) => m.type === "setCallKey")).toMatchObject([{ index: 1 }]);
  });

  it("an invalid e2ee field: no keys at all, and the header says why", async () => {
    const { enc, posted, receive } = setup({ version: 1, e2ee: { keys: "provisioned" } });
    await enc.begin(hello);
    expect(enc.state.get().error).toMatch(/call settings name no valid key mode/);
    receive({ userId: BOT, deviceId: "BOTDEV" }, 0);
    expect(posted.some((m) => m.type === "setCallKey" || m.type === "setOwnKey")).toBe(false);
  });

  it("participant keys over a transport that binds keys to users only (the widget API) still flow", async () => {
    const { enc, posted } = setup(null, { authenticatedDevices: false });
    await enc.begin();
    expect(enc.state.get().error).toBeFalsy();
    expect(enc.state.get().mode).toBe("participant");
    expect(posted.some((m) => m.type === "setOwnKey")).toBe(true);
  });
});

describe("CallEncryption: the key mode read when the meeting was opened", () => {
  const provisioned = { version: 1, e2ee: { keys: "provisioned", bot: BOT } };

  it("sets the mode at once, before the Matrix client is up; keys flow once it is", async () => {
    let up!: () => void;
    const channel = new Promise<void>((r) => (up = r));
    const { enc, posted, receive } = setup(provisioned, { roomState: provisioned, channel });
    await enc.begin(hello);
    expect(enc.state.get()).toMatchObject({ mode: "provisioned", bot: BOT, error: null });
    expect(posted[0]).toMatchObject({ type: "init", mode: "provisioned" });
    up();
    await vi.waitFor(() => {
      receive({ userId: BOT, deviceId: "BOTDEV" }, 2);
      expect(posted.filter((m) => m.type === "setCallKey")).toMatchObject([{ index: 2 }]);
    });
  });

  it("keys flow before the synced room is up (a key from a device publishing is used); a synced mode that disagrees then stops them", async () => {
    const participant = { version: 1 };
    let synced!: () => void;
    const { enc, posted, receive, media } = setup(provisioned, { roomState: participant, synced: new Promise<void>((r) => (synced = r)) });
    await enc.begin();
    media.participants([{ userId: "@b:b", deviceId: "BDEV", publishing: true }]);
    await vi.waitFor(() => {
      receive({ userId: "@b:b", deviceId: "BDEV" }, 3);
      expect(posted.filter((m) => m.type === "setKey")).toMatchObject([{ participant: "@b:b|BDEV", index: 3 }]);
    });
    synced(); // the synced room says provisioned: refused, and no key is taken from then on
    await vi.waitFor(() => expect(enc.state.get().error).toMatch(/key mode changed/));
    const before = posted.length;
    receive({ userId: "@b:b", deviceId: "BDEV" }, 4);
    expect(posted.slice(before).some((m) => m.type === "setKey")).toBe(false);
  });

  it("a mode that changed before the synced room came up: no keys at all, and the header says so", async () => {
    const { enc, posted, receive } = setup({ version: 1 }, { roomState: provisioned });
    await enc.begin();
    await vi.waitFor(() => expect(enc.state.get().error).toMatch(/key mode changed/));
    receive({ userId: BOT, deviceId: "BOTDEV" }, 0);
    receive({ userId: "@other:a", deviceId: "OTHER" }, 0);
    expect(posted.some((m) => m.type === "setCallKey" || m.type === "setOwnKey" || m.type === "setKey")).toBe(false);
  });

  it("an invalid mode read at open is refused at once, as the synced one would be", async () => {
    const { enc, posted } = setup(null, { roomState: { e2ee: { keys: "nonsense" } } });
    await enc.begin();
    expect(enc.state.get().error).toMatch(/call settings name no valid key mode/);
    expect(posted.some((m) => m.type === "setOwnKey")).toBe(false);
  });
});

describe("E2eeMedia: the SFU's participant list", () => {
  it("keeps who publishes (keys from them are used) apart from who is in the call's media at all, and says when either changed", () => {
    const worker: WorkerLike = { postMessage: () => undefined, addEventListener: () => undefined, terminate: () => undefined };
    const media = new E2eeMedia({ userId: "@me:a", deviceId: "MEDEV", worker, scriptTransform: null });
    let changes = 0;
    media.events.on("roster", () => void changes++);
    const B = { userId: "@b:b", deviceId: "B" };
    const C = { userId: "@c:c", deviceId: "C" };
    media.participants([{ ...B, publishing: true }, { ...C, publishing: false }]);
    expect(media.roster()).toEqual([B]);
    expect(media.arrived()).toEqual([B, C]);
    media.participants([{ ...C, publishing: false }, { ...B, publishing: true }]); // the same, in another order
    expect(changes).toBe(1);
    media.participants([B, { ...C, publishing: true }]); // C publishes now (absent: publishing)
    expect(media.roster()).toEqual([B, C]);
    expect(changes).toBe(2);
  });
});
