// One-time-key claims as Parley wants them (keyClaims.ts): a claim waits while encrypted to-device
// messages are taken in; a device whose claim came back without a key is claimed again after a
// second (doubling), not after Rust crypto's 15 s, and never hidden from the machine's own view of
// a failed server. Fakes of matrix-js-sdk's processor and the Olm machine: the real ones run in
// test/integration/prejoinKeys.test.ts.
import type { MatrixClient } from "matrix-js-sdk";
import { describe, expect, it, vi } from "vitest";
import { claimsAfterIncoming, claimsRetrySooner, EmptyClaimBackoff, type ClaimWasm } from "../../../client/src/matrix/keyClaims.ts";
import { tick } from "./fakes.ts";

describe("claimsAfterIncoming (a claim waits for the encrypted to-device messages being taken in)", () => {
  /** A crypto whose sync processing ends when the test says, and whose claims are recorded. */
  function claimingClient() {
    const order: string[] = [];
    const finishers: (() => void)[] = [];
    const claims = { ensureSessionsForUsers: vi.fn(async (_logger: unknown, users: unknown[]) => void order.push(`claim ${String(users)}`)) };
    const crypto = {
      keyClaimManager: claims,
      processSyncChanges: vi.fn((changes: { toDeviceEvents: { type: string }[] }) => {
        order.push(`sync ${changes.toDeviceEvents.map((e) => e.type).join(",") || "-"}`);
        return new Promise<unknown[]>((r) => finishers.push(() => (order.push("sync done"), r([]))));
      }),
    };
    const client = { getCrypto: () => crypto } as unknown as MatrixClient;
    return { client, crypto, claims, order, finish: () => finishers.shift()!() };
  }
  const logger = {} as never;

  it("holds a claim until the sync carrying an encrypted message is taken in", async () => {
    const { client, crypto, claims, order, finish } = claimingClient();
    const original = claims.ensureSessionsForUsers;
    claimsAfterIncoming(client);
    const synced = crypto.processSyncChanges({ toDeviceEvents: [{ type: "m.room.encrypted" }] });
    const claimed = claims.ensureSessionsForUsers(logger, ["@host:a"]);
    await tick();
    expect(order).toEqual(["sync m.room.encrypted"]);
    finish();
    await synced;
    await claimed;
    expect(order).toEqual(["sync m.room.encrypted", "sync done", "claim @host:a"]);
    expect(original).toHaveBeenCalledTimes(1);
  });

  it("does not hold a claim for a sync without encrypted to-device messages, nor once the sync is in", async () => {
    const { client, crypto, claims, order, finish } = claimingClient();
    claimsAfterIncoming(client);
    void crypto.processSyncChanges({ toDeviceEvents: [] });
    void crypto.processSyncChanges({ toDeviceEvents: [{ type: "m.dummy" }] });
    await claims.ensureSessionsForUsers(logger, ["@a:a"]);
    expect(order).toEqual(["sync -", "sync m.dummy", "claim @a:a"]);
    finish();
    finish();
    const encrypted = crypto.processSyncChanges({ toDeviceEvents: [{ type: "m.room.encrypted" }] });
    finish();
    await encrypted;
    await claims.ensureSessionsForUsers(logger, ["@b:a"]);
    expect(order.at(-1)).toBe("claim @b:a");
  });

  it("holds a claim at most the wait given: a sync that never ends does not stop claims", async () => {
    vi.useFakeTimers();
    try {
      const { client, crypto, claims, order } = claimingClient();
      claimsAfterIncoming(client, undefined, 1000);
      void crypto.processSyncChanges({ toDeviceEvents: [{ type: "m.room.encrypted" }] });
      const claimed = claims.ensureSessionsForUsers(logger, ["@host:a"]);
      await vi.advanceTimersByTimeAsync(999);
      expect(order).toEqual(["sync m.room.encrypted"]);
      await vi.advanceTimersByTimeAsync(1);
      await claimed;
      expect(order).toEqual(["sync m.room.encrypted", "claim @host:a"]);
    } finally {
      vi.useRealTimers();
    }
  });

  it("a failed sync processing still lets the claim go, and its failure reaches the sync", async () => {
    const claim = vi.fn(async (_logger: unknown, _users: unknown[]) => undefined);
    const claims = { ensureSessionsForUsers: claim };
    const crypto = { keyClaimManager: claims, processSyncChanges: vi.fn((_changes: unknown) => Promise.reject(new Error("store closed"))) };
    claimsAfterIncoming({ getCrypto: () => crypto } as unknown as MatrixClient);
    const synced = crypto.processSyncChanges({ toDeviceEvents: [{ type: "m.room.encrypted" }] } as never);
    const claimed = claims.ensureSessionsForUsers(logger, []);
    await expect(synced).rejects.toThrow("store closed");
    await claimed;
    expect(claim).toHaveBeenCalledTimes(1);
  });
});

describe("claimsRetrySooner (a device whose claim came back without a key is claimed again soon)", () => {
  const CLAIM = 2;
  class FakeClaimRequest {
    readonly type = CLAIM;
    readonly id: string;
    readonly body: string;
    constructor(id: string, body: string) {
      this.id = id;
      this.body = body;
    }
  }
  const wasm: ClaimWasm = { KeysClaimRequest: FakeClaimRequest, RequestType: { KeysClaim: CLAIM } };
  const limits = { firstMs: 1000, maxMs: 8000, devices: 100 };

  /**
   * matrix-js-sdk's processor and the machine, faked: a claim is answered with a key for each
   * device in `withKeys` (else `answer` decides), and the answer handed to the machine as the
   * real processor does (through the machine's method as it is at that moment).
   */
  function crypto(withKeys: Set<string>, answer?: (asked: Record<string, Record<string, string>>) => unknown) {
    let now = 0;
    const marked: { id: string; type: number; response: string }[] = [];
    const sent: { id: string; devices: string[] }[] = [];
    const machine = { markRequestAsSent: vi.fn(async (id: string, type: number, response: string) => void marked.push({ id, type, response })) };
    const inner = vi.fn(async (request: { id: string; type: number; body: string }) => {
      if (request.type !== CLAIM) return void (await machine.markRequestAsSent(request.id, request.type, "{}"));
      const asked = (JSON.parse(request.body) as { one_time_keys: Record<string, Record<string, string>> }).one_time_keys;
        sent.push({ id: request.id, devices: Object.entries(asked).flatMap(([u, ds]) => Object.keys(ds).map((d) => `${u}|${d}`)) });
        const keys: Record<string, Record<string, unknown>> = {};
        for (const [u, ds] of Object.entries(asked)) for (const d of Object.keys(ds)) if (withKeys.has(`${u}|${d}`)) (keys[u] ??= {})[d] = { "signed_curve25519:AAAA": { key: "k" } };
      await machine.markRequestAsSent(request.id, request.type, JSON.stringify(answer?.(asked) ?? { one_time_keys: keys, failures: {} }));
    });
    const processor = { makeOutgoingRequest: inner as (request: { id: string; type: number; body: string }) => Promise<void> };
    const client = { getCrypto: () => ({ olmMachine: machine, outgoingRequestProcessor: processor }) } as unknown as MatrixClient;
    const backoff = claimsRetrySooner(client, wasm, undefined, limits, { now: () => now });
    const claim = (id: string, devices: Record<string, string[]>) => {
      const oneTimeKeys = Object.fromEntries(Object.entries(devices).map(([u, ds]) => [u, Object.fromEntries(ds.map((d) => [d, "signed_curve25519"]))]));
      return processor.makeOutgoingRequest(new FakeClaimRequest(id, JSON.stringify({ one_time_keys: oneTimeKeys, timeout: 10_000 })));
    };
    return { backoff, claim, marked, sent, machine, processor, inner, advance: (ms: number) => (now += ms), withKeys };
  }

  it("a claim that brings a key for every device reaches the machine under its own id", async () => {
    const c = crypto(new Set(["@erin:b|ERIN", "@bob:b|BOB"]));
    await c.claim("r1", { "@erin:b": ["ERIN"], "@bob:b": ["BOB"] });
    expect(c.sent).toEqual([{ id: "r1", devices: ["@erin:b|ERIN", "@bob:b|BOB"] }]);
    expect(c.marked.map((m) => m.id)).toEqual(["r1"]);
  });

  it("a device claimed before its one-time keys went up is claimed again after a second, not 15 s; the machine records no failure for it", async () => {
    const c = crypto(new Set(["@bob:b|BOB"]));
    await c.claim("r1", { "@erin:b": ["ERIN"], "@bob:b": ["BOB"] });
    // The answer reaches the machine (Bob's session is made from it), under another id: the
    // machine pairs an answer with the claim it stashed to find the devices it lacks.
    expect(c.marked).toHaveLength(1);
    expect(c.marked[0]!.id).not.toBe("r1");
    expect(JSON.parse(c.marked[0]!.response).one_time_keys["@bob:b"].BOB).toBeDefined();
    expect(c.backoff!.waiting("@erin:b", "ERIN")).toBe(true);

    // Within the second: a claim asked for Erin alone goes nowhere.
    c.advance(999);
    await c.claim("r2", { "@erin:b": ["ERIN"] });
    expect(c.sent.map((s) => s.id)).toEqual(["r1"]);
    // Her keys go up; a second after the empty claim she is claimed again and the session made.
    c.withKeys.add("@erin:b|ERIN");
    c.advance(1);
    await c.claim("r3", { "@erin:b": ["ERIN"] });
    expect(c.sent.at(-1)).toEqual({ id: "r3", devices: ["@erin:b|ERIN"] });
    expect(c.marked.at(-1)!.id).toBe("r3");
    expect(c.backoff!.waiting("@erin:b", "ERIN")).toBe(false);
  });

  it("a device still without a key waits twice as long after each claim, up to the ceiling", async () => {
    const c = crypto(new Set());
    const waits: number[] = [];
    for (let i = 0; i < 6; i++) {
      await c.claim(`r${i}`, { "@eve:b": ["EVE"] });
      expect(c.sent).toHaveLength(i + 1); // each claim sent: the last wait was over
      let waited = 0;
      for (; c.backoff!.waiting("@eve:b", "EVE"); waited += 250) c.advance(250);
      waits.push(waited);
    }
    expect(waits).toEqual([1000, 2000, 4000, 8000, 8000, 8000]);
  });

  it("a device left out of a claim (still waiting) is hidden from the machine too, and its wait is not lengthened", async () => {
    const c = crypto(new Set(["@bob:b|BOB"]));
    await c.claim("r1", { "@erin:b": ["ERIN"] });
    c.advance(500);
    await c.claim("r2", { "@erin:b": ["ERIN"], "@bob:b": ["BOB"] });
    // Sent for Bob alone, same id; answered fully, yet the machine gets another id: it stashed
    // Erin in the claim and would count her as lacking a key.
    expect(c.sent.at(-1)).toEqual({ id: "r2", devices: ["@bob:b|BOB"] });
    expect(c.marked.at(-1)!.id).not.toBe("r2");
    c.advance(500);
    expect(c.backoff!.waiting("@erin:b", "ERIN")).toBe(false);
  });

  it("a device on a server the claim could not reach is the machine's to back off (its per-server failures), not ours", async () => {
    const c = crypto(new Set(), () => ({ one_time_keys: {}, failures: { b: { errcode: "M_UNKNOWN", error: "unreachable" } } }));
    await c.claim("r1", { "@erin:b": ["ERIN"] });
    expect(c.marked.map((m) => m.id)).toEqual(["r1"]);
    expect(c.backoff!.waiting("@erin:b", "ERIN")).toBe(false);
  });

  it("other requests, and an answer the machine gets outside a claim, pass through untouched", async () => {
    const c = crypto(new Set());
    const query = { id: "q1", type: 1, body: "{}" };
    await c.processor.makeOutgoingRequest(query);
    expect(c.inner).toHaveBeenCalledWith(query);
    expect(c.inner.mock.calls[0]![0]).toBe(query);
    await c.machine.markRequestAsSent("elsewhere", CLAIM, "{}");
    expect(c.marked.map((m) => m.id)).toEqual(["q1", "elsewhere"]);
  });

  it("does nothing without the machine's internals", () => {
    expect(claimsRetrySooner({ getCrypto: () => undefined } as unknown as MatrixClient, wasm)).toBeUndefined();
  });
});

describe("EmptyClaimBackoff", () => {
  it("remembers at most `devices` devices, forgetting the oldest first", () => {
    let now = 0;
    const b = new EmptyClaimBackoff({ firstMs: 1000, maxMs: 1000, devices: 2 }, () => now);
    b.emptied("@a:x", "A");
    b.emptied("@b:x", "B");
    b.emptied("@c:x", "C");
    expect(b.waiting("@a:x", "A")).toBe(false);
    expect(b.waiting("@b:x", "B")).toBe(true);
    expect(b.waiting("@c:x", "C")).toBe(true);
    now = 1000;
    expect(b.waiting("@c:x", "C")).toBe(false);
  });

  it("a claim that brings a key starts the device's count again", () => {
    const b = new EmptyClaimBackoff({ firstMs: 1000, maxMs: 60_000, devices: 10 }, () => 0);
    expect([b.emptied("@a:x", "A"), b.emptied("@a:x", "A")]).toEqual([1000, 2000]);
    b.claimed("@a:x", "A");
    expect(b.emptied("@a:x", "A")).toBe(1000);
  });
});
