import { describe, expect, it, vi } from "vitest";
import { ParleyClientError } from "../../../client/src/errors.ts";
import { MatrixHttp, RATE_LIMIT_MAX_WAIT_MS, RATE_LIMIT_RETRIES } from "../../../client/src/matrix/http.ts";
import { getLoginFlows, normalizeHomeserverUrl, passwordLogin, ssoRedirectUrl } from "../../../client/src/matrix/login.ts";
import { parseMxc } from "../../../client/src/matrix/media.ts";
import { decideCallHost, type CallAnnouncement } from "../../../client/src/matrix/callTrust.ts";
import { JOIN_RACE_RETRIES, joinRoom, meetingHost, meetingTarget, roomSummary } from "../../../client/src/matrix/rooms.ts";
import { parseSession, SessionStore } from "../../../client/src/matrix/session.ts";
import { membersFromState, toChatMessage } from "../../../client/src/matrix/timeline.ts";
import { parseWidgetParams } from "../../../client/src/matrix/widget.ts";
import "./fakes.ts";

const settings = { serverName: "a.example", aliasPrefix: "meet-" };

function fetchReturning(status: number, body: unknown, seen: { url?: string; init?: RequestInit } = {}) {
  return async (url: string, init?: RequestInit) => {
    seen.url = url;
    seen.init = init;
    return new Response(typeof body === "string" ? body : JSON.stringify(body), { status });
  };
}

describe("meetingTarget", () => {
  it("turns a name into the meeting alias", () => {
    expect(meetingTarget("Team Sync!", settings)).toBe("#meet-team-sync:a.example");
  });
  it("passes aliases and room ids through", () => {
    expect(meetingTarget(" #meet-x:b.example ", settings)).toBe("#meet-x:b.example");
    expect(meetingTarget("!abc:b.example", settings)).toBe("!abc:b.example");
  });
  it("unwraps Parley and matrix.to links", () => {
    expect(meetingTarget("http://127.0.0.1:1/#/call/%23meet-demo%3Aa.example", settings)).toBe("#meet-demo:a.example");
    expect(meetingTarget("https://matrix.to/#/%23room%3Ab.example", settings)).toBe("#room:b.example");
  });
  it("refuses what can't be a meeting, in words", () => {
    expect(() => meetingTarget("   ", settings)).toThrow(ParleyClientError);
    const err = (() => {
      try {
        meetingTarget("#nocolon", settings);
      } catch (e) {
        return e as ParleyClientError;
      }
    })();
    expect(err?.human).toBe("That isn't a valid meeting name, alias or room id.");
  });
});

describe("room summary", () => {
  const trust = { decide: (call: CallAnnouncement | null) => decideCallHost(call, { origin: "http://127.0.0.1:5", settings: { servers: ["b.example"], botLocalparts: ["parley"], insecureLoopback: false }, confirmed: () => false }) };

  const STATE = [
    { type: "m.room.name", state_key: "", content: { name: "Demo" } },
    { type: "org.parley.call", state_key: "", sender: "@parley:b.example", content: { version: 1, api: "https://parley.b.example/" } },
    { type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } },
    { type: "m.room.member", state_key: "@me:x", sender: "@me:x", content: { membership: "join", displayname: "Me" } },
    { type: "m.room.member", state_key: "@other:x", sender: "@other:x", content: { membership: "join" } },
  ];

  /** A homeserver answering single state events (whole with format=event unless `contentOnly`), and the whole state. */
  function stateServer(events: typeof STATE, opts: { contentOnly?: boolean } = {}) {
    const asked: string[] = [];
    const fetch = async (url: string) => {
      const u = new URL(url);
      asked.push(decodeURIComponent(u.pathname.replace(/^.*\/rooms\/[^/]+/, "")) + (u.search ? "?" + u.searchParams.toString() : ""));
      const single = /\/state\/([^/]+)\/([^/]*)$/.exec(u.pathname);
      if (!single) return new Response(JSON.stringify(events), { status: 200 });
      const [type, key] = [decodeURIComponent(single[1]!), decodeURIComponent(single[2]!)];
      const ev = events.find((e) => e.type === type && e.state_key === key);
      if (!ev) return new Response(JSON.stringify({ errcode: "M_NOT_FOUND", error: "Event not found." }), { status: 404 });
      return new Response(JSON.stringify(u.searchParams.get("format") === "event" && !opts.contentOnly ? ev : ev.content), { status: 200 });
    };
    return { http: new MatrixHttp("http://hs", "tok", fetch), asked };
  }

  it("reads the name, the org.parley.call api with its sender, encryption and the user's name from a few state events, not the whole state", async () => {
    const { http, asked } = stateServer(STATE);
    const s = await roomSummary(http, "!r:x", "#meet-demo:x", trust, "@me:x");
    expect(asked.sort()).toEqual([
      "/state/m.room.canonical_alias/?format=event",
      "/state/m.room.encryption/?format=event",
      "/state/m.room.member/@me:x?format=event",
      "/state/m.room.name/?format=event",
      "/state/org.parley.call/?format=event",
    ]);
    expect(s).toMatchObject({ selfName: "Me" });
    const fallback = stateServer(STATE, { contentOnly: true });
    expect(await roomSummary(fallback.http, "!r:x", "#meet-demo:x", trust, "@me:x")).toEqual(s); // the whole state instead
    expect(fallback.asked).toContain("/state");
  });

  it("reads the name, the org.parley.call api with its sender, and encryption from state", async () => {
    const { http } = stateServer(STATE.slice(0, 3));
    const s = await roomSummary(http, "!r:x", "#meet-demo:x", trust);
    expect(s).toEqual({
      roomId: "!r:x",
      name: "Demo",
      call: { api: "https://parley.b.example/", sender: "@parley:b.example" },
      host: { trust: "bot", api: "https://parley.b.example", origin: "https://parley.b.example", host: "parley.b.example" },
      encrypted: true,
      hostedBy: "x",
      // The whole content, for the call's key mode before the room's sync is up.
      callContent: { api: "https://parley.b.example/", version: 1 },
    });
  });

  it("names the institution hosting the meeting: its alias's server, else its call's announcer's, else its id's", () => {
    const call = { api: "https://parley.b.example", sender: "@parley:b.example" };
    expect(meetingHost("#meet-team:a.example", null, call, "!r:c.example")).toBe("a.example");
    expect(meetingHost("!r:c.example", "#team:d.example:8448", call, "!r:c.example")).toBe("d.example:8448");
    expect(meetingHost("!r:c.example", null, call, "!r:c.example")).toBe("b.example");
    expect(meetingHost("!r:c.example", null, null, "!r:c.example")).toBe("c.example");
    expect(meetingHost("!opaque", null, null, "!opaque")).toBeNull();
  });

  it("without org.parley.call the call is the serving Parley's", async () => {
    const s = await roomSummary(stateServer([]).http, "!r:x", "#meet-demo:x", trust);
    expect(s.host).toEqual({ trust: "origin", api: "http://127.0.0.1:5", origin: "http://127.0.0.1:5", host: "127.0.0.1:5" });
  });
});

describe("MatrixHttp errors", () => {
  it("turns a Matrix error into a typed error with human text for the context", async () => {
    const http = new MatrixHttp("http://hs", undefined, fetchReturning(403, { errcode: "M_FORBIDDEN", error: "Invalid password" }));
    const err = (await passwordLogin(http, "alice", "pw").catch((e: unknown) => e)) as ParleyClientError;
    expect(err.code).toBe("M_FORBIDDEN");
    expect(err.human).toBe("Wrong user name or password.");
    expect(err.detail).toContain("Invalid password");
  });
  it("says a network failure is one", async () => {
    const http = new MatrixHttp("http://hs", undefined, async () => {
      throw new TypeError("Failed to fetch");
    });
    const err = (await getLoginFlows(http).catch((e: unknown) => e)) as ParleyClientError;
    expect(err.code).toBe("NETWORK");
    expect(err.human).toMatch(/Couldn't reach the homeserver/);
  });
  it("treats a 404 without errcode as 'not a homeserver'", async () => {
    const http = new MatrixHttp("http://hs", undefined, fetchReturning(404, "<html>nope</html>"));
    const err = (await getLoginFlows(http).catch((e: unknown) => e)) as ParleyClientError;
    expect(err.human).toBe("That address doesn't look like a Matrix homeserver.");
  });
});

describe("MatrixHttp and 429", () => {
  /** Answers each request with the next of `answers` (the last one repeats), counting the requests. */
  const answering = (answers: { status: number; body: unknown; headers?: Record<string, string> }[]) => {
    const at: number[] = [];
    const fetchFn = async () => {
      const a = answers[Math.min(at.length, answers.length - 1)]!;
      at.push(Date.now());
      return new Response(JSON.stringify(a.body), { status: a.status, headers: { "content-type": "application/json", ...a.headers } });
    };
    return { fetchFn, at };
  };
  const limited = { status: 429, body: { errcode: "M_LIMIT_EXCEEDED", error: "at most 8 requests at once" } };

  it(`asks again after a refusal (the wait it names, else 100 ms doubling), at most ${RATE_LIMIT_RETRIES} times`, async () => {
    vi.useFakeTimers();
    try {
      const ok = answering([limited, { status: 429, body: { errcode: "M_LIMIT_EXCEEDED", retry_after_ms: 700 } }, { status: 200, body: { done: true } }]);
      const got = new MatrixHttp("http://hs", "t", ok.fetchFn).request("GET", "/x");
      await vi.advanceTimersByTimeAsync(100 + 700);
      expect(await got).toEqual({ done: true });
      expect(ok.at.map((t) => t - ok.at[0]!)).toEqual([0, 100, 800]);

      const never = answering([{ ...limited, headers: { "retry-after": "60" } }]);
      const refused = new MatrixHttp("http://hs", "t", never.fetchFn).request("GET", "/x").catch((e: unknown) => e);
      await vi.advanceTimersByTimeAsync(RATE_LIMIT_RETRIES * RATE_LIMIT_MAX_WAIT_MS);
      expect(await refused).toMatchObject({ code: "M_LIMIT_EXCEEDED" });
      expect(never.at).toHaveLength(1 + RATE_LIMIT_RETRIES);
      // A minute named by Retry-After is cut to the longest wait.
      expect(never.at[1]! - never.at[0]!).toBe(RATE_LIMIT_MAX_WAIT_MS);
    } finally {
      vi.useRealTimers();
    }
  });

  it("does not ask again after any other refusal", async () => {
    const forbidden = answering([{ status: 403, body: { errcode: "M_FORBIDDEN" } }]);
    await expect(new MatrixHttp("http://hs", "t", forbidden.fetchFn).request("GET", "/x")).rejects.toMatchObject({ code: "M_FORBIDDEN" });
    expect(forbidden.at).toHaveLength(1);
  });
});

describe("joining a meeting room", () => {
  const failing = (status: number, body: unknown) => new MatrixHttp("http://hs", "tok", fetchReturning(status, body));
  const joinError = (http: MatrixHttp, target: string) => joinRoom(http, target, "b.example").then(() => null, (e: unknown) => e as ParleyClientError);

  it("names the meeting's server when the user's homeserver could not reach it (Synapse: 502 M_UNKNOWN)", async () => {
    const err = await joinError(failing(502, { errcode: "M_UNKNOWN", error: "Failed to fetch alias" }), "#meet-team:a.example");
    expect(err?.code).toBe("UNREACHABLE");
    expect(err?.human).toBe("a.example could not be reached, so the meeting can't be opened. Try again later; if it keeps happening, your homeserver may not be allowed to talk to a.example.");
    expect((await joinError(failing(504, { errcode: "M_UNKNOWN", error: "timed out" }), "!room:a.example:8448"))?.human).toMatch(/^a\.example:8448 could not be reached/);
  });

  it("tries a join again when Synapse refuses it in its knock-invite race (duplicate auth_events), a few times only", async () => {
    const race = { errcode: "M_FORBIDDEN", error: "Event $x has duplicate auth_events for ('m.room.member', '@bob:b.example'): $a and $b" };
    const answers = [race, race, { room_id: "!r:a.example" }];
    expect(JOIN_RACE_RETRIES).toBe(6);
    const waits: number[] = [];
    const http = new MatrixHttp("http://hs", "tok", async () => {
      const body = answers.shift()!;
      return new Response(JSON.stringify(body), { status: "room_id" in body ? 200 : 403, headers: { "content-type": "application/json" } });
    });
    expect(await joinRoom(http, "!r:a.example", "b.example", async (ms) => void waits.push(ms))).toBe("!r:a.example");
    expect(waits).toEqual([25, 50]);
    const always = new MatrixHttp("http://hs", "tok", async () => new Response(JSON.stringify(race), { status: 403 }));
    await expect(joinRoom(always, "!r:a.example", "b.example", async () => undefined)).rejects.toMatchObject({ code: "M_FORBIDDEN" });
    // Any other refusal is not tried again.
    let calls = 0;
    const refused = new MatrixHttp("http://hs", "tok", async () => (calls++, new Response(JSON.stringify({ errcode: "M_FORBIDDEN", error: "You are not invited" }), { status: 403 })));
    await expect(joinRoom(refused, "!r:a.example", "b.example", async () => undefined)).rejects.toMatchObject({ code: "M_FORBIDDEN" });
    expect(calls).toBe(1);
  });

  it("keeps the homeserver's own failures as they are", async () => {
    // A proxy's 502 page in front of the user's own homeserver.
    expect((await joinError(failing(502, "<html>Bad Gateway</html>"), "#meet-team:a.example"))?.human).toBe("The server is busy or down for maintenance. Try again in a minute.");
    // The user's own server: nothing remote to name.
    expect((await joinError(failing(502, { errcode: "M_UNKNOWN" }), "#meet-team:b.example"))?.code).toBe("M_UNKNOWN");
    expect((await joinError(failing(404, { errcode: "M_NOT_FOUND" }), "#meet-team:a.example"))?.human).toBe("There is no meeting with that name or address.");
  });
});

describe("login", () => {
  it("reads password and SSO flows with identity providers", async () => {
    const http = new MatrixHttp("http://hs", undefined, fetchReturning(200, {
      flows: [{ type: "m.login.password" }, { type: "m.login.sso", identity_providers: [{ id: "oidc-x", name: "Institution X" }] }, { type: "m.login.token" }],
    }));
    expect(await getLoginFlows(http)).toEqual({ password: true, sso: [{ id: "oidc-x", name: "Institution X" }] });
  });
  it("sends the password login and keeps the device id", async () => {
    const seen: { url?: string; init?: RequestInit } = {};
    const http = new MatrixHttp("http://hs", undefined, fetchReturning(200, { user_id: "@alice:hs", access_token: "t", device_id: "D" }, seen));
    const s = await passwordLogin(http, "alice", "pw");
    expect(s).toEqual({ homeserverUrl: "http://hs", userId: "@alice:hs", accessToken: "t", deviceId: "D" });
    expect(JSON.parse(String(seen.init?.body))).toMatchObject({ type: "m.login.password", identifier: { type: "m.id.user", user: "alice" } });
    expect(JSON.parse(String(seen.init?.body))).not.toHaveProperty("device_id");
    expect((seen.init?.headers as Record<string, string>).authorization).toBeUndefined();
  });
  it("asks for the device made ready before the sign-in, and keeps the one the homeserver made", async () => {
    const seen: { url?: string; init?: RequestInit } = {};
    const http = new MatrixHttp("http://hs", undefined, fetchReturning(200, { user_id: "@alice:hs", access_token: "t", device_id: "OTHERDEVIC" }, seen));
    const s = await passwordLogin(http, "alice", "pw", "ABCDEFGHIJ");
    expect(JSON.parse(String(seen.init?.body))).toMatchObject({ device_id: "ABCDEFGHIJ" });
    expect(s.deviceId).toBe("OTHERDEVIC");
  });
  it("builds the SSO redirect", () => {
    expect(ssoRedirectUrl(new MatrixHttp("https://hs.example"), "https://parley.example/", "oidc-x")).toBe(
      "https://hs.example/_matrix/client/v3/login/sso/redirect/oidc-x?redirectUrl=https%3A%2F%2Fparley.example%2F",
    );
  });
  it("normalizes homeserver addresses", () => {
    expect(normalizeHomeserverUrl("matrix.example.org/")).toBe("https://matrix.example.org");
    expect(normalizeHomeserverUrl("http://127.0.0.11:8008")).toBe("http://127.0.0.11:8008");
  });
});

describe("session storage", () => {
  it("round-trips a session and rejects junk", () => {
    const mem = new Map<string, string>();
    const storage = { getItem: (k: string) => mem.get(k) ?? null, setItem: (k: string, v: string) => void mem.set(k, v), removeItem: (k: string) => void mem.delete(k) };
    const store = new SessionStore(storage);
    expect(store.load()).toBeNull();
    const s = { homeserverUrl: "http://hs", userId: "@a:hs", deviceId: "D", accessToken: "t" };
    store.save(s);
    expect(store.load()).toEqual(s);
    mem.set("parley.session.v1", "{bad");
    expect(store.load()).toBeNull();
    expect(parseSession({ ...s, userId: "alice" })).toBeNull();
    store.savePendingSso({ homeserverUrl: "http://hs", returnHash: "#/call/x", nonce: "n1" });
    expect(store.takePendingSso()).toEqual({ homeserverUrl: "http://hs", returnHash: "#/call/x", nonce: "n1" });
    expect(store.takePendingSso()).toBeNull();
  });
});

describe("timeline events", () => {
  it("shows messages and encrypted placeholders, skips edits and state", () => {
    expect(toChatMessage({ event_id: "$1", sender: "@a:x", type: "m.room.message", origin_server_ts: 5, content: { msgtype: "m.text", body: "hi" }, unsigned: { transaction_id: "t1" } })).toEqual({
      id: "$1", sender: "@a:x", ts: 5, body: "hi", kind: "text", txnId: "t1",
    });
    expect(toChatMessage({ event_id: "$2", sender: "@a:x", type: "m.room.encrypted", content: {} })?.kind).toBe("encrypted");
    expect(toChatMessage({ event_id: "$3", sender: "@a:x", type: "m.room.message", content: { msgtype: "m.text", body: "* x", "m.relates_to": { rel_type: "m.replace" } } })).toBeNull();
    expect(toChatMessage({ event_id: "$4", sender: "@a:x", type: "m.room.member", content: {} })).toBeNull();
  });
  it("reads joined members with names and mxc avatars", () => {
    const m = membersFromState([
      { type: "m.room.member", state_key: "@a:x", content: { membership: "join", displayname: "Alice", avatar_url: "mxc://x/abc" } },
      { type: "m.room.member", state_key: "@b:x", content: { membership: "leave", displayname: "Bob" } },
      { type: "m.room.member", state_key: "@c:x", content: { membership: "join", avatar_url: "https://evil.example/a.png" } },
    ] as never);
    expect([...m.values()]).toEqual([
      { userId: "@a:x", displayName: "Alice", avatarMxc: "mxc://x/abc" },
      { userId: "@c:x", displayName: "@c:x", avatarMxc: null },
    ]);
    expect(parseMxc("mxc://x/abc")).toEqual({ server: "x", mediaId: "abc" });
    expect(parseMxc("https://x/abc")).toBeNull();
  });
});

describe("widget parameters", () => {
  it("reads the bot's widget URL plus what Element appends", () => {
    const p = parseWidgetParams("?roomId=%21r%3Ax&userId=%40a%3Ax&callId=c1&widgetId=parley-c1&parentUrl=https%3A%2F%2Felement.example%2F%23%2Froom", () => "DEV");
    expect(p).toEqual({ widgetId: "parley-c1", parentOrigin: "https://element.example", roomId: "!r:x", userId: "@a:x", deviceId: "DEV", hostDevice: false, callId: "c1" });
  });
  it("takes the client's device id when it filled the template in, not when it left it", () => {
    const base = "?roomId=%21r%3Ax&userId=%40a%3Ax&widgetId=w&parentUrl=https%3A%2F%2Fe.x%2F";
    expect(parseWidgetParams(`${base}&deviceId=ELEMENTDEV`, () => "DEV")).toMatchObject({ deviceId: "ELEMENTDEV", hostDevice: true });
    expect(parseWidgetParams(`${base}&deviceId=%24org.matrix.msc3819.matrix_device_id`, () => "DEV")).toMatchObject({ deviceId: "DEV", hostDevice: false });
  });
  it("says what is missing", () => {
    const p = parseWidgetParams("?roomId=%24matrix_room_id", () => "DEV");
    expect("error" in p && p.error).toMatch(/missing widgetId, parentUrl, roomId, userId/);
  });
});
