import { describe, expect, it, vi } from "vitest";
import { ParleyClientError } from "../../../client/src/errors.ts";
import { normalizeHomeserverUrl } from "../../../client/src/matrix/login.ts";
import { expectedUserId, LoginModel, serverToDiscover, type LoginPort } from "../../../client/src/state/loginModel.ts";
import "./fakes.ts";

function port(over: Partial<LoginPort> = {}): LoginPort {
  return {
    normalize: normalizeHomeserverUrl,
    flows: async () => ({ password: true, sso: null }),
    password: async (hs, user) => ({ homeserverUrl: hs, userId: `@${user}:hs`, deviceId: "D", accessToken: "t" }),
    startSso: () => undefined,
    discover: async (s) => Promise.reject(new ParleyClientError("NO_HOMESERVER", "login", { detail: `unexpected discovery of ${s}` })),
    ...over,
  };
}

const HERE = { homeserver: "http://hs", serverName: "hs", meeting: null };

describe("LoginModel", () => {
  it("loads the flows of the default homeserver", async () => {
    const m = new LoginModel(port({ flows: async () => ({ password: true, sso: [{ id: "x", name: "X" }] }) }), HERE, () => undefined);
    await m.setHomeserver("http://hs");
    expect(m.state.get().flows).toEqual({ password: true, sso: [{ id: "x", name: "X" }] });
  });

  it("signs in and hands over the session", async () => {
    const done = vi.fn();
    const m = new LoginModel(port(), HERE, done);
    await m.signInWithPassword("alice", "pw");
    expect(done).toHaveBeenCalledWith({ homeserverUrl: "http://hs", userId: "@alice:hs", deviceId: "D", accessToken: "t" });
  });

  it("shows a wrong password in words", async () => {
    const m = new LoginModel(port({ password: async () => Promise.reject(new ParleyClientError("M_FORBIDDEN", "login")) }), HERE, () => undefined);
    await m.signInWithPassword("alice", "nope");
    expect(m.state.get()).toMatchObject({ busy: false, error: "Wrong user name or password." });
  });

  it("finds another server's homeserver from a full Matrix id, and shows it in the form", async () => {
    const password = vi.fn(port().password);
    const flows = vi.fn(port().flows);
    const m = new LoginModel(port({ password, flows, discover: async (s) => (s === "b.example" ? "https://matrix.b.example" : "") }), HERE, () => undefined);
    await m.signInWithPassword("@bob:b.example", "pw");
    expect(password).toHaveBeenCalledWith("https://matrix.b.example", "@bob:b.example", "pw");
    expect(flows).toHaveBeenCalledWith("https://matrix.b.example");
    expect(m.state.get().homeserver).toBe("https://matrix.b.example");
  });

  it("says so when discovery fails, in words that name the server, and sends no password", async () => {
    const password = vi.fn(port().password);
    const human = "Couldn't find the homeserver of b.example: its /.well-known/matrix/client couldn't be reached or read. Check the part of your Matrix ID after the colon.";
    const m = new LoginModel(port({ password, discover: async () => Promise.reject(new ParleyClientError("NO_HOMESERVER", "login", { human })) }), HERE, () => undefined);
    await m.signInWithPassword("@bob:b.example", "pw");
    expect(password).not.toHaveBeenCalled();
    expect(m.state.get()).toMatchObject({ busy: false, error: human, homeserver: "http://hs" });
  });

  it("points to single sign-on when the discovered homeserver takes no passwords", async () => {
    const password = vi.fn(port().password);
    const flows = async (hs: string) => (hs === "https://matrix.b.example" ? { password: false, sso: [] } : { password: true, sso: null });
    const m = new LoginModel(port({ password, flows, discover: async () => "https://matrix.b.example" }), HERE, () => undefined);
    await m.signInWithPassword("@bob:b.example", "pw");
    expect(password).not.toHaveBeenCalled();
    expect(m.state.get().error).toBe("b.example doesn't take passwords here: sign in with single sign-on below.");
  });

  it("signs in at the address the user typed, without discovery", async () => {
    const password = vi.fn(port().password);
    const m = new LoginModel(port({ password }), HERE, () => undefined);
    await m.chooseHomeserver("https://matrix.b.example");
    await m.signInWithPassword("@bob:b.example", "pw");
    expect(password).toHaveBeenCalledWith("https://matrix.b.example", "@bob:b.example", "pw");
  });

  it("carries the meeting the sign-in leads to", () => {
    const meeting = { target: "#meet-team:a.example", hostedBy: "a.example" };
    expect(new LoginModel(port(), { ...HERE, meeting }, () => undefined).state.get().meeting).toEqual(meeting);
  });

  it("offers SSO only where the homeserver has it", async () => {
    const startSso = vi.fn();
    const m = new LoginModel(port({ startSso }), HERE, () => undefined);
    await m.setHomeserver("http://hs");
    m.signInWithSso();
    expect(startSso).not.toHaveBeenCalled();
    expect(m.state.get().error).toBe("This homeserver doesn't offer single sign-on.");
  });

  it("says when an address isn't a homeserver", async () => {
    const m = new LoginModel(port({ flows: async () => Promise.reject(new ParleyClientError("NETWORK", "login")) }), HERE, () => undefined);
    await m.setHomeserver("http://nothing-here");
    expect(m.state.get().error).toBe("Couldn't reach the homeserver. Check its address and your connection.");
  });
});

describe("serverToDiscover", () => {
  const ctx = { serverName: "a.example", homeserverChosen: false };
  it("keeps bare user names and this Parley's own ids on the configured homeserver", () => {
    expect(serverToDiscover("alice", ctx)).toBeNull();
    expect(serverToDiscover(" @alice:A.example ", ctx)).toBeNull();
    expect(serverToDiscover("@alice", ctx)).toBeNull();
  });
  it("discovers the homeserver of another server's full Matrix id", () => {
    expect(serverToDiscover("@bob:b.example", ctx)).toBe("b.example");
    expect(serverToDiscover("@bob:127.0.0.12:8448", ctx)).toBe("127.0.0.12:8448");
  });
  it("does not when the user typed the homeserver's address", () => {
    expect(serverToDiscover("@bob:b.example", { ...ctx, homeserverChosen: true })).toBeNull();
  });
});

describe("expectedUserId (the user a sign-in will have, known before /login answers)", () => {
  const ctx = { serverName: "a.example:8448", homeserverChosen: false };
  it("is a bare name's or this server's id, its user name lower-cased as homeservers register them", () => {
    expect(expectedUserId(" alice ", ctx)).toBe("@alice:a.example:8448");
    expect(expectedUserId("Alice", ctx)).toBe("@alice:a.example:8448");
    expect(expectedUserId("@Alice.B=c-d/e+f_1:A.example:8448", ctx)).toBe("@alice.b=c-d/e+f_1:a.example:8448");
  });
  it("is none for another server's id (found by discovery), an address the user typed, or what is no user name", () => {
    expect(expectedUserId("@bob:b.example", ctx)).toBeNull();
    expect(expectedUserId("alice", { ...ctx, homeserverChosen: true })).toBeNull();
    expect(expectedUserId("@alice", ctx)).toBeNull();
    expect(expectedUserId("alice@example.org", ctx)).toBeNull();
    expect(expectedUserId("al ice", ctx)).toBeNull();
    expect(expectedUserId("", ctx)).toBeNull();
  });
  it("is what the model tells the port, with the homeserver in the form, while the password is typed", async () => {
    const expect_ = vi.fn();
    const m = new LoginModel(port({ expect: expect_ }), HERE, () => undefined);
    m.expectUser("alice");
    m.expectUser("@bob:elsewhere");
    expect(expect_.mock.calls).toEqual([["http://hs", "@alice:hs"]]);
    await m.chooseHomeserver("http://other");
    m.expectUser("alice");
    expect(expect_).toHaveBeenCalledTimes(1);
  });
});
