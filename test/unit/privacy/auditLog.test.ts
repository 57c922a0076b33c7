// The audit log's writer: record() never waits for the store, events go in batches, the queue is
// bounded (drops counted and logged, never silent), a failed write is tried again with its events
// kept, stop() writes what is left, and remote users are pseudonymised when configured.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { AuditLog } from "../../../appservice/src/privacy/auditLog.ts";
import { PSEUDONYM_PREFIX, UserIds } from "../../../appservice/src/privacy/userIds.ts";
import type { AuditEvent } from "../../../appservice/src/store/store.ts";

class FakeStore {
  batches: AuditEvent[][] = [];
  fail = 0;
  gate: Promise<void> | undefined;
  async appendAudit(events: readonly AuditEvent[]): Promise<void> {
    await this.gate;
    if (this.fail > 0) {
      this.fail--;
      throw new Error("disk full");
    }
    this.batches.push([...events]);
  }
  get events(): AuditEvent[] {
    return this.batches.flat();
  }
}

let store: FakeStore;
const clock = { now: () => 42 };
const make = (over: Partial<{ maxQueued: number; batchSize: number; flushMs: number }> = {}, ids = new UserIds("example.org", undefined)) =>
  new AuditLog({ maxQueued: 100, batchSize: 10, flushMs: 50, ...over }, { store, clock, ids });

beforeEach(() => {
  store = new FakeStore();
  vi.useFakeTimers();
});
afterEach(() => vi.useRealTimers());

describe("audit log", () => {
  it("queues without touching the store, then writes in batches on the timer or when a batch is full", async () => {
    const log = make({ batchSize: 3 });
    log.record({ action: "call_join", roomId: "!r:example.org", actor: "@a:example.org" });
    log.record({ action: "call_join", roomId: "!r:example.org", actor: "@b:example.org" });
    expect(store.batches).toEqual([]);
    expect(log.queued).toBe(2);
    await vi.advanceTimersByTimeAsync(50);
    expect(store.batches.map((b) => b.length)).toEqual([2]);
    expect(store.events[0]).toEqual({ at: 42, action: "call_join", roomId: "!r:example.org", callId: null, actor: "@a:example.org", target: null, outcome: null, details: null });
    for (let i = 0; i < 7; i++) log.record({ action: "call_leave", actor: `@u${i}:example.org` });
    await vi.advanceTimersByTimeAsync(0);
    await vi.advanceTimersByTimeAsync(50);
    expect(store.batches.map((b) => b.length)).toEqual([2, 3, 3, 1]);
  });

  it("drops past the bound, counted and logged, and keeps the rest", async () => {
    const log = make({ maxQueued: 5, batchSize: 100 });
    for (let i = 0; i < 8; i++) log.record({ action: "call_join", actor: `@u${i}:example.org` });
    expect(log.dropped).toBe(3);
    await log.flush();
    expect(store.events.map((e) => e.actor)).toEqual([0, 1, 2, 3, 4].map((i) => `@u${i}:example.org`));
  });

  it("a failed write keeps its events and is tried again; stop() writes what is left", async () => {
    const log = make();
    store.fail = 1;
    log.record({ action: "admit", actor: "@h:example.org", target: "@x:other.example", outcome: "ok" });
    await vi.advanceTimersByTimeAsync(50);
    expect(store.batches).toEqual([]);
    expect(log.queued).toBe(1);
    await vi.advanceTimersByTimeAsync(1000);
    expect(store.events.map((e) => e.action)).toEqual(["admit"]);
    expect(log.dropped).toBe(0);

    log.record({ action: "deny", actor: "@h:example.org", target: "@y:other.example" });
    await log.stop();
    expect(store.events.map((e) => e.action)).toEqual(["admit", "deny"]);
    log.record({ action: "late" });
    expect(log.dropped).toBe(1);
  });

  it("a failed write finding the queue full counts what it cannot keep", async () => {
    const log = make({ maxQueued: 3, batchSize: 3 });
    let open!: () => void;
    store.gate = new Promise((r) => (open = r));
    store.fail = 1;
    for (let i = 0; i < 3; i++) log.record({ action: "call_join", actor: `@u${i}:example.org` });
    await vi.advanceTimersByTimeAsync(0); // the batch of 3 is being written
    for (let i = 3; i < 5; i++) log.record({ action: "call_join", actor: `@u${i}:example.org` });
    open();
    await vi.advanceTimersByTimeAsync(0);
    // 2 queued meanwhile, 1 of the failed batch fits back: 2 dropped.
    expect(log.dropped).toBe(2);
    await log.stop();
    expect(store.events.map((e) => e.actor)).toEqual(["@u0:example.org", "@u3:example.org", "@u4:example.org"]);
  });

  it("records remote users under a keyed pseudonym when configured, the institution's users as they are", async () => {
    const log = make({}, new UserIds("example.org", "s".repeat(32)));
    log.record({ action: "admit", actor: "@host:example.org", target: "@bob:other.example" });
    await log.flush();
    const [e] = store.events;
    expect(e!.actor).toBe("@host:example.org");
    expect(e!.target).toMatch(new RegExp(`^${PSEUDONYM_PREFIX.replace(/[~]/g, "\\~")}[A-Za-z0-9_-]{32}$`));
    // Same key, same pseudonym; another key, another.
    expect(new UserIds("example.org", "s".repeat(32)).recorded("@bob:other.example")).toBe(e!.target);
    expect(new UserIds("example.org", "t".repeat(32)).recorded("@bob:other.example")).not.toBe(e!.target);
  });
});
