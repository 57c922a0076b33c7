import { describe, expect, it, vi } from "vitest";
import { ParleyClientError } from "../../../client/src/errors.ts";
import { normalizeHomeserverUrl } from "../../../client/src/matrix/login.ts";
import { LoginModel, type LoginPort } from "../../../client/src/state/loginModel.ts";
import "./fakes.ts";

function port(over: Partial<LoginPort> = {}): LoginPort {
  return {
    normalize: normalizeHomeserverUrl,
    flows: async () => ({ password: true, sso: null }),
    password: async (hs, user) => ({ homeserverUrl: hs, userId: `@${user}:hs`, deviceId: "D", accessToken: "t" }),
    startSso: () => undefined,
    discover: async () => null,
    ...over,
  };
}

describe("LoginModel", () => {
  it("loads the flows of the default homeserver", async () => {
    const m = new LoginModel(port({ flows: async () => ({ password: true, sso: [{ id: "x", name: "X" }] }) }), "http://hs", () => undefined);
    await m.setHomeserver("http://hs");
    expect(m.state.get().flows).toEqual({ password: true, sso: [{ id: "x", name: "X" }] });
  });

  it("signs in and hands over the session", async () => {
    const done = vi.fn();
    const m = new LoginModel(port(), "http://hs", done);
    await m.signInWithPassword("alice", "pw");
    expect(done).toHaveBeenCalledWith({ homeserverUrl: "http://hs", userId: "@alice:hs", deviceId: "D", accessToken: "t" });
  });

  it("shows a wrong password in words", async () => {
    const m = new LoginModel(port({ password: async () => Promise.reject(new ParleyClientError("M_FORBIDDEN", "login")) }), "http://hs", () => undefined);
    await m.signInWithPassword("alice", "nope");
    expect(m.state.get()).toMatchObject({ busy: false, error: "Wrong user name or password." });
  });

  it("finds another server's homeserver from a full Matrix id", async () => {
    const password = vi.fn(port().password);
    const m = new LoginModel(port({ password, discover: async (s) => (s === "b.example" ? "https://matrix.b.example" : null) }), "http://hs", () => undefined);
    await m.signInWithPassword("@bob:b.example", "pw");
    expect(password).toHaveBeenCalledWith("https://matrix.b.example", "@bob:b.example", "pw");
  });

  it("offers SSO only where the homeserver has it", async () => {
    const startSso = vi.fn();
    const m = new LoginModel(port({ startSso }), "http://hs", () => undefined);
    await m.setHomeserver("http://hs");
    m.signInWithSso();
    expect(startSso).not.toHaveBeenCalled();
    expect(m.state.get().error).toBe("This homeserver doesn't offer single sign-on.");
  });

  it("says when an address isn't a homeserver", async () => {
    const m = new LoginModel(port({ flows: async () => Promise.reject(new ParleyClientError("NETWORK", "login")) }), "http://hs", () => undefined);
    await m.setHomeserver("http://nothing-here");
    expect(m.state.get().error).toBe("Couldn't reach the homeserver. Check its address and your connection.");
  });
});
