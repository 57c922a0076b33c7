import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { JanusClosedError, JanusError, JanusTimeoutError } from "../../../appservice/src/sfu/errors.ts";
import type { JanusMessage } from "../../../appservice/src/sfu/messages.ts";
import { JanusTransport } from "../../../appservice/src/sfu/transport.ts";
import { FakeJanus, send } from "./fakeJanus.ts";

let janus: FakeJanus;
let transport: JanusTransport;

beforeEach(async () => {
  janus = await FakeJanus.start();
  transport = await JanusTransport.connect({ url: janus.url, apiSecret: "s3cret", requestTimeoutMs: 500 });
});

afterEach(async () => {
  await transport.close();
  await janus.close();
});

describe("JanusTransport", () => {
  it("tells the metrics of each request: its kind, how long it took, and its error", async () => {
    const seen: string[] = [];
    const observed = await JanusTransport.connect({
      url: janus.url, apiSecret: "s3cret", requestTimeoutMs: 100,
      observe: (request, seconds, error) => seen.push(`${request} ${seconds >= 0 && seconds < 5} ${error?.name ?? "ok"}`),
    });
    janus.onRequest((msg, socket) => {
      if (msg["janus"] === "keepalive") return; // never answered: times out
      const body = msg["body"] as { request?: string } | undefined;
      if (body?.request === "destroy") return send(socket, { janus: "error", transaction: msg["transaction"], error: { code: 458, reason: "no such session" } });
      send(socket, { janus: "success", transaction: msg["transaction"], data: { id: 1 } });
    });
    await observed.request({ janus: "create" });
    await expect(observed.request({ janus: "message", session_id: 1, handle_id: 2, body: { request: "destroy" } })).rejects.toBeInstanceOf(JanusError);
    await expect(observed.request({ janus: "keepalive", session_id: 1 })).rejects.toBeInstanceOf(JanusTimeoutError);
    await observed.request({ janus: "message", session_id: 1, handle_id: 2, body: { request: "Not A Kind!" } });
    await observed.close();
    expect(seen).toEqual(["create true ok", "message(destroy) true JanusError", "keepalive true JanusTimeoutError", "other true ok"]);
  });

  it("adds a fresh random transaction and the api_secret to every request", async () => {
    janus.onRequest((msg, socket) => send(socket, { janus: "success", transaction: msg["transaction"], data: { id: 1 } }));
    await transport.request({ janus: "create" });
    await transport.request({ janus: "create" });
    const [a, b] = janus.received;
    expect(a).toMatchObject({ janus: "create", apisecret: "s3cret" });
    expect(typeof a!["transaction"]).toBe("string");
    expect((a!["transaction"] as string).length).toBeGreaterThanOrEqual(16);
    expect(a!["transaction"]).not.toBe(b!["transaction"]);
  });

  it("request() skips the ack and resolves on the event; requestAsync() returns its jsep", async () => {
    janus.onRequest((msg, socket) => {
      const tx = msg["transaction"];
      send(socket, { janus: "ack", transaction: tx, session_id: 1 });
      setTimeout(() => send(socket, {
        janus: "event", transaction: tx, session_id: 1, sender: 2,
        plugindata: { plugin: "janus.plugin.videoroom", data: { videoroom: "attached" } },
        jsep: { type: "offer", sdp: "v=0" },
      }), 20);
    });
    const viaRequest = await transport.request({ janus: "message", session_id: 1, handle_id: 2, body: {} });
    expect(viaRequest.janus).toBe("event");
    const viaAsync = await transport.requestAsync({ janus: "message", session_id: 1, handle_id: 2, body: {} });
    expect(viaAsync.jsep).toEqual({ type: "offer", sdp: "v=0" });
  });

  it("requestAsync() also takes the event when Janus sends it before the ack (as 1.1.2 does)", async () => {
    janus.onRequest((msg, socket) => {
      const tx = msg["transaction"];
      send(socket, { janus: "event", transaction: tx, session_id: 1, sender: 2, plugindata: { plugin: "p", data: { ok: true } } });
      send(socket, { janus: "ack", transaction: tx, session_id: 1 });
    });
    const events: JanusMessage[] = [];
    transport.onSession(1, (m) => events.push(m));
    const reply = await transport.requestAsync({ janus: "message", session_id: 1, handle_id: 2, body: {} });
    expect(reply.plugindata?.data).toEqual({ ok: true });
    await transport.request({ janus: "message", session_id: 1, handle_id: 2, body: {} });
    expect(events).toEqual([]); // the late acks went nowhere
  });

  it("resolves on the ack only when asked to (keepalive, trickle)", async () => {
    janus.onRequest((msg, socket) => send(socket, { janus: "ack", transaction: msg["transaction"], session_id: 1 }));
    await expect(transport.request({ janus: "keepalive", session_id: 1 }, { ackIsReply: true })).resolves.toMatchObject({ janus: "ack" });
    await expect(transport.request({ janus: "keepalive", session_id: 1 }, { timeoutMs: 50 })).rejects.toBeInstanceOf(JanusTimeoutError);
  });

  it("rejects with a typed JanusError on {janus: error}", async () => {
    janus.onRequest((msg, socket) =>
      send(socket, { janus: "error", transaction: msg["transaction"], error: { code: 458, reason: "No such session 5" } }),
    );
    const err = await transport.request({ janus: "claim", session_id: 5 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(JanusError);
    expect(err).toMatchObject({ code: 458, reason: "No such session 5" });
    expect((err as Error).message).not.toContain("s3cret");
    await expect(transport.requestAsync({ janus: "claim", session_id: 5 })).rejects.toMatchObject({ code: 458 });
  });

  it("times out and ignores the late answer", async () => {
    janus.onRequest((msg, socket) => setTimeout(() => send(socket, { janus: "success", transaction: msg["transaction"] }), 120));
    const err = await transport.request({ janus: "info" }, { timeoutMs: 30 }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(JanusTimeoutError);
    expect((err as Error).message).toContain("info");
    await new Promise((r) => setTimeout(r, 150));
    // The socket still works after the late answer was dropped.
    await expect(transport.request({ janus: "info" })).resolves.toMatchObject({ janus: "success" });
  });

  it("uses the default request timeout from its options", async () => {
    const started = Date.now();
    await expect(transport.request({ janus: "info" })).rejects.toBeInstanceOf(JanusTimeoutError);
    expect(Date.now() - started).toBeGreaterThanOrEqual(450);
  });

  it("drops malformed messages (not JSON, wrong types, error without error) and keeps going", async () => {
    janus.onRequest((msg, socket) => {
      const tx = msg["transaction"];
      socket.send("{not json");
      send(socket, { janus: 5, transaction: tx });
      send(socket, { janus: "error", transaction: tx });
      send(socket, { janus: "success", transaction: tx, session_id: "seven" });
      send(socket, { janus: "success", transaction: tx, data: { id: 9 } });
    });
    await expect(transport.request({ janus: "create" })).resolves.toMatchObject({ data: { id: 9 } });
  });

  it("routes messages without a pending transaction to their session's listener", async () => {
    const seen: string[] = [];
    const off = transport.onSession(7, (m) => seen.push(`${m.janus}:${m.sender ?? "-"}`));
    transport.onSession(8, (m) => seen.push(`other:${m.janus}`));
    for (const janusKind of ["webrtcup", "media", "hangup", "slowlink", "detached"]) {
      janus.broadcast({ janus: janusKind, session_id: 7, sender: 3, receiving: true, uplink: true });
    }
    janus.broadcast({ janus: "event", session_id: 7, sender: 3, plugindata: { plugin: "p", data: {} } });
    janus.broadcast({ janus: "timeout", session_id: 7 });
    janus.broadcast({ janus: "event", session_id: 99, sender: 3, plugindata: { plugin: "p", data: {} } });
    await new Promise((r) => setTimeout(r, 50));
    expect(seen).toEqual(["webrtcup:3", "media:3", "hangup:3", "slowlink:3", "detached:3", "event:3", "timeout:-"]);
    off();
    janus.broadcast({ janus: "webrtcup", session_id: 7, sender: 3 });
    await new Promise((r) => setTimeout(r, 30));
    expect(seen).toHaveLength(7);
  });

  it("rejects every pending request when the socket closes, and reports the close once", async () => {
    const closes: string[] = [];
    transport.onClose((reason) => closes.push(reason));
    const pending = [transport.request({ janus: "info" }), transport.requestAsync({ janus: "message", body: {} })];
    await janus.nextRequest();
    janus.dropClients();
    for (const p of pending) await expect(p).rejects.toBeInstanceOf(JanusClosedError);
    expect(transport.closed).toBe(true);
    expect(closes).toHaveLength(1);
    await expect(transport.request({ janus: "info" })).rejects.toBeInstanceOf(JanusClosedError);
    const late: string[] = [];
    transport.onClose((r) => late.push(r));
    await new Promise((r) => setTimeout(r, 0));
    expect(late).toHaveLength(1);
  });

  it("close() rejects pending requests and closes the socket", async () => {
    const p = transport.request({ janus: "info" });
    await transport.close();
    await expect(p).rejects.toBeInstanceOf(JanusClosedError);
    await new Promise((r) => setTimeout(r, 20));
    expect(janus.clients).toBe(0);
  });

  it("fails to connect with JanusClosedError when nothing listens", async () => {
    const port = janus.port;
    await janus.close();
    await expect(JanusTransport.connect({ url: `ws://127.0.0.1:${port}`, apiSecret: "x" })).rejects.toBeInstanceOf(JanusClosedError);
  });
});
