import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { callEndReason, observedCallStore, type CallSources } from "../../../appservice/src/http/callMetrics.ts";
import { seatEnd } from "../../../appservice/src/calls/callSeats.ts";
import { TAKEN_OVER } from "../../../appservice/src/calls/callService.ts";
import { createMetrics, eventTypeLabel, type Metrics } from "../../../appservice/src/http/metrics.ts";
import { guestRefusalLabel } from "../../../appservice/src/app/guests.ts";
import { SqliteStore } from "../../../appservice/src/store/sqlite.ts";
import type { CallRecord, NewCall } from "../../../appservice/src/store/store.ts";

let metrics: Metrics;
let dir: string;
let store: SqliteStore;

beforeEach(() => {
  metrics = createMetrics();
  dir = mkdtempSync(path.join(os.tmpdir(), "parley-metrics-"));
  store = new SqliteStore(path.join(dir, "p.db"));
});
afterEach(() => {
  store.close();
  rmSync(dir, { recursive: true, force: true });
});

/** The value of one sample, as a scrape shows it. */
async function sample(name: string, labels: Record<string, string> = {}): Promise<number | undefined> {
  const json = await metrics.registry.getMetricsAsJSON();
  for (const m of json) {
    for (const v of m.values as { metricName?: string; labels: Record<string, string | number>; value: number }[]) {
      if ((v.metricName ?? m.name) !== name) continue;
      if (Object.entries(labels).every(([k, want]) => String(v.labels[k]) === want)) return v.value;
    }
  }
  return undefined;
}

const newCall = (roomId: string, origin: "alias" | "command", startedAt: number): NewCall => ({
  callId: `call-${roomId}`, roomId, origin, startedBy: "@a:a.example", startedAt, startEventId: origin === "command" ? "$start" : null, widgetId: null,
});

describe("call starts and ends, counted as the store records them", () => {
  it("counts starts by origin, ends by origin and reason, and the duration; a start refused or an end of nothing counts nothing", async () => {
    const s = observedCallStore(store, metrics.calls);
    await s.startCall(newCall("!a:a.example", "alias", 1_000));
    await s.startCall(newCall("!a:a.example", "alias", 2_000)); // the room has a call already
    await s.startCall(newCall("!b:a.example", "command", 0));
    await s.startCall(newCall("!c:a.example", "command", 0));
    await s.endCall("!a:a.example", { by: "idle", at: 61_000, eventId: null });
    await s.endCall("!b:a.example", { by: "@a:a.example", at: 600_000, eventId: "$end" });
    await s.endCall("!c:a.example", { by: "@host:a.example", at: 30_000, eventId: null });
    await s.endCall("!nothing:a.example", { by: "idle", at: 0, eventId: null });
    expect(await sample("parley_calls_started_total", { origin: "alias" })).toBe(1);
    expect(await sample("parley_calls_started_total", { origin: "command" })).toBe(2);
    expect(await sample("parley_calls_ended_total", { origin: "alias", reason: "idle" })).toBe(1);
    expect(await sample("parley_calls_ended_total", { origin: "command", reason: "room_event" })).toBe(1);
    expect(await sample("parley_calls_ended_total", { origin: "command", reason: "host" })).toBe(1);
    expect(await sample("parley_call_duration_seconds_sum", { origin: "alias" })).toBe(60);
    expect(await sample("parley_call_duration_seconds_sum", { origin: "command" })).toBe(630);
    // Everything else reaches the store itself, its answers unchanged.
    expect(await s.activeCalls()).toEqual([]);
    expect((await s.lastCall("!b:a.example"))?.endedBy).toBe("@a:a.example");
    expect(s.activeCalls).toBe(s.activeCalls); // bound once, not on every access
  });

  it("observes a store that answers with promises once they resolve", async () => {
    const record = (c: NewCall): CallRecord => ({ ...c, endedAt: null, endedBy: null, endEventId: null, sfu: null });
    const asyncStore = {
      startCall: async (c: NewCall) => record(c),
      endCall: async (_roomId: string, e: { by: string; at: number; eventId: string | null }) => ({ ...record(newCall("!x:a.example", "alias", 0)), endedAt: e.at, endedBy: e.by }),
      failing: async () => Promise.reject(new Error("down")),
    };
    const s = observedCallStore(asyncStore, metrics.calls);
    expect((await s.startCall(newCall("!x:a.example", "alias", 0))).roomId).toBe("!x:a.example");
    await s.endCall("!x:a.example", { by: "idle", at: 120_000, eventId: null });
    await expect(s.failing()).rejects.toThrow("down");
    expect(await sample("parley_calls_started_total", { origin: "alias" })).toBe(1);
    expect(await sample("parley_calls_ended_total", { origin: "alias", reason: "idle" })).toBe(1);
    expect(await sample("parley_call_duration_seconds_sum", { origin: "alias" })).toBe(120);
  });

  it("names an end's reason from the record", () => {
    expect(callEndReason({ endedBy: "idle", endEventId: null })).toBe("idle");
    expect(callEndReason({ endedBy: "@a:a.example", endEventId: "$e" })).toBe("room_event");
    expect(callEndReason({ endedBy: "@a:a.example", endEventId: null })).toBe("host");
  });
});

describe("gauges read at scrape time", () => {
  it("read nothing before the call parts are bound, then what the accessors say at each scrape", async () => {
    expect(await sample("parley_calls_active")).toBe(0);
    expect(await sample("parley_janus_up", { node: "janus-1" })).toBeUndefined();
    const now: Omit<CallSources, "seatsPerCall" | "janusNodes"> & { seats: number[]; up: boolean } = {
      occupiedCalls: () => 2, largeCalls: () => 1, waitingKnocks: () => 3, sockets: () => 7, standbySockets: () => 2, seats: [1, 4, 12], up: true,
    };
    metrics.calls.watch({
      ...now,
      seatsPerCall: () => now.seats,
      janusNodes: () => [{ id: "janus-1", up: now.up, sessions: 5, handles: 9, rooms: 2 }],
    });
    expect(await sample("parley_calls_active")).toBe(2);
    expect(await sample("parley_participant_sessions")).toBe(17);
    expect(await sample("parley_large_calls")).toBe(1);
    expect(await sample("parley_lobby_waiting")).toBe(3);
    expect(await sample("parley_signalling_sockets")).toBe(7);
    expect(await sample("parley_signalling_standby_sockets")).toBe(2);
    expect(await sample("parley_janus_up", { node: "janus-1" })).toBe(1);
    expect(await sample("parley_janus_sessions", { node: "janus-1" })).toBe(5);
    expect(await sample("parley_janus_handles", { node: "janus-1" })).toBe(9);
    expect(await sample("parley_janus_rooms", { node: "janus-1" })).toBe(2);
    expect(await sample("parley_call_sessions_count")).toBe(3);
    expect(await sample("parley_call_sessions_bucket", { le: "3" })).toBe(1);
    expect(await sample("parley_call_sessions_bucket", { le: "15" })).toBe(3);
    // A snapshot, not a sum over scrapes: the next scrape shows the calls of then.
    now.seats = [2];
    now.up = false;
    expect(await sample("parley_call_sessions_count")).toBe(1);
    expect(await sample("parley_participant_sessions")).toBe(2);
    expect(await sample("parley_janus_up", { node: "janus-1" })).toBe(0);
  });
});

describe("seat ends", () => {
  it("name a session's end reason from its errcode and who ended it", () => {
    expect(seatEnd(TAKEN_OVER)).toBe("taken_over");
    expect(seatEnd({ errcode: "M_UNKNOWN_TOKEN", message: "session expired" })).toBe("expired");
    expect(seatEnd({ errcode: "M_NOT_FOUND", message: "the call has ended", by: "@h:a.example" })).toBe("call_ended");
    expect(seatEnd({ errcode: "M_FORBIDDEN", message: "membership is now leave" })).toBe("left_room");
    expect(seatEnd({ errcode: "M_FORBIDDEN", message: "membership is now ban", by: "@h:a.example" })).toBe("removed");
  });
});

describe("labels from what others send", () => {
  it("an event's type, or a guest's refused path, is a label only when Parley knows it", () => {
    expect(eventTypeLabel("m.room.member")).toBe("m.room.member");
    expect(eventTypeLabel("org.parley.call")).toBe("org.parley.call");
    expect(eventTypeLabel("com.example.anything.at.all")).toBe("other");
    expect(eventTypeLabel(42)).toBe("other");
    expect(guestRefusalLabel("sync")).toBe("sync");
    expect(guestRefusalLabel("rate")).toBe("rate");
    expect(guestRefusalLabel("createRoom")).toBe("unlisted");
    expect(guestRefusalLabel("rooms/made-up-verb-1")).toBe("unlisted");
  });
});
