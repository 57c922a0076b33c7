import { describe, expect, it, vi } from "vitest";
import { ParleyClientError } from "../../../client/src/errors.ts";
import type { RoomSummary } from "../../../client/src/matrix/rooms.ts";
import type { MatrixSession } from "../../../client/src/matrix/session.ts";
import { AppModel, type AppServices } from "../../../client/src/state/appModel.ts";
import { MeetingModel, type ActiveCall, type MeetingServices } from "../../../client/src/state/meetingModel.ts";
import type { PrejoinModel } from "../../../client/src/state/prejoinModel.ts";
import { callHash, parseRoute } from "../../../client/src/state/router.ts";
import { Store } from "../../../client/src/state/store.ts";
import { tick } from "./fakes.ts";

const ROOM: RoomSummary = {
  roomId: "!r:x",
  name: "Demo",
  call: null,
  host: { trust: "origin", api: "http://p", origin: "http://p", host: "p" },
  encrypted: false,
};

function services(over: Partial<MeetingServices> = {}) {
  const vmState = new Store<{ phase: string; error: string | null }>({ phase: "idle", error: null });
  const active = {
    vm: { state: vmState, join: vi.fn(async () => undefined), leave: vi.fn(async () => undefined) },
    chat: { start: vi.fn(async () => undefined) },
    dispose: vi.fn(),
  };
  const prejoin = { start: vi.fn(async () => undefined), settled: vi.fn(async () => undefined), handOff: vi.fn(() => ({ audio: null, video: null, micOn: false, cameraOn: false, audioDeviceId: null, videoDeviceId: null })), dispose: vi.fn() };
  const s: MeetingServices = {
    openRoom: vi.fn(async () => ROOM),
    prejoin: () => prejoin as unknown as PrejoinModel,
    call: vi.fn(() => active as unknown as ActiveCall),
    ...over,
  };
  return { s, active, prejoin, vmState };
}

describe("router", () => {
  it("parses call links and round-trips targets", () => {
    expect(parseRoute(callHash("#meet-demo:a.example"))).toEqual({ name: "call", target: "#meet-demo:a.example" });
    expect(parseRoute("#/")).toEqual({ name: "home" });
    expect(parseRoute("#/call/%E0%A4%A")).toEqual({ name: "home" });
  });
});

describe("MeetingModel", () => {
  it("opens the room, pre-joins, joins, leaves and can rejoin", async () => {
    const { s, active, prejoin } = services();
    const m = new MeetingModel("#meet-demo:x", s);
    await m.open();
    expect(m.state.get().stage).toBe("prejoin");
    expect(prejoin.start).toHaveBeenCalled();
    // The call's join starts before the call screen is drawn (its socket opens first).
    let joinedBeforeShown: boolean | undefined;
    const off = m.state.subscribe((st) => {
      if (st.stage === "call") joinedBeforeShown ??= active.vm.join.mock.calls.length > 0;
    });
    await m.join();
    off();
    expect(joinedBeforeShown).toBe(true);
    expect(m.state.get().stage).toBe("call");
    expect(prejoin.settled).toHaveBeenCalled();
    expect(prejoin.handOff).toHaveBeenCalled();
    expect(active.vm.join).toHaveBeenCalled();
    expect(active.chat.start).toHaveBeenCalled();
    await m.leave();
    expect(m.state.get()).toMatchObject({ stage: "left", reason: null });
    expect(active.dispose).toHaveBeenCalled();
    m.rejoin();
    expect(m.state.get().stage).toBe("prejoin");
  });

  it("opens the devices beside the room's opening; the pre-join goes on with them, not opened again", async () => {
    const { s, prejoin } = services();
    const early = { ...prejoin, start: vi.fn(async () => undefined), dispose: vi.fn() };
    let opened!: (r: RoomSummary) => void;
    const kept: (PrejoinModel | undefined)[] = [];
    const m = new MeetingModel("#meet-demo:x", {
      ...s,
      openRoom: () => new Promise((r) => (opened = r)),
      lobbyPrejoin: () => early as unknown as PrejoinModel,
      prejoin: (_room, k) => (kept.push(k), k ?? (prejoin as unknown as PrejoinModel)),
    });
    const opening = m.open();
    await tick();
    expect(m.state.get().stage).toBe("opening");
    expect(early.start).toHaveBeenCalledTimes(1); // the camera starts while the room opens
    opened(ROOM);
    await opening;
    expect(m.state.get()).toMatchObject({ stage: "prejoin", prejoin: early });
    expect(kept).toEqual([early]);
    expect(early.start).toHaveBeenCalledTimes(1);
    expect(prejoin.start).not.toHaveBeenCalled();
    expect(early.dispose).not.toHaveBeenCalled();
  });

  it("closes the devices it opened when the room cannot be opened, and opens none before a new meeting is confirmed", async () => {
    const early = { start: vi.fn(async () => undefined), dispose: vi.fn() };
    const lobbyPrejoin = vi.fn(() => early as unknown as PrejoinModel);
    const failing = new MeetingModel("#x:y", services({ openRoom: async () => Promise.reject(new ParleyClientError("M_NOT_FOUND", "room")), lobbyPrejoin }).s);
    await failing.open();
    expect(failing.state.get().stage).toBe("error");
    expect(early.dispose).toHaveBeenCalledTimes(1);
    lobbyPrejoin.mockClear();
    const asking = new MeetingModel("#meet-new:x", services({ isNewMeeting: async () => true, lobbyPrejoin }).s);
    await asking.open();
    expect(asking.state.get().stage).toBe("confirm");
    expect(lobbyPrejoin).not.toHaveBeenCalled();
  });

  it("closed while the room opens: the devices opened for it close, and no pre-join follows", async () => {
    const early = { start: vi.fn(async () => undefined), dispose: vi.fn() };
    let opened!: (r: RoomSummary) => void;
    const { s, prejoin } = services({ openRoom: () => new Promise((r) => (opened = r)), lobbyPrejoin: () => early as unknown as PrejoinModel });
    const m = new MeetingModel("#meet-demo:x", s);
    const opening = m.open();
    await tick();
    m.dispose();
    expect(early.dispose).toHaveBeenCalledTimes(1);
    opened(ROOM);
    await opening;
    expect(m.state.get().stage).toBe("opening");
    expect(prejoin.start).not.toHaveBeenCalled();
    expect(early.dispose).toHaveBeenCalledTimes(1);
  });

  it("says why a room can't be opened", async () => {
    const { s } = services({ openRoom: async () => Promise.reject(new ParleyClientError("M_FORBIDDEN", "room")) });
    const m = new MeetingModel("#x:y", s);
    await m.open();
    expect(m.state.get()).toMatchObject({ stage: "error", message: "You can't enter this meeting room: it needs an invitation, or you were removed from it." });
  });

  it("asks before a new meeting is created, and creates nothing until the user says yes", async () => {
    const isNewMeeting = vi.fn(async (target: string) => target === "#meet-tema:x");
    const { s } = services({ isNewMeeting });
    const m = new MeetingModel("#meet-tema:x", s);
    await m.open();
    expect(m.state.get()).toEqual({ stage: "confirm", target: "#meet-tema:x" });
    expect(s.openRoom).not.toHaveBeenCalled();
    await m.create();
    expect(s.openRoom).toHaveBeenCalledWith("#meet-tema:x");
    expect(m.state.get().stage).toBe("prejoin");
    expect(isNewMeeting).toHaveBeenCalledTimes(1);
  });

  it("opens an existing meeting without asking", async () => {
    const { s } = services({ isNewMeeting: async () => false });
    const m = new MeetingModel("#meet-team:x", s);
    await m.create(); // no question asked: nothing to say yes to
    expect(s.openRoom).not.toHaveBeenCalled();
    await m.open();
    expect(m.state.get().stage).toBe("prejoin");
  });

  it("says why it couldn't check whether the meeting exists", async () => {
    const { s } = services({ isNewMeeting: async () => Promise.reject(new ParleyClientError("M_LIMIT_EXCEEDED", "room")) });
    const m = new MeetingModel("#meet-team:x", s);
    await m.open();
    expect(m.state.get()).toMatchObject({ stage: "error", message: "Too many attempts in a short time. Wait a moment and try again." });
    expect(s.openRoom).not.toHaveBeenCalled();
  });

  it("closing the meeting stops what its services started (a feed warming up during the pre-join)", async () => {
    const dispose = vi.fn();
    const { s } = services({ dispose });
    const m = new MeetingModel("#x:y", s);
    await m.open();
    expect(m.state.get().stage).toBe("prejoin");
    m.dispose();
    expect(dispose).toHaveBeenCalledTimes(1);
  });

  it("keeps a failed call on screen and goes back to pre-join on retry", async () => {
    const { s, vmState, active } = services();
    const m = new MeetingModel("#x:y", s);
    await m.open();
    await m.join();
    vmState.set({ phase: "failed", error: "The call has ended." });
    expect(m.state.get().stage).toBe("call");
    m.retry();
    expect(active.dispose).toHaveBeenCalled();
    expect(m.state.get().stage).toBe("prejoin");
  });
});

describe("AppModel", () => {
  const session: MatrixSession = { homeserverUrl: "http://hs", userId: "@a:hs", deviceId: "D", accessToken: "t" };

  function app(over: Partial<AppServices> = {}) {
    let stored: MatrixSession | null = null;
    const navigate = vi.fn();
    const s: AppServices = {
      settings: { homeserverUrl: "http://hs", serverName: "hs", aliasPrefix: "meet-", callTrust: { servers: ["hs"], botLocalparts: ["parley"], insecureLoopback: false } },
      sessions: { load: () => stored, save: (x) => void (stored = x), clear: () => void (stored = null) },
      validate: async () => true,
      logout: async () => undefined,
      completeSso: async () => null,
      login: {
        normalize: (x) => x,
        flows: async () => ({ password: true, sso: null }),
        password: async () => session,
        startSso: () => undefined,
        discover: async (s) => `https://${s}`,
      },
      meeting: () => services().s,
      meetingTarget: (input) => `#meet-${input}:hs`,
      navigate,
      ...over,
    };
    return { a: new AppModel(s), navigate, setStored: (x: MatrixSession) => (stored = x) };
  }

  it("asks to sign in, then opens the meeting from the link", async () => {
    const { a } = app();
    await a.start("#/call/%23meet-demo%3Ahs");
    const view = a.state.get().view;
    expect(view.screen).toBe("login");
    if (view.screen !== "login") return;
    await view.login.signInWithPassword("a", "pw");
    await tick();
    const after = a.state.get().view;
    expect(after.screen).toBe("meeting");
    if (after.screen === "meeting") expect(after.meeting.state.get().target).toBe("#meet-demo:hs");
  });

  it("says a stored sign-in expired", async () => {
    const { a, setStored } = app({ validate: async () => false });
    setStored(session);
    await a.start("");
    const view = a.state.get().view;
    expect(view.screen === "login" && view.login.state.get().notice).toBe("Your sign-in has expired. Sign in again.");
  });

  it("finishes SSO and returns to the meeting it started from", async () => {
    const { a, navigate } = app({ completeSso: async () => ({ session, returnHash: "#/call/x" }) });
    await a.start("");
    expect(navigate).toHaveBeenCalledWith("#/call/x");
    expect(a.state.get().session).toEqual(session);
    expect(a.state.get().view.screen).toBe("meeting");
  });

  it("opens a meeting by name from home", async () => {
    const { a, navigate, setStored } = app();
    setStored(session);
    await a.start("");
    expect(a.state.get().view.screen).toBe("home");
    a.openMeeting("team");
    expect(navigate).toHaveBeenCalledWith("#/call/%23meet-team%3Ahs");
  });
});
