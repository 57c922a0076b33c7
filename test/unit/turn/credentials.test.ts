import { createHmac } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { describe, expect, it } from "vitest";
import { iceForSession, readTurnSecret, turnCredential } from "../../../appservice/src/turn/credentials.ts";

const SECRET = "0123456789abcdef0123456789abcdef";
const NOW = 1_800_000_000_123;

describe("turnCredential (coturn's use-auth-secret scheme)", () => {
  it("username is '<expiry unix seconds>:<id>', credential base64(HMAC-SHA1(secret, username))", () => {
    const c = turnCredential(SECRET, { nowMs: NOW, ttlSeconds: 600, id: "abc" });
    expect(c.username).toBe("1800000600:abc");
    expect(c.expiresAt).toBe(1_800_000_600);
    // The reference value, computed independently of the module's code path.
    expect(c.credential).toBe(createHmac("sha1", SECRET).update("1800000600:abc").digest("base64"));
    expect(Buffer.from(c.credential, "base64")).toHaveLength(20);
  });

  it("a known vector: the same inputs give the same password, another secret another one", () => {
    const a = turnCredential(SECRET, { nowMs: NOW, ttlSeconds: 600, id: "abc" });
    expect(turnCredential(SECRET, { nowMs: NOW, ttlSeconds: 600, id: "abc" }).credential).toBe(a.credential);
    expect(turnCredential(`${SECRET}x`, { nowMs: NOW, ttlSeconds: 600, id: "abc" }).credential).not.toBe(a.credential);
    expect(turnCredential(SECRET, { nowMs: NOW, ttlSeconds: 601, id: "abc" }).credential).not.toBe(a.credential);
  });

  it("refuses an empty secret, a non-positive ttl and ids coturn would misread", () => {
    expect(() => turnCredential("", { nowMs: NOW, ttlSeconds: 60, id: "a" })).toThrow(/empty secret/);
    expect(() => turnCredential(SECRET, { nowMs: NOW, ttlSeconds: 0, id: "a" })).toThrow(/ttlSeconds/);
    for (const id of ["", "a:b", "a b", "x".repeat(129), "é"]) {
      expect(() => turnCredential(SECRET, { nowMs: NOW, ttlSeconds: 60, id })).toThrow(/opaque id/);
    }
  });
});

describe("iceForSession", () => {
  const turn = { urls: ["turn:127.0.0.1:3478?transport=udp"], secret: SECRET, ttlSeconds: 300, relayOnly: false };

  it("without TURN: the configured servers, policy all", () => {
    expect(iceForSession({ iceServers: [] }, "tok", NOW)).toEqual({ iceServers: [], iceTransportPolicy: "all" });
  });

  it("with TURN: a fresh credential per session whose id is no Matrix id nor the session token", () => {
    const a = iceForSession({ iceServers: [], turn }, "session-token-a", NOW);
    const b = iceForSession({ iceServers: [], turn }, "session-token-b", NOW);
    const ta = a.iceServers[0]!;
    expect(ta.urls).toEqual(turn.urls);
    expect(ta.username).toMatch(/^1800000300:[A-Za-z0-9_-]{22}$/);
    expect(ta.username).not.toContain("session-token");
    expect(ta.credential).toBe(createHmac("sha1", SECRET).update(ta.username!).digest("base64"));
    expect(b.iceServers[0]!.username).not.toBe(ta.username);
    expect(a.iceTransportPolicy).toBe("all");
  });

  it("relayOnly asks the browser for relay candidates only", () => {
    expect(iceForSession({ iceServers: [], turn: { ...turn, relayOnly: true } }, "t", NOW).iceTransportPolicy).toBe("relay");
  });
});

describe("readTurnSecret", () => {
  it("reads one line, refuses a short or missing secret without printing it", () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), "parley-turn-"));
    try {
      const file = path.join(dir, "s");
      writeFileSync(file, `${SECRET}\n`);
      expect(readTurnSecret(file)).toBe(SECRET);
      writeFileSync(file, "short-secret\n");
      expect(() => readTurnSecret(file)).toThrow(/at least 32 characters/);
      expect(() => readTurnSecret(file)).not.toThrow(/short-secret/);
      expect(() => readTurnSecret(path.join(dir, "missing"))).toThrow(/cannot read/);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
