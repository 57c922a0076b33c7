import { describe, expect, it, vi } from "vitest";
import type { ParleyClientError } from "../../../client/src/errors.ts";
import { announceArriving, grantAhead, joinCall, MAX_GRANT_DEVICES, signallingUrl, type CallGrant } from "../../../client/src/rtc/callApi.ts";
import "./fakes.ts";

const token = { access_token: "o", token_type: "Bearer", matrix_server_name: "a.example", expires_in: 3600 };

function answering(status: number, body: unknown) {
  const seen: { url?: string; body?: unknown } = {};
  const fetchFn = async (url: string, init?: RequestInit) => {
    seen.url = url;
    seen.body = JSON.parse(String(init?.body));
    return new Response(JSON.stringify(body), { status });
  };
  return { fetchFn, seen };
}

describe("joinCall", () => {
  it("posts the OpenID token and room and parses the grant", async () => {
    const { fetchFn, seen } = answering(200, {
      session: "sess", expires_at: 99, call_id: "c", room_id: "!r:x",
      ice_servers: [{ urls: ["stun:127.0.0.1:3478"] }, { urls: 5 }],
      signalling: "/_parley/v1/signal",
    });
    const grant = await joinCall("http://127.0.0.11:9000/", { openid_token: token, room: "#meet-x:a" }, fetchFn);
    expect(seen.url).toBe("http://127.0.0.11:9000/_parley/v1/calls/join");
    expect(seen.body).toEqual({ openid_token: token, room: "#meet-x:a" });
    expect(grant).toEqual({ session: "sess", expiresAt: 99, callId: "c", roomId: "!r:x", iceServers: [{ urls: ["stun:127.0.0.1:3478"] }], iceTransportPolicy: "all", signalling: "/_parley/v1/signal" });
  });

  it("takes the devices in the call from a grant asked ahead: well-formed ones, at most MAX_GRANT_DEVICES", async () => {
    const grant = (devices: unknown) =>
      joinCall("http://p", { openid_token: token, room: "!r:x" }, answering(200, { session: "s", room_id: "!r:x", signalling: "/s", devices }).fetchFn);
    expect((await grant([{ user_id: "@a:x", device_id: "A" }, { user_id: "a", device_id: "B" }, { user_id: "@c:x", device_id: "" }, { user_id: "@d:x" }, null, 7])).devices).toEqual([
      { userId: "@a:x", deviceId: "A" },
    ]);
    expect((await grant("many")).devices).toEqual([]);
    const many = Array.from({ length: MAX_GRANT_DEVICES + 5 }, (_, i) => ({ user_id: `@u${i}:x`, device_id: "D" }));
    expect((await grant(many)).devices).toHaveLength(MAX_GRANT_DEVICES);
    expect((await grant(undefined)).devices).toBeUndefined();
  });

  it("takes the relay-only policy from the grant; any other word means all candidates", async () => {
    const grant = (policy: unknown) =>
      joinCall("http://p", { openid_token: token, room: "!r:x" }, answering(200, { session: "s", room_id: "!r:x", signalling: "/s", ice_transport_policy: policy }).fetchFn);
    expect((await grant("relay")).iceTransportPolicy).toBe("relay");
    expect((await grant("bogus")).iceTransportPolicy).toBe("all");
    expect((await grant(undefined)).iceTransportPolicy).toBe("all");
  });

  it.each([
    [401, "M_MISSING_TOKEN", /didn't receive proof of who you are/],
    [401, "M_UNKNOWN_TOKEN", /couldn't confirm who you are/],
    [403, "M_FORBIDDEN", /not allowed to join this call/],
    [404, "M_NOT_FOUND", /no call for this room/],
    [503, "M_UNAVAILABLE", /isn't taking calls right now/],
    [404, "M_UNRECOGNIZED", /doesn't offer calls yet/],
  ])("%i %s has human text", async (status, errcode, text) => {
    const { fetchFn } = answering(status, { errcode, error: "server words" });
    const err = (await joinCall("http://p", { openid_token: token, room: "!r:x" }, fetchFn).catch((e: unknown) => e)) as ParleyClientError;
    expect(err.code).toBe(errcode);
    expect(err.status).toBe(status);
    expect(err.human).toMatch(text);
  });

  it("says when the meeting server can't be reached", async () => {
    const err = (await joinCall("http://p", { openid_token: token, room: "!r:x" }, async () => {
      throw new TypeError("fetch failed");
    }).catch((e: unknown) => e)) as ParleyClientError;
    expect(err.code).toBe("NETWORK");
    expect(err.human).toMatch(/Couldn't reach the meeting server/);
  });

  it("refuses a grant without a session", async () => {
    const { fetchFn } = answering(200, { signalling: "/x", room_id: "!r:x" });
    await expect(joinCall("http://p", { openid_token: token, room: "!r:x" }, fetchFn)).rejects.toMatchObject({ code: "BAD_RESPONSE" });
  });
});

describe("announceArriving", () => {
  it("posts the session and the device to the call API; a refusal or a network failure is false, never thrown", async () => {
    const { fetchFn, seen } = answering(200, {});
    expect(await announceArriving("http://127.0.0.11:9000/", "sess", "DEV", fetchFn)).toBe(true);
    expect(seen).toEqual({ url: "http://127.0.0.11:9000/_parley/v1/calls/arriving", body: { session: "sess", device_id: "DEV" } });
    expect(await announceArriving("http://p", "sess", "DEV", answering(403, { errcode: "M_FORBIDDEN" }).fetchFn)).toBe(false);
    expect(await announceArriving("http://p", "sess", "DEV", async () => Promise.reject(new TypeError("fetch failed")))).toBe(false);
  });
});

describe("signallingUrl", () => {
  it("switches the scheme to ws(s)", () => {
    expect(signallingUrl("https://parley.example/base/", "/_parley/v1/signal")).toBe("wss://parley.example/_parley/v1/signal");
    expect(signallingUrl("http://127.0.0.11:9000", "/_parley/v1/signal")).toBe("ws://127.0.0.11:9000/_parley/v1/signal");
  });
});

describe("grantAhead", () => {
  const grant = (expiresAt: number): CallGrant => ({ session: "s", expiresAt, callId: "c", roomId: "!r:x", iceServers: [], iceTransportPolicy: "all", signalling: "/s" });

  it("is peeked at without being taken: the next take still has it", async () => {
    const now = 1000;
    const g = grantAhead(async () => grant(now + 600_000), () => now);
    expect(await g.peek()).toBeNull(); // never warmed
    g.warm();
    expect(await g.peek()).toMatchObject({ session: "s" });
    expect(await g.take()).toMatchObject({ session: "s" });
    expect(await g.peek()).toBeNull();
  });

  it("asks once however often it is warmed, and is taken once", async () => {
    const now = 1000;
    const ask = vi.fn(async () => grant(now + 600_000));
    const g = grantAhead(ask, () => now);
    g.warm();
    g.warm();
    expect(ask).toHaveBeenCalledTimes(1);
    expect(await g.take()).toMatchObject({ session: "s" });
    expect(await g.take()).toBeNull();
    g.warm();
    expect(ask).toHaveBeenCalledTimes(2);
  });

  it("is not used past half its lifetime, nor when the ask failed, nor when never warmed", async () => {
    let now = 1000;
    const g = grantAhead(async () => grant(now + 600_000), () => now);
    g.warm();
    now += 300_000;
    expect(await g.take()).toBeNull();
    g.warm();
    now += 299_999;
    expect(await g.take()).not.toBeNull();
    const failing = grantAhead(async () => Promise.reject(new Error("M_FORBIDDEN: locked")), () => now);
    failing.warm();
    expect(await failing.take()).toBeNull();
    expect(await grantAhead(async () => grant(now + 600_000)).take()).toBeNull();
  });

  it("a failed ask is asked again by the next warm (an invitee's grant refused before its invite reached the server)", async () => {
    let refuse = true;
    const ask = vi.fn(async () => (refuse ? Promise.reject(new Error("M_FORBIDDEN: not joined")) : grant(600_000)));
    const g = grantAhead(ask, () => 0);
    g.warm();
    g.warm(); // still on its way: not asked twice
    expect(ask).toHaveBeenCalledTimes(1);
    await new Promise((r) => setTimeout(r, 0));
    refuse = false;
    g.warm();
    expect(ask).toHaveBeenCalledTimes(2);
    expect(await g.take()).toMatchObject({ session: "s" });
  });

  it("still on its way when taken, is waited for", async () => {
    let answer!: (g: CallGrant) => void;
    const g = grantAhead(() => new Promise<CallGrant>((r) => (answer = r)), () => 0);
    g.warm();
    const taken = g.take();
    answer(grant(600_000));
    expect(await taken).toMatchObject({ session: "s" });
  });

  it("taken without a pause once its answer is in (as take would give it); still on its way, left for take", async () => {
    let now = 0;
    let answer!: (g: CallGrant) => void;
    const g = grantAhead(() => new Promise<CallGrant>((r) => (answer = r)), () => now);
    expect(g.takeNow()).toBeNull(); // never warmed
    g.warm();
    expect(g.takeNow()).toBeUndefined(); // on its way: not taken
    answer(grant(600_000));
    await new Promise((r) => setTimeout(r, 0));
    expect(g.takeNow()).toMatchObject({ session: "s" });
    expect(g.takeNow()).toBeNull(); // taken once
    expect(await g.take()).toBeNull();
    // Too old, or refused: null, as take gives.
    g.warm();
    answer(grant(600_000));
    await new Promise((r) => setTimeout(r, 0));
    now = 300_000;
    expect(g.takeNow()).toBeNull();
    const failing = grantAhead(async () => Promise.reject(new Error("M_FORBIDDEN: locked")), () => 0);
    failing.warm();
    await new Promise((r) => setTimeout(r, 0));
    expect(failing.takeNow()).toBeNull();
  });
});
