// JanusSession and JanusPluginHandle against the fake Janus.
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { JanusError } from "../../../appservice/src/sfu/errors.ts";
import type { PeerEvent } from "../../../appservice/src/sfu/handle.ts";
import { JanusSession, type SessionCloseReason } from "../../../appservice/src/sfu/session.ts";
import { JanusTransport } from "../../../appservice/src/sfu/transport.ts";
import { FakeJanus, type JanusModel } from "./fakeJanus.ts";

let janus: FakeJanus;
let model: JanusModel;
let transport: JanusTransport;
const tick = (ms = 30) => new Promise((r) => setTimeout(r, ms));
/** Waits for an observable state (the machine may be loaded: never for a fixed time). */
async function until(pred: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > deadline) throw new Error("condition not met");
    await tick(5);
  }
}

beforeEach(async () => {
  janus = await FakeJanus.start();
  model = janus.emulate({ adminKey: "k" });
  transport = await JanusTransport.connect({ url: janus.url, apiSecret: "s", requestTimeoutMs: 500 });
});

afterEach(async () => {
  await transport.close();
  await janus.close();
});

const kinds = (from = 0) => janus.received.slice(from).map((m) => m["janus"]);

describe("JanusSession", () => {
  it("creates, keeps alive every keepaliveMs, and stops the timer on destroy", async () => {
    const session = await JanusSession.create(transport, { keepaliveMs: 40 });
    expect(model.sessions.has(session.id)).toBe(true);
    await until(() => kinds().filter((k) => k === "keepalive").length >= 2);
    expect(janus.received.find((m) => m["janus"] === "keepalive")).toMatchObject({ session_id: session.id });
    const closed: SessionCloseReason[] = [];
    session.events.on("closed", (r) => closed.push(r));
    await session.destroy();
    expect(closed).toEqual(["destroyed"]);
    expect(model.sessions.has(session.id)).toBe(false);
    const after = janus.received.length;
    await tick(100);
    expect(janus.received.length).toBe(after);
  });

  it("attaches handles that send messages with session and handle ids", async () => {
    const session = await JanusSession.create(transport);
    const handle = await session.attach("janus.plugin.videoroom");
    const reply = await handle.message({ request: "exists", room: "r" });
    expect(reply.data).toMatchObject({ exists: false });
    expect(janus.received.at(-1)).toMatchObject({ janus: "message", session_id: session.id, handle_id: handle.id, body: { request: "exists" } });
    await session.destroy();
    expect(handle.detached).toBe(true);
  });

  it("hands out handles attached ahead once each, without a round trip; another plugin's, an opaque id's, or one more attaches anew", async () => {
    const session = await JanusSession.create(transport, { keepaliveMs: 1_000_000 });
    await session.attachAhead("janus.plugin.videoroom", 2);
    expect(session.handleCount).toBe(2);
    const attaches = () => kinds().filter((k) => k === "attach").length;
    expect(attaches()).toBe(2);
    // Two at once get the two spares, and Janus hears nothing.
    const [a, b] = await Promise.all([session.attach("janus.plugin.videoroom"), session.attach("janus.plugin.videoroom")]);
    expect(a.id).not.toBe(b.id);
    expect(attaches()).toBe(2);
    await session.attach("janus.plugin.echotest");
    await session.attach("janus.plugin.videoroom");
    expect(attaches()).toBe(4);
    await session.attachAhead("janus.plugin.videoroom", 1);
    await session.attach("janus.plugin.videoroom", { opaqueId: "x" });
    expect(janus.received.at(-1)).toMatchObject({ janus: "attach", opaque_id: "x" });
    expect(attaches()).toBe(6);
    // The spare left is still there for the next attach; destroy detaches it with the rest.
    const last = await session.attach("janus.plugin.videoroom");
    expect(attaches()).toBe(6);
    expect(session.handleCount).toBe(6);
    await session.destroy();
    expect(last.detached).toBe(true);
    expect(session.handleCount).toBe(0);
  });

  it("claims itself onto a new transport and routes events from there", async () => {
    const session = await JanusSession.create(transport, { keepaliveMs: 1_000_000 });
    const handle = await session.attach("janus.plugin.videoroom");
    janus.dropClients();
    await tick();
    const next = await JanusTransport.connect({ url: janus.url, apiSecret: "s" });
    try {
      await session.claim(next);
      expect(janus.received.at(-1)).toMatchObject({ janus: "claim", session_id: session.id });
      const seen: PeerEvent[] = [];
      handle.onPeer((e) => seen.push(e));
      janus.broadcast({ janus: "webrtcup", session_id: session.id, sender: handle.id });
      await until(() => seen.length > 0);
      expect(seen).toEqual([{ kind: "webrtcup" }]);
    } finally {
      await session.destroy();
      await next.close();
    }
  });

  it("closes as lost when a claim finds the session gone (458)", async () => {
    const session = await JanusSession.create(transport, { keepaliveMs: 1_000_000 });
    const handle = await session.attach("janus.plugin.videoroom");
    const detached: string[] = [];
    handle.events.on("detached", () => detached.push("d"));
    const closed: SessionCloseReason[] = [];
    session.events.on("closed", (r) => closed.push(r));
    model.restart();
    await expect(session.claim(transport)).rejects.toMatchObject({ code: 458 });
    expect(session.closed).toBe(true);
    expect(closed).toEqual(["lost"]);
    expect(detached).toEqual(["d"]);
  });

  it("closes as timeout when Janus says so, and as lost when a keepalive finds it gone", async () => {
    const a = await JanusSession.create(transport, { keepaliveMs: 1_000_000 });
    const b = await JanusSession.create(transport, { keepaliveMs: 30 });
    const reasons: string[] = [];
    a.events.on("closed", (r) => reasons.push(`a:${r}`));
    b.events.on("closed", (r) => reasons.push(`b:${r}`));
    janus.broadcast({ janus: "timeout", session_id: a.id });
    model.sessions.delete(b.id);
    await until(() => reasons.length >= 2);
    expect(reasons.sort()).toEqual(["a:timeout", "b:lost"]);
  });
});

describe("JanusPluginHandle", () => {
  it("dispatches each Janus event kind to its typed event and drops malformed ones", async () => {
    const session = await JanusSession.create(transport);
    const handle = await session.attach("janus.plugin.videoroom");
    const seen: unknown[] = [];
    handle.onPeer((e) => seen.push(e));
    handle.events.on("event", (data, jsep) => seen.push({ event: data, jsep }));
    const base = { session_id: session.id, sender: handle.id };
    janus.broadcast({ janus: "webrtcup", ...base });
    janus.broadcast({ janus: "media", ...base, type: "video", mid: "1", receiving: true });
    janus.broadcast({ janus: "media", ...base, type: "video", mid: "1", receiving: "yes" }); // malformed
    janus.broadcast({ janus: "slowlink", ...base, mid: "1", media: "video", uplink: false, lost: 12 });
    janus.broadcast({ janus: "trickle", ...base, candidate: { completed: true } });
    janus.broadcast({ janus: "event", ...base, plugindata: { plugin: "janus.plugin.videoroom", data: { videoroom: "event", leaving: "bob" } } });
    janus.broadcast({ janus: "hangup", ...base, reason: "DTLS alert" });
    janus.broadcast({ janus: "detached", ...base });
    janus.broadcast({ janus: "webrtcup", ...base }); // after detach: nobody listens
    await until(() => handle.detached);
    await tick(50);
    expect(seen).toEqual([
      { kind: "webrtcup" },
      { kind: "media", info: { type: "video", mid: "1", receiving: true, janus: "media", ...base } },
      { kind: "slowlink", info: { mid: "1", media: "video", uplink: false, lost: 12, janus: "slowlink", ...base } },
      { kind: "trickle", candidate: { completed: true } },
      { event: { videoroom: "event", leaving: "bob" }, jsep: undefined },
      { kind: "hangup", reason: "DTLS alert" },
      { kind: "detached" },
    ]);
    expect(handle.detached).toBe(true);
    await session.destroy();
  });

  it("trickles one candidate, several, or completed, and resolves on the ack", async () => {
    const session = await JanusSession.create(transport);
    const handle = await session.attach("janus.plugin.videoroom");
    janus.onRequest((msg, socket) => {
      if (msg["janus"] === "trickle") socket.send(JSON.stringify({ janus: "ack", transaction: msg["transaction"], session_id: session.id }));
      else model.answer(msg, (r) => socket.send(JSON.stringify(r)));
    });
    const c = { candidate: "candidate:1 1 udp 1 192.0.2.1 5000 typ host", sdpMid: "0", sdpMLineIndex: 0 };
    await handle.trickle(c);
    await handle.trickle([c, c]);
    await handle.trickle(null);
    const trickles = janus.received.filter((m) => m["janus"] === "trickle");
    expect(trickles.map((t) => [t["candidate"], t["candidates"]])).toEqual([[c, undefined], [undefined, [c, c]], [{ completed: true }, undefined]]);
    expect(trickles[0]).toMatchObject({ session_id: session.id, handle_id: handle.id });
    await session.destroy();
  });

  it("detach() tells Janus once and ends the handle locally even when Janus refuses", async () => {
    const session = await JanusSession.create(transport);
    const handle = await session.attach("janus.plugin.videoroom");
    const from = janus.received.length;
    await handle.detach();
    await handle.detach();
    expect(kinds(from)).toEqual(["detach"]);
    const other = await session.attach("janus.plugin.videoroom");
    model.restart(); // Janus answers 458 now
    await other.detach();
    expect(other.detached).toBe(true);
    await expect(session.request({ janus: "keepalive" }, { ackIsReply: true })).rejects.toBeInstanceOf(JanusError);
    await session.destroy();
  });
});
