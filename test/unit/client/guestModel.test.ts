// "Join as guest": offered only on a meeting link of a Parley that takes guests; the name is
// checked before asking; the guest session becomes the app's session and the meeting opens.
import { describe, expect, it, vi } from "vitest";
import { createGuest, guestMode } from "../../../client/src/matrix/guest.ts";
import type { MatrixSession } from "../../../client/src/matrix/session.ts";
import { AppModel, type AppServices } from "../../../client/src/state/appModel.ts";
import { GUEST_NAME_MAX, GuestModel, type GuestPort } from "../../../client/src/state/guestModel.ts";
import type { MeetingServices } from "../../../client/src/state/meetingModel.ts";
import "./fakes.ts";

const guestSession: MatrixSession = { homeserverUrl: "https://meet.example/_parley/guest", userId: "@_parley_guest-a:hs", deviceId: "PG1", accessToken: "pg_x" };
const tick = () => new Promise((r) => setTimeout(r, 0));

function port(over: Partial<GuestPort> = {}): GuestPort {
  return { mode: async () => "lobby", create: async () => guestSession, ...over };
}

const json = (status: number, body: unknown) => async (_url: string, _init?: RequestInit) => new Response(JSON.stringify(body), { status, headers: { "content-type": "application/json" } });

describe("guest API client", () => {
  it("reads the mode, 'off' when the server says nothing useful", async () => {
    expect(await guestMode("https://m", json(200, { mode: "lobby" }))).toBe("lobby");
    expect(await guestMode("https://m", json(404, { errcode: "M_UNRECOGNIZED" }))).toBe("off");
    expect(await guestMode("https://m", async () => Promise.reject(new Error("down")))).toBe("off");
  });

  it("turns the answer into a session on the guest proxy", async () => {
    const fetchFn = vi.fn(json(200, { user_id: guestSession.userId, device_id: "PG1", access_token: "pg_x", home_server_url: guestSession.homeserverUrl, room_id: "!r:hs" }));
    expect(await createGuest("https://m", "Ada", "#meet-a:hs", fetchFn)).toEqual(guestSession);
    expect(fetchFn.mock.calls[0]![0]).toBe("https://m/_parley/v1/guests");
    expect(JSON.parse(fetchFn.mock.calls[0]![1]!.body as string)).toEqual({ name: "Ada", meeting: "#meet-a:hs" });
  });

  it("says why a guest was refused", async () => {
    await expect(createGuest("https://m", "Ada", "#x:hs", json(403, { errcode: "M_FORBIDDEN", error: "this meeting does not admit guests" }))).rejects.toMatchObject({
      human: "You can't join this meeting as a guest: this meeting does not admit guests. Sign in with a Matrix account instead.",
    });
    await expect(createGuest("https://m", "Ada", "#x:hs", json(429, { errcode: "M_LIMIT_EXCEEDED", error: "too many" }))).rejects.toMatchObject({ code: "M_LIMIT_EXCEEDED" });
    await expect(createGuest("https://m", "Ada", "#x:hs", json(200, { user_id: "@a:hs" }))).rejects.toMatchObject({ code: "BAD_RESPONSE" });
  });
});

describe("GuestModel", () => {
  it("is available only when the Parley takes guests", async () => {
    const on = new GuestModel(port(), "#meet-a:hs", () => undefined);
    await on.load();
    expect(on.state.get().available).toBe(true);
    const off = new GuestModel(port({ mode: async () => "off" }), "#meet-a:hs", () => undefined);
    await off.load();
    expect(off.state.get().available).toBe(false);
  });

  it("checks the name before asking, then hands over the session", async () => {
    const create = vi.fn(port().create);
    const done = vi.fn();
    const m = new GuestModel(port({ create }), "#meet-a:hs", done);
    await m.join("   ");
    expect(m.state.get().error).toMatch(/Enter the name/);
    await m.join("x".repeat(GUEST_NAME_MAX + 1));
    expect(m.state.get().error).toMatch(/at most 64/);
    expect(create).not.toHaveBeenCalled();
    await m.join("  Ada   Lovelace ");
    expect(create).toHaveBeenCalledWith("Ada Lovelace", "#meet-a:hs");
    expect(done).toHaveBeenCalledWith(guestSession);
    expect(m.state.get()).toEqual({ available: null, busy: false, error: null });
  });
});

describe("AppModel with guests", () => {
  function app(guests: GuestPort | undefined, opened: string[]) {
    let stored: MatrixSession | null = null;
    const meeting: MeetingServices = {
      openRoom: async (target) => {
        opened.push(target);
        return Promise.reject(new Error("not in this test"));
      },
      prejoin: () => {
        throw new Error("not in this test");
      },
      call: () => {
        throw new Error("not in this test");
      },
    };
    const s: AppServices = {
      settings: { homeserverUrl: "http://hs", serverName: "hs", aliasPrefix: "meet-", callTrust: { servers: ["hs"], botLocalparts: ["parley"], insecureLoopback: false } },
      sessions: { load: () => stored, save: (x) => void (stored = x), clear: () => void (stored = null) },
      validate: async () => true,
      logout: async () => undefined,
      completeSso: async () => null,
      login: { normalize: (x) => x, flows: async () => ({ password: true, sso: null }), password: async () => guestSession, startSso: () => undefined, discover: async () => "http://hs" },
      ...(guests ? { guests } : {}),
      meeting: () => meeting,
      meetingTarget: (input) => input,
      navigate: () => undefined,
    };
    return new AppModel(s);
  }

  it("offers the guest form on a meeting link, and the guest's session opens the meeting", async () => {
    const opened: string[] = [];
    const a = app(port(), opened);
    await a.start("#/call/%23meet-demo%3Ahs");
    const view = a.state.get().view;
    if (view.screen !== "login" || !view.guest) throw new Error("no guest form");
    expect(view.guest.meeting).toBe("#meet-demo:hs");
    await view.guest.join("Ada");
    await tick();
    expect(a.state.get().session).toEqual(guestSession);
    expect(opened).toEqual(["#meet-demo:hs"]);
  });

  it("offers no guest form at home or without the port", async () => {
    const home = app(port(), []);
    await home.start("#/");
    expect(home.state.get().view).toMatchObject({ screen: "login" });
    expect((home.state.get().view as { guest?: unknown }).guest).toBeUndefined();
    const none = app(undefined, []);
    await none.start("#/call/x");
    expect((none.state.get().view as { guest?: unknown }).guest).toBeUndefined();
  });
});
