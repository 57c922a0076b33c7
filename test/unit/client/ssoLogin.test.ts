// An SSO return (?loginToken=) is exchanged only for a sign-in this browser tab started: the nonce
// kept in sessionStorage before the redirect must come back in the URL.
import { describe, expect, it, vi } from "vitest";
import { finishSso, newSsoNonce, SSO_NONCE_PARAM, ssoReturnUrl } from "../../../client/src/matrix/login.ts";
import { SessionStore } from "../../../client/src/matrix/session.ts";
import "./fakes.ts";

const SESSION = { homeserverUrl: "https://hs.example", userId: "@a:hs.example", deviceId: "D", accessToken: "t" };

function memory() {
  const mem = new Map<string, string>();
  return { getItem: (k: string) => mem.get(k) ?? null, setItem: (k: string, v: string) => void mem.set(k, v), removeItem: (k: string) => void mem.delete(k) };
}

describe("SSO return", () => {
  it("exchanges the token of a sign-in this tab started, on the homeserver it started with", async () => {
    const store = new SessionStore(memory(), memory());
    const nonce = newSsoNonce();
    expect(nonce).toMatch(/^[0-9a-f]{32}$/);
    store.savePendingSso({ homeserverUrl: "https://hs.example", returnHash: "#/call/x", nonce });
    const back = new URL(ssoReturnUrl("https://meet.example/?old=1#/call/x", nonce));
    expect(back.searchParams.get(SSO_NONCE_PARAM)).toBe(nonce);
    expect(back.searchParams.has("old")).toBe(false);
    back.searchParams.set("loginToken", "LT");
    const exchange = vi.fn(async () => SESSION);
    await expect(finishSso(back.search, store.takePendingSso(), exchange)).resolves.toEqual({ session: SESSION, returnHash: "#/call/x" });
    expect(exchange).toHaveBeenCalledWith("https://hs.example", "LT");
  });

  it("refuses a loginToken this tab did not ask for: no pending sign-in, or another nonce", async () => {
    const exchange = vi.fn(async () => SESSION);
    // A link someone sent: their own loginToken would sign the victim in as them.
    await expect(finishSso("?loginToken=ATTACKER", null, exchange)).rejects.toMatchObject({ code: "M_FORBIDDEN" });
    const pending = { homeserverUrl: "https://hs.example", returnHash: "", nonce: "n-mine" };
    await expect(finishSso(`?loginToken=ATTACKER&${SSO_NONCE_PARAM}=n-theirs`, pending, exchange)).rejects.toMatchObject({ code: "M_FORBIDDEN" });
    await expect(finishSso("?loginToken=ATTACKER", pending, exchange)).rejects.toMatchObject({ human: expect.stringContaining("didn't start in this browser") });
    expect(exchange).not.toHaveBeenCalled();
  });

  it("a pending sign-in is used once, and one without a nonce (an older client's) counts as none", async () => {
    const transient = memory();
    const store = new SessionStore(memory(), transient);
    store.savePendingSso({ homeserverUrl: "https://hs.example", returnHash: "", nonce: "n1" });
    expect(store.takePendingSso()?.nonce).toBe("n1");
    expect(store.takePendingSso()).toBeNull();
    transient.setItem("parley.sso.pending.v1", JSON.stringify({ homeserverUrl: "https://hs.example", returnHash: "" }));
    expect(store.takePendingSso()).toBeNull();
  });

  it("is no SSO return without a loginToken", async () => {
    await expect(finishSso("?x=1", null, vi.fn())).resolves.toBeNull();
  });
});
