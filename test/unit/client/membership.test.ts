import { checkSessionsMembershipData } from "matrix-js-sdk/lib/matrixrtc/membershipData/session.js";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ParleyClientError } from "../../../client/src/errors.ts";
import { MatrixHttp } from "../../../client/src/matrix/http.ts";
import {
  buildMembershipContent,
  CALL_MEMBER_EVENT,
  homeserverMembershipTransport,
  MembershipManager,
  membershipStateKey,
  type MembershipTransport,
} from "../../../client/src/matrix/membership.ts";
import { tick } from "./fakes.ts";

describe("membership content", () => {
  const content = buildMembershipContent({ deviceId: "DEV", callApi: "https://parley.example", roomId: "!r:example", createdTs: 1000 });

  it("has the session form with Parley's transport instead of LiveKit's", () => {
    expect(content).toEqual({
      application: "m.call",
      call_id: "",
      scope: "m.room",
      device_id: "DEV",
      created_ts: 1000,
      expires: 14_400_000,
      "m.call.intent": "video",
      foci_preferred: [{ type: "org.parley.janus", call_api: "https://parley.example", room_id: "!r:example" }],
      focus_active: { type: "org.parley.janus" },
    });
  });

  it("is accepted by matrix-js-sdk's MatrixRTC parser (what stock clients run)", () => {
    expect(checkSessionsMembershipData(content as never)).toBe(true);
  });

  it("keys the state event by user and device", () => {
    expect(membershipStateKey("@alice:example", "ABC")).toBe("_@alice:example_ABC");
  });
});

interface Call {
  op: string;
  args: unknown[];
}

function fakeTransport(opts: { delayed?: boolean } = {}) {
  const calls: Call[] = [];
  let n = 0;
  const t: MembershipTransport & { calls: Call[]; failRestart: ParleyClientError | null; failSend: boolean } = {
    calls,
    failRestart: null,
    failSend: false,
    sendState: async (...args) => void calls.push({ op: "sendState", args }),
    supportsDelayed: async () => opts.delayed ?? true,
    scheduleState: async (...args) => {
      calls.push({ op: "schedule", args });
      return `d${++n}`;
    },
    updateDelayed: async (...args) => {
      calls.push({ op: args[1], args });
      if (args[1] === "restart" && t.failRestart) throw t.failRestart;
      if (args[1] === "send" && t.failSend) throw new ParleyClientError("M_NOT_FOUND", "room");
    },
  };
  return t;
}

function manager(transport: MembershipTransport, deviceId = "D1") {
  return new MembershipManager({
    transport,
    roomId: "!r:x",
    userId: "@a:x",
    deviceId,
    callApi: "https://p.x",
    delayMs: 30_000,
    restartEveryMs: 10_000,
  });
}

describe("MembershipManager", () => {
  beforeEach(() => {
    vi.useFakeTimers();
    vi.setSystemTime(5_000_000);
  });
  afterEach(() => vi.useRealTimers());

  it("schedules the delayed leave and publishes the membership", async () => {
    const t = fakeTransport();
    const m = manager(t);
    await m.join();
    expect(t.calls.map((c) => c.op).sort()).toEqual(["schedule", "sendState"]);
    expect(t.calls.find((c) => c.op === "schedule")!.args).toEqual(["!r:x", CALL_MEMBER_EVENT, "_@a:x_D1", {}, 30_000]);
    expect(t.calls.find((c) => c.op === "sendState")!.args[3]).toMatchObject({ device_id: "D1", created_ts: 5_000_000 });
    expect(m.status.get()).toEqual({ joined: true, delayedLeave: true, lastError: null });
  });

  it("does not hold the membership back for the delayed leave, and is joined once both are done", async () => {
    const t = fakeTransport();
    let scheduled!: (id: string) => void;
    t.scheduleState = (...args) => {
      t.calls.push({ op: "schedule", args });
      return new Promise<string>((r) => (scheduled = r));
    };
    const m = manager(t);
    let joined = false;
    const join = m.join().then(() => (joined = true));
    await tick();
    // The membership does not even wait for the homeserver's /versions (delayed events or not).
    expect(t.calls.map((c) => c.op)).toEqual(["sendState", "schedule"]);
    expect(joined).toBe(false);
    scheduled("d1");
    await join;
    expect(m.status.get()).toEqual({ joined: true, delayedLeave: true, lastError: null });
    await vi.advanceTimersByTimeAsync(10_000);
    expect(t.calls.at(-1)).toMatchObject({ op: "restart", args: ["d1", "restart"] });
  });

  it("restarts the delayed leave periodically", async () => {
    const t = fakeTransport();
    await manager(t).join();
    await vi.advanceTimersByTimeAsync(30_000);
    expect(t.calls.filter((c) => c.op === "restart").map((c) => c.args[0])).toEqual(["d1", "d1", "d1"]);
  });

  it("publishes again when the delayed leave already fired", async () => {
    const t = fakeTransport();
    await manager(t).join();
    t.failRestart = new ParleyClientError("M_NOT_FOUND", "room");
    await vi.advanceTimersByTimeAsync(10_000);
    t.failRestart = null;
    expect(t.calls.map((c) => c.op)).toEqual(["sendState", "schedule", "restart", "schedule", "sendState"]);
    await vi.advanceTimersByTimeAsync(10_000);
    expect(t.calls[t.calls.length - 1]).toMatchObject({ op: "restart", args: ["d2", "restart"] });
  });

  it("keeps trying through a network error", async () => {
    const t = fakeTransport();
    const m = manager(t);
    await m.join();
    t.failRestart = new ParleyClientError("NETWORK", "room");
    await vi.advanceTimersByTimeAsync(10_000);
    expect(m.status.get().lastError).toMatch(/NETWORK/);
    t.failRestart = null;
    await vi.advanceTimersByTimeAsync(10_000);
    expect(m.status.get().lastError).toBeNull();
  });

  it("leaves by sending the delayed event, and stops restarting", async () => {
    const t = fakeTransport();
    const m = manager(t);
    await m.join();
    await m.leave();
    expect(t.calls[t.calls.length - 1]).toMatchObject({ op: "send", args: ["d1", "send"] });
    const count = t.calls.length;
    await vi.advanceTimersByTimeAsync(60_000);
    expect(t.calls).toHaveLength(count);
    expect(m.status.get().joined).toBe(false);
  });

  it("writes {} itself when sending the delayed leave fails", async () => {
    const t = fakeTransport();
    t.failSend = true;
    const m = manager(t);
    await m.join();
    await m.leave();
    expect(t.calls.slice(-2).map((c) => c.op)).toEqual(["send", "sendState"]);
    expect(t.calls[t.calls.length - 1]!.args).toEqual(["!r:x", CALL_MEMBER_EVENT, "_@a:x_D1", {}]);
  });

  it("works without MSC4140: membership, then {} on leave", async () => {
    const t = fakeTransport({ delayed: false });
    const m = manager(t);
    await m.join();
    expect(m.status.get().delayedLeave).toBe(false);
    await vi.advanceTimersByTimeAsync(60_000);
    await m.leave();
    expect(t.calls.map((c) => c.op)).toEqual(["sendState", "sendState"]);
    expect(t.calls[1]!.args[3]).toEqual({});
  });

  it("sends a call's leave asked while its join is on its way after that join, and the next call's join after the leave (one device)", async () => {
    // Seen: the leave of a call left at once overtook nothing of its own, but landed after the
    // next call's membership on the same device, and the room kept the leave.
    const t = fakeTransport();
    const answers: (() => void)[] = [];
    t.sendState = (...args) => {
      t.calls.push({ op: "sendState", args });
      return new Promise<void>((r) => answers.push(r));
    };
    // (A device of its own: the order is kept per room and device, across managers.)
    const first = manager(t, "D2");
    const firstJoin = first.join();
    await tick();
    const firstLeave = first.leave();
    const second = manager(t, "D2");
    const secondJoin = second.join();
    await tick();
    expect(t.calls.map((c) => c.op)).toEqual(["sendState", "schedule"]); // nothing more before the homeserver answers
    answers.shift()!();
    await firstJoin;
    await firstLeave;
    await tick();
    // The leave the join scheduled, fired; then the next call's membership.
    expect(t.calls.map((c) => c.op)).toEqual(["sendState", "schedule", "send", "sendState", "schedule"]);
    expect(t.calls[2]!.args).toEqual(["d1", "send"]);
    expect(first.status.get().joined).toBe(false);
    answers.shift()!();
    await secondJoin;
    expect(second.status.get()).toEqual({ joined: true, delayedLeave: true, lastError: null });
    await second.leave();
  });

  it("publishes nothing when left before it joined", async () => {
    const t = fakeTransport();
    const m = manager(t);
    await m.leave();
    await m.join();
    expect(t.calls).toEqual([]);
    expect(m.status.get().joined).toBe(false);
  });

  describe("a membership the room loses during the call", () => {
    /** The room's memberships as the page's sync has them: the test says which devices are in. */
    function room() {
      const fns = new Set<() => void>();
      let inRoom: { userId: string; deviceId: string }[] = [];
      return {
        view: { devices: () => inRoom, onChange: (fn: () => void) => (fns.add(fn), () => void fns.delete(fn)) },
        set(devices: string[]) {
          inRoom = devices.map((deviceId) => ({ userId: "@a:x", deviceId }));
          for (const fn of fns) fn();
        },
        listeners: () => fns.size,
      };
    }
    /** A manager of device D3 watching the room, joined. */
    async function joinedWatching() {
      const t = fakeTransport();
      const r = room();
      const m = new MembershipManager({ transport: t, roomId: "!r:x", userId: "@a:x", deviceId: "D3", callApi: "https://p.x", observed: r.view, republishMinIntervalMs: 5_000 });
      await m.join();
      return { t, r, m };
    }
    const sends = (t: ReturnType<typeof fakeTransport>) => t.calls.filter((c) => c.op === "sendState").length;

    it("is published again once it was seen and is gone (a crashed page's delayed leave), not before it was seen", async () => {
      const { t, r, m } = await joinedWatching();
      r.set(["OTHER"]); // ours not in the sync yet: nothing to put back
      await vi.advanceTimersByTimeAsync(1);
      expect(sends(t)).toBe(1);
      r.set(["OTHER", "D3"]);
      r.set(["OTHER"]); // gone
      await vi.advanceTimersByTimeAsync(1);
      expect(sends(t)).toBe(2);
      expect(t.calls.at(-1)!.args[3]).toMatchObject({ device_id: "D3", created_ts: 5_000_000 });
      await m.leave();
    });

    it("is published again at most once every republishMinIntervalMs", async () => {
      const { t, r, m } = await joinedWatching();
      r.set(["D3"]);
      r.set([]);
      await vi.advanceTimersByTimeAsync(1);
      expect(sends(t)).toBe(2);
      r.set(["D3"]);
      r.set([]); // lost again at once: waits for the interval
      await vi.advanceTimersByTimeAsync(4_900);
      expect(sends(t)).toBe(2);
      await vi.advanceTimersByTimeAsync(100);
      expect(sends(t)).toBe(3);
      await m.leave();
    });

    it("is left alone after the leave, and the room is no longer watched", async () => {
      const { t, r, m } = await joinedWatching();
      r.set(["D3"]);
      expect(r.listeners()).toBe(1);
      await m.leave();
      expect(r.listeners()).toBe(0);
      r.set([]);
      await vi.advanceTimersByTimeAsync(10_000);
      expect(t.calls.map((c) => c.op)).toEqual(["sendState", "schedule", "send"]);
    });
  });

  it("extends `expires` before the membership goes stale", async () => {
    const t = fakeTransport({ delayed: false });
    await manager(t).join();
    await vi.advanceTimersByTimeAsync(14_400_000 - 5 * 60_000);
    const last = t.calls[t.calls.length - 1]!.args[3] as { expires: number; created_ts: number };
    expect(last).toMatchObject({ expires: 28_800_000, created_ts: 5_000_000 });
  });
});

describe("homeserverMembershipTransport", () => {
  it("uses the MSC4140 endpoints", async () => {
    const requests: { method: string; url: string; body: unknown }[] = [];
    const fetchFn = async (url: string, init?: RequestInit) => {
      requests.push({ method: init?.method ?? "GET", url, body: init?.body ? JSON.parse(String(init.body)) : undefined });
      const body = url.includes("/versions") ? { unstable_features: { "org.matrix.msc4140": true } } : url.includes("delay=") ? { delay_id: "abc" } : {};
      return new Response(JSON.stringify(body), { status: 200 });
    };
    const t = homeserverMembershipTransport(new MatrixHttp("http://127.0.0.1:8008", "tok", fetchFn));
    expect(await t.supportsDelayed()).toBe(true);
    expect(await t.scheduleState("!r:x", CALL_MEMBER_EVENT, "_@a:x_D", {}, 30000)).toBe("abc");
    await t.updateDelayed("abc", "restart");
    await tick();
    expect(requests.map((r) => `${r.method} ${r.url}`)).toEqual([
      "GET http://127.0.0.1:8008/_matrix/client/versions",
      "PUT http://127.0.0.1:8008/_matrix/client/v3/rooms/!r%3Ax/state/org.matrix.msc3401.call.member/_%40a%3Ax_D?org.matrix.msc4140.delay=30000",
      "POST http://127.0.0.1:8008/_matrix/client/unstable/org.matrix.msc4140/delayed_events/abc",
    ]);
    expect(requests[2]!.body).toEqual({ action: "restart" });
  });
});
