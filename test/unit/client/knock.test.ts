// Asking to join against a fake homeserver: the room summary, the knock, and the /sync wait.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ParleyClientError } from "../../../client/src/errors.ts";
import { MatrixHttp } from "../../../client/src/matrix/http.ts";
import { admissionIn, awaitAdmission, inviteState, knockCall, knockRoom, linkServer, previewRoom, viaServers, withdrawKnock, type InviteState } from "../../../client/src/matrix/knock.ts";
import { joinRoom, summaryOf } from "../../../client/src/matrix/rooms.ts";
import type { CallAnnouncement, CallHost } from "../../../client/src/matrix/callTrust.ts";
import { tick } from "./fakes.ts";

type Reply = { status: number; body: unknown } | "network" | "hang";

/** A homeserver that answers each request with the next reply queued for its (decoded) path. */
function homeserver() {
  const seen: { method: string; url: URL; body: unknown }[] = [];
  const queues = new Map<string, Reply[]>();
  const fetchFn = async (input: string, init?: RequestInit): Promise<Response> => {
    const url = new URL(input);
    seen.push({ method: init?.method ?? "GET", url, body: init?.body ? JSON.parse(String(init.body)) : undefined });
    const reply = queues.get(decodeURIComponent(url.pathname))?.shift() ?? { status: 404, body: { errcode: "M_UNRECOGNIZED" } };
    if (reply === "network") throw new TypeError("fetch failed");
    if (reply === "hang") {
      return new Promise((_, reject) => init?.signal?.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError"))));
    }
    return new Response(JSON.stringify(reply.body), { status: reply.status });
  };
  return {
    http: new MatrixHttp("https://hs.example", "tok", fetchFn),
    seen,
    on: (path: string, ...replies: Reply[]) => queues.set(path, [...(queues.get(path) ?? []), ...replies]),
  };
}

const SYNC = "/_matrix/client/v3/sync";

describe("knocking", () => {
  it("finds servers to reach a room id through; an alias needs none", () => {
    expect(viaServers("!abc:b.example")).toEqual(["b.example"]);
    expect(viaServers("!opaqueV12id")).toEqual([]);
    expect(viaServers("#meet-x:b.example")).toEqual([]);
  });

  it("reads the room summary: join rule, name and the user's membership", async () => {
    const hs = homeserver();
    hs.on("/_matrix/client/v1/room_summary/!r:b.example", { status: 200, body: { room_id: "!r:b.example", name: "Board", join_rule: "knock", membership: "leave" } });
    expect(await previewRoom(hs.http, "!r:b.example")).toEqual({ kind: "summary", roomId: "!r:b.example", name: "Board", joinRule: "knock", membership: "leave" });
    expect(hs.seen[0]!.url.searchParams.getAll("via")).toEqual(["b.example"]);
  });

  it("tells a hidden room (invite-only) from a homeserver that can't say", async () => {
    const hs = homeserver();
    hs.on("/_matrix/client/v1/room_summary/#x:b.example", { status: 404, body: { errcode: "M_NOT_FOUND", error: "Room not found or is not accessible" } });
    expect(await previewRoom(hs.http, "#x:b.example")).toEqual({ kind: "hidden" });
    expect(await previewRoom(hs.http, "#y:b.example")).toEqual({ kind: "unknown" }); // 404 M_UNRECOGNIZED
    hs.on("/_matrix/client/v1/room_summary/#z:b.example", { status: 403, body: { errcode: "M_FORBIDDEN", error: "not on the guest proxy's list" } });
    expect(await previewRoom(hs.http, "#z:b.example")).toEqual({ kind: "unknown" });
  });

  it("knocks with the reason and the room's server, and leaves to withdraw", async () => {
    const hs = homeserver();
    hs.on("/_matrix/client/v3/knock/!r:b.example", { status: 200, body: { room_id: "!r:b.example" } });
    hs.on("/_matrix/client/v3/rooms/!r:b.example/leave", { status: 200, body: {} });
    expect(await knockRoom(hs.http, "!r:b.example", "I'm presenting")).toBe("!r:b.example");
    expect(hs.seen[0]).toMatchObject({ method: "POST", body: { reason: "I'm presenting" } });
    expect(hs.seen[0]!.url.searchParams.getAll("server_name")).toEqual(["b.example"]);
    await withdrawKnock(hs.http, "!r:b.example");
    expect(hs.seen[1]).toMatchObject({ method: "POST", body: {} });
  });

  it("names the server a meeting link names (an alias's, a room id's), and knocks through the one it is given", async () => {
    expect(linkServer("#meet-x:b.example")).toBe("b.example");
    expect(linkServer("!abc:b.example:8448")).toBe("b.example:8448");
    expect([linkServer("!opaqueV12id"), linkServer("#nope"), linkServer("#x:"), linkServer("@u:b.example")]).toEqual([null, null, null, null]);
    const hs = homeserver();
    hs.on("/_matrix/client/v3/knock/!opaqueV12id", { status: 200, body: { room_id: "!opaqueV12id" } });
    expect(await knockRoom(hs.http, "!opaqueV12id", "", ["a.example"])).toBe("!opaqueV12id");
    expect(hs.seen[0]!.url.searchParams.getAll("server_name")).toEqual(["a.example"]);
    expect(hs.seen[0]!.url.searchParams.getAll("via")).toEqual(["a.example"]);
  });

  it("reports a refused knock with the homeserver's code (a locked meeting)", async () => {
    const hs = homeserver();
    hs.on("/_matrix/client/v3/knock/#x:b.example", { status: 403, body: { errcode: "M_FORBIDDEN", error: "You are not allowed to knock on this room" } });
    await expect(knockRoom(hs.http, "#x:b.example", "")).rejects.toMatchObject({ code: "M_FORBIDDEN" });
    expect(hs.seen[0]!.body).toEqual({});
  });

  it("joins a room id through its server", async () => {
    const hs = homeserver();
    hs.on("/_matrix/client/v3/join/!r:b.example", { status: 200, body: { room_id: "!r:b.example" } });
    await joinRoom(hs.http, "!r:b.example");
    expect(hs.seen[0]!.url.searchParams.getAll("via")).toEqual(["b.example"]);
  });

  it("let in, joins the invited room by its id through the alias's server: no alias lookup first", async () => {
    const hs = homeserver();
    hs.on("/_matrix/client/v3/join/!v12room", { status: 200, body: { room_id: "!v12room" } });
    expect(await joinRoom(hs.http, "#meet-board:a.example", "b.example", undefined, { roomId: "!v12room" })).toBe("!v12room");
    expect(hs.seen).toHaveLength(1);
    expect(hs.seen[0]!.url.pathname).toBe("/_matrix/client/v3/join/!v12room");
    expect(hs.seen[0]!.url.searchParams.getAll("via")).toEqual(["a.example"]);
    expect(hs.seen[0]!.url.searchParams.getAll("server_name")).toEqual(["a.example"]);
  });
});

describe("the answer in a sync response", () => {
  it("is an invite, a join or a leave of this room; anything else is no answer yet", () => {
    expect(admissionIn({ rooms: { invite: { "!r:x": {} } } }, "!r:x")).toBe("invited");
    expect(admissionIn({ rooms: { join: { "!r:x": {} } } }, "!r:x")).toBe("joined");
    expect(admissionIn({ rooms: { leave: { "!r:x": {} } } }, "!r:x")).toBe("declined");
    expect(admissionIn({ rooms: { knock: { "!r:x": {} }, invite: { "!other:x": {} } } }, "!r:x")).toBeNull();
    expect(admissionIn({}, "!r:x")).toBeNull();
  });
});

/** A stand-in for callTrust.ts: says which announcement it was asked about. */
const trust = { decide: (c: CallAnnouncement | null) => (c ? ({ trusted: c.api } as unknown as CallHost) : ({ none: true } as unknown as CallHost)) };

/** The call API an invite's stripped state announces, as inviteState vouches for it. */
const callOfInvite = (...a: Parameters<typeof inviteState>) => inviteState(...a).call;

describe("the call API an invite announces", () => {
  const ME = "@me:b";
  const call = { type: "org.parley.call", state_key: "", sender: "@parley:a", content: { api: "https://parley.a" } };
  const invitedBy = (sender: string) => ({ type: "m.room.member", state_key: ME, sender, content: { membership: "invite" } });
  const invite = (events: unknown) => ({ rooms: { invite: { "!r:x": { invite_state: { events } } } } });

  it("is the org.parley.call of the invite's stripped state, with its sender, when the inviter's server is the sender's", () => {
    const state = [{ type: "m.room.name", state_key: "", content: { name: "x" } }, call, invitedBy("@host:a")];
    expect(callOfInvite(invite(state), "!r:x", ME)).toEqual({ api: "https://parley.a", sender: "@parley:a" });
  });

  it("is none when another server invited (stripped state is unsigned: c cannot vouch for a's bot)", () => {
    expect(callOfInvite(invite([call, invitedBy("@mallory:c")]), "!r:x", ME)).toBeNull();
    expect(callOfInvite(invite([call]), "!r:x", ME)).toBeNull(); // no invite event: nobody vouches
    expect(callOfInvite(invite([call, { ...invitedBy("@host:a"), state_key: "@other:b" }]), "!r:x", ME)).toBeNull();
  });

  it("is none when the state does not carry it, or carries something else", () => {
    expect(callOfInvite(invite([invitedBy("@host:a")]), "!r:x", ME)).toBeNull();
    expect(callOfInvite({ rooms: { invite: { "!r:x": {} } } }, "!r:x", ME)).toBeNull();
    expect(callOfInvite(invite("nope"), "!r:x", ME)).toBeNull();
    expect(callOfInvite(invite([call, invitedBy("@host:a")]), "!other:x", ME)).toBeNull();
    expect(callOfInvite(invite([{ ...call, state_key: "x" }, { ...call, content: { api: 7 } }, { ...call, sender: undefined }, null, invitedBy("@host:a")]), "!r:x", ME)).toBeNull();
  });

  it("keeps the stripped state for the room's summary, with the call's announcement only when vouched for", () => {
    const name = { type: "m.room.name", state_key: "", content: { name: "Weekly" } };
    const vouched = inviteState(invite([name, call, invitedBy("@host:a"), 7, null]), "!r:x", ME);
    expect(vouched.call).toEqual({ api: "https://parley.a", sender: "@parley:a" });
    expect(vouched.events).toEqual([name, invitedBy("@host:a"), call]);
    // The first well-formed announcement decides: another one after a refused one is not taken.
    const forged = { ...call, sender: "@bot:c", content: { api: "https://evil.c" } };
    const refused = inviteState(invite([forged, call, name, invitedBy("@host:a")]), "!r:x", ME);
    expect(refused).toEqual({ call: null, events: [name, invitedBy("@host:a")] });
    expect(summaryOf(refused.events, "!r:x", "#m:a", trust, ME)).toMatchObject({ call: null, callContent: null });
  });
});

describe("the call API a knock's stripped state announces", () => {
  const call = { type: "org.parley.call", state_key: "", sender: "@parley:a", content: { api: "https://parley.a" } };
  const knock = (events: unknown) => ({ rooms: { knock: { "!r:x": { knock_state: { events } } } } });

  it("is the org.parley.call there when its sender is a user of the server the knock went through", () => {
    expect(knockCall(knock([{ type: "m.room.name", state_key: "", content: { name: "x" } }, call]), "!r:x", "a")).toEqual({ call: { api: "https://parley.a", sender: "@parley:a" }, content: call.content });
  });

  it("is none when another server's user sent it (that server answered nothing: it cannot vouch), or none is there", () => {
    expect(knockCall(knock([call]), "!r:x", "c")).toBeNull();
    // The first well-formed announcement decides: a forged one first hides a true one after it.
    expect(knockCall(knock([{ ...call, sender: "@bot:c", content: { api: "https://evil.c" } }, call]), "!r:x", "a")).toBeNull();
    expect(knockCall(knock([{ ...call, state_key: "x" }, { ...call, content: { api: 7 } }, null, 7]), "!r:x", "a")).toBeNull();
    expect(knockCall(knock("nope"), "!r:x", "a")).toBeNull();
    expect(knockCall(knock([call]), "!other:x", "a")).toBeNull();
    expect(knockCall({ rooms: { invite: { "!r:x": { invite_state: { events: [call] } } } } }, "!r:x", "a")).toBeNull();
  });
});

describe("a room's summary from an invite's stripped state", () => {
  const ME = "@me:b";
  it("names the room, its call, its key mode's content and the invited user's name as the invite shows them", () => {
    const events = [
      { type: "m.room.name", state_key: "", content: { name: "Weekly" } },
      { type: "m.room.canonical_alias", state_key: "", content: { alias: "#meet-weekly:a" } },
      { type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } },
      { type: "m.room.member", state_key: ME, sender: "@host:a", content: { membership: "invite", displayname: "Me" } },
      { type: "org.parley.call", state_key: "", sender: "@parley:a", content: { api: "https://parley.a", keys: "participant" } },
    ];
    const room = summaryOf(events, "!r:a", "!r:a", trust, ME);
    expect(room).toMatchObject({ roomId: "!r:a", name: "Weekly", call: { api: "https://parley.a", sender: "@parley:a" }, encrypted: true, hostedBy: "a", selfName: "Me" });
    expect(room.host).toEqual({ trusted: "https://parley.a" });
    expect(room.callContent).toEqual({ api: "https://parley.a", keys: "participant" });
  });
});

describe("waiting for a host", () => {
  beforeEach(() => vi.useFakeTimers());
  afterEach(() => vi.useRealTimers());

  it("takes the state first, then long-polls from there until invited", async () => {
    const hs = homeserver();
    hs.on(SYNC, { status: 200, body: { next_batch: "s1", rooms: { knock: { "!r:x": {} } } } }, { status: 200, body: { next_batch: "s2" } }, { status: 200, body: { next_batch: "s3", rooms: { invite: { "!r:x": {} } } } });
    const answer = await awaitAdmission(hs.http, "!r:x", { signal: new AbortController().signal, pollMs: 30_000 });
    expect(answer).toBe("invited");
    const q = hs.seen.map((r) => [r.url.searchParams.get("since"), r.url.searchParams.get("timeout")]);
    expect(q).toEqual([[null, "0"], ["s1", "30000"], ["s2", "30000"]]);
    expect(JSON.parse(hs.seen[0]!.url.searchParams.get("filter")!)).toMatchObject({ room: { rooms: ["!r:x"], timeline: { limit: 1 } } });
  });

  it("tells the invite's call announcement before answering; a join or a decline tells none", async () => {
    const hs = homeserver();
    const told: unknown[] = [];
    const stripped = [
      { type: "org.parley.call", state_key: "", sender: "@parley:a", content: { api: "https://parley.a" } },
      { type: "m.room.member", state_key: "@me:b", sender: "@parley:a", content: { membership: "invite" } },
    ];
    const onInvite = { userId: "@me:b", invited: (s: InviteState) => void told.push(s.call) };
    hs.on(SYNC, { status: 200, body: { next_batch: "s1", rooms: { invite: { "!r:x": { invite_state: { events: stripped } } } } } });
    expect(await awaitAdmission(hs.http, "!r:x", { signal: new AbortController().signal, onInvite })).toBe("invited");
    expect(told).toEqual([{ api: "https://parley.a", sender: "@parley:a" }]);
    hs.on(SYNC, { status: 200, body: { next_batch: "s1", rooms: { join: { "!r:x": {} } } } });
    await awaitAdmission(hs.http, "!r:x", { signal: new AbortController().signal, onInvite });
    expect(told).toHaveLength(1);
  });

  it("tells the knock's call announcement and its content once while knocking, vouched for by the server the knock went through", async () => {
    const hs = homeserver();
    const told: unknown[] = [];
    const content = { api: "https://parley.a", e2ee: { keys: "participant" } };
    const state = { knock_state: { events: [{ type: "org.parley.call", state_key: "", sender: "@parley:a", content }] } };
    hs.on(
      SYNC,
      { status: 200, body: { next_batch: "s1", rooms: { knock: { "!r:x": state } } } },
      { status: 200, body: { next_batch: "s2", rooms: { knock: { "!r:x": state } } } },
      { status: 200, body: { next_batch: "s3", rooms: { invite: { "!r:x": {} } } } },
    );
    const onKnock = { server: "a", knocking: (c: CallAnnouncement, body: unknown) => void told.push([c, body]) };
    expect(await awaitAdmission(hs.http, "!r:x", { signal: new AbortController().signal, onKnock })).toBe("invited");
    expect(told).toEqual([[{ api: "https://parley.a", sender: "@parley:a" }, content]]);
    // Through another server: nothing told.
    hs.on(SYNC, { status: 200, body: { next_batch: "s1", rooms: { knock: { "!r:x": state } } } }, { status: 200, body: { next_batch: "s2", rooms: { leave: { "!r:x": {} } } } });
    expect(await awaitAdmission(hs.http, "!r:x", { signal: new AbortController().signal, onKnock: { ...onKnock, server: "c" } })).toBe("declined");
    expect(told).toHaveLength(1);
  });

  it("sees an answer given before the wait began (the institution's instant invite, a declined knock)", async () => {
    const hs = homeserver();
    hs.on(SYNC, { status: 200, body: { next_batch: "s1", rooms: { invite: { "!r:x": {} } } } });
    expect(await awaitAdmission(hs.http, "!r:x", { signal: new AbortController().signal })).toBe("invited");
    hs.on(SYNC, { status: 200, body: { next_batch: "s1" } }, { status: 200, body: { next_batch: "s2", rooms: { leave: { "!r:x": {} } } } });
    expect(await awaitAdmission(hs.http, "!r:x", { signal: new AbortController().signal })).toBe("declined");
  });

  it("retries network trouble with a backoff and gives up on an expired sign-in", async () => {
    const hs = homeserver();
    hs.on(SYNC, "network", { status: 502, body: "bad gateway" }, { status: 200, body: { next_batch: "s1", rooms: { join: { "!r:x": {} } } } });
    const waiting = awaitAdmission(hs.http, "!r:x", { signal: new AbortController().signal });
    await vi.advanceTimersByTimeAsync(1000);
    expect(hs.seen).toHaveLength(2);
    await vi.advanceTimersByTimeAsync(2000);
    await expect(waiting).resolves.toBe("joined");

    hs.on(SYNC, { status: 401, body: { errcode: "M_UNKNOWN_TOKEN" } });
    await expect(awaitAdmission(hs.http, "!r:x", { signal: new AbortController().signal })).rejects.toMatchObject({ code: "M_UNKNOWN_TOKEN" });
  });

  it("stops at once when the user cancels, even in the middle of a long poll", async () => {
    const hs = homeserver();
    hs.on(SYNC, { status: 200, body: { next_batch: "s1" } }, "hang");
    const stop = new AbortController();
    const waiting = awaitAdmission(hs.http, "!r:x", { signal: stop.signal });
    await vi.waitFor(() => expect(hs.seen).toHaveLength(2));
    stop.abort();
    await expect(waiting).rejects.toBeInstanceOf(ParleyClientError);
    await tick();
    expect(hs.seen).toHaveLength(2);
  });
});

describe("waiting for a host with the room's feed running (one sync loop for the device)", () => {
  /** A sync loop already running: its responses are handed to whoever listens. */
  function feedLoop() {
    const listeners = new Set<(status: number, body: unknown) => void>();
    let fail!: (err: unknown) => void;
    const running = new Promise<void>((_, reject) => (fail = reject));
    running.catch(() => undefined);
    return {
      tap: { onResponse: (fn: (status: number, body: unknown) => void) => (listeners.add(fn), () => void listeners.delete(fn)), running },
      respond: (status: number, body: unknown) => [...listeners].forEach((l) => l(status, body)),
      listening: () => listeners.size,
      fail: () => fail(new Error("the feed could not start")),
    };
  }
  const knocking = { status: 200, body: { next_batch: "s1", rooms: { knock: { "!r:x": {} } } } } as const;

  it("makes only its first, initial sync (no since: it acknowledges no to-device message) and reads the answer from the feed's responses", async () => {
    const hs = homeserver();
    hs.on(SYNC, knocking);
    const feed = feedLoop();
    const waiting = awaitAdmission(hs.http, "!r:x", { signal: new AbortController().signal, tap: feed.tap });
    await vi.waitFor(() => expect(hs.seen).toHaveLength(1));
    await tick();
    feed.respond(200, { next_batch: "f2", to_device: { events: [{ type: "m.room.encrypted" }] } });
    feed.respond(200, { next_batch: "f3", rooms: { invite: { "!r:x": {} } } });
    expect(await waiting).toBe("invited");
    expect(hs.seen.map((r) => [r.url.searchParams.get("since"), r.url.searchParams.get("timeout")])).toEqual([[null, "0"]]);
    expect(feed.listening()).toBe(0);
  });

  it("misses no answer the feed got while its own first sync was out; the invite's hint is given once", async () => {
    let answer!: () => void;
    const gate = new Promise<void>((r) => (answer = r));
    const stripped = [
      { type: "org.parley.call", state_key: "", sender: "@parley:a", content: { api: "https://parley.a" } },
      { type: "m.room.member", state_key: "@me:b", sender: "@parley:a", content: { membership: "invite" } },
    ];
    const invite = { next_batch: "s1", rooms: { invite: { "!r:x": { invite_state: { events: stripped } } } } };
    // Its own sync answers only after the feed's response carried the invite (both carry it).
    const fetchFn = async () => (await gate, new Response(JSON.stringify(invite), { status: 200 }));
    const feed = feedLoop();
    const told: unknown[] = [];
    const waiting = awaitAdmission(new MatrixHttp("https://hs.example", "tok", fetchFn), "!r:x", {
      signal: new AbortController().signal,
      tap: feed.tap,
      onInvite: { userId: "@me:b", invited: (st: InviteState) => void told.push(st.call) },
    });
    feed.respond(200, invite);
    answer();
    expect(await waiting).toBe("invited");
    expect(told).toEqual([{ api: "https://parley.a", sender: "@parley:a" }]);
  });

  it("polls on by itself from its own sync when the feed's loop is not running; a feed's expired sign-in ends the wait", async () => {
    const hs = homeserver();
    hs.on(SYNC, knocking, { status: 200, body: { next_batch: "s2", rooms: { leave: { "!r:x": {} } } } });
    const feed = feedLoop();
    const waiting = awaitAdmission(hs.http, "!r:x", { signal: new AbortController().signal, tap: feed.tap });
    await vi.waitFor(() => expect(hs.seen).toHaveLength(1));
    feed.fail();
    expect(await waiting).toBe("declined");
    expect(hs.seen.map((r) => r.url.searchParams.get("since"))).toEqual([null, "s1"]);
    expect(feed.listening()).toBe(0);

    hs.on(SYNC, knocking);
    const other = feedLoop();
    const expired = awaitAdmission(hs.http, "!r:x", { signal: new AbortController().signal, tap: other.tap });
    expired.catch(() => undefined);
    other.respond(502, "bad gateway"); // retried by the feed's own loop: not the end
    other.respond(401, { errcode: "M_UNKNOWN_TOKEN", error: "expired" });
    await expect(expired).rejects.toMatchObject({ code: "M_UNKNOWN_TOKEN", status: 401 });
    expect(other.listening()).toBe(0);
  });

  it("stops at once when the user cancels while it listens", async () => {
    const hs = homeserver();
    hs.on(SYNC, knocking);
    const feed = feedLoop();
    const stop = new AbortController();
    const waiting = awaitAdmission(hs.http, "!r:x", { signal: stop.signal, tap: feed.tap });
    await vi.waitFor(() => expect(hs.seen).toHaveLength(1));
    await tick();
    stop.abort();
    await expect(waiting).rejects.toMatchObject({ code: "CLOSED" });
    expect(feed.listening()).toBe(0);
    expect(hs.seen).toHaveLength(1);
  });
});
