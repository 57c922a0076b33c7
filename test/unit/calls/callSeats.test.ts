import { mkdtempSync, rmSync } from "node:fs";
import os from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import type { CallPush } from "../../../appservice/src/calls/callRoster.ts";
import { CallSeats, type CallSeatsDeps, type SeatClient } from "../../../appservice/src/calls/callSeats.ts";
import { CallService, type SessionEndReason } from "../../../appservice/src/calls/callService.ts";
import { FederationPolicy } from "../../../appservice/src/calls/policy.ts";
import type { SfuMedia, SfuMediaSession, SfuMediaSnapshot, SfuRooms } from "../../../appservice/src/calls/ports.ts";
import type { KeyDevice } from "../../../appservice/src/calls/provisionedKeys.ts";
import { ParleyError } from "../../../appservice/src/errors.ts";
import { SqliteStore } from "../../../appservice/src/store/sqlite.ts";
import type { SfuRoomRecord } from "../../../appservice/src/store/store.ts";
import { FIRST_LAYER } from "../../../appservice/src/calls/viewers.ts";

const ROOM = "!meeting:a.example";
const ALICE = "@alice:a.example";
const BOT = "@parley:a.example";

/** An SFU whose open() answers when the test says so; it counts what is open. */
class FakeSfu implements SfuRooms, SfuMedia {
  opened = 0;
  /** Publishers send video too, and subscriptions carry each feed's audio m-line too (else audio published, video subscribed: the older tests'). */
  audio = false;
  /** Publishers send video only (no audio m-line at all). */
  videoOnly = false;
  open_ = new Set<FakeMedia>();
  lose: ((reason: string) => void)[] = [];
  gate: Promise<void> = Promise.resolve();
  async createRoom(callId: string): Promise<SfuRoomRecord> {
    return { node: "n1", room: `room-${callId}`, secret: "s" };
  }
  async destroyRoom(): Promise<void> {}
  async roomExists(): Promise<boolean> {
    return true;
  }
  async open(_room: SfuRoomRecord, _display: string, onEnded: (reason: string) => void): Promise<SfuMediaSession> {
    this.opened++;
    await this.gate;
    const media = new FakeMedia(this, `p${this.opened}`);
    this.open_.add(media);
    this.lose.push(onEnded);
    return media;
  }
  /** Sessions the SFU still has for a restarted Parley to adopt (by feed id); others are gone. */
  adoptable = new Set<string>();
  adopted: string[] = [];
  async adopt(_room: SfuRoomRecord, _display: string, snapshot: SfuMediaSnapshot, onEnded: (reason: string) => void): Promise<SfuMediaSession> {
    if (!this.adoptable.has(snapshot.feedId)) throw new Error("no such session (458)");
    this.adopted.push(snapshot.feedId);
    const media = new FakeMedia(this, snapshot.feedId);
    this.open_.add(media);
    this.lose.push(onEnded);
    return media;
  }
}

class FakeMedia implements SfuMediaSession {
  readonly feedId: string;
  readonly trickles: unknown[] = [];
  /** Listening for the subscription's connection (`up()` tells them, as Janus's webrtcup). */
  private readonly upListeners = new Set<() => void>();
  onSubscriberUp(l: () => void) {
    this.upListeners.add(l);
    return () => void this.upListeners.delete(l);
  }
  up() {
    for (const l of [...this.upListeners]) l();
  }
  private readonly sfu: FakeSfu;
  constructor(sfu: FakeSfu, feedId: string) {
    this.sfu = sfu;
    this.feedId = feedId;
  }
  /** What was asked of this SFU session, in order. */
  readonly calls: string[] = [];
  snapshot(): SfuMediaSnapshot {
    return { session: 7, feedId: this.feedId };
  }
  async publish(_sdp: string, opts: { onUp: () => void }) {
    this.calls.push("publish");
    setTimeout(opts.onUp, 0);
    const video = this.sfu.audio || this.sfu.videoOnly ? [{ mid: "1", kind: "video" as const }] : [];
    const audio = this.sfu.videoOnly ? [] : [{ mid: "0", kind: "audio" as const }];
    return { answerSdp: "v=0 answer", streams: [...audio, ...video] };
  }
  /** Feeds of each subscribe, in order; `noSuchFeed` makes the next one fail as Janus does. */
  readonly subscribed: string[][] = [];
  readonly substreams: (number | undefined)[] = [];
  noSuchFeed = 0;
  /** What the subscription holds now, by its mids (a subscribe adds to it). */
  readonly subscription = new Map<string, { feed: string | number; mid: string; kind: "audio" | "video" }>();
  async subscribe(feeds: { feed: string | number; mid?: string | undefined; substream?: number | undefined }[], opts?: { paused?: boolean }) {
    this.calls.push(opts?.paused ? "subscribe paused" : "subscribe");
    this.subscribed.push(feeds.map((f) => (f.mid === undefined ? String(f.feed) : `${f.feed}/${f.mid}`)));
    this.substreams.push(...feeds.map((f) => f.substream));
    if (this.noSuchFeed > 0 && this.noSuchFeed--) throw new ParleyError("M_NOT_FOUND", "subscribing: that feed is no longer published");
    // A publisher's mid 0 is its audio, 1 its video (publish); a whole feed is both (audio if `audio`).
    const kinds = (mid: string | undefined): ("audio" | "video")[] => (mid === "0" ? ["audio"] : mid === "1" ? ["video"] : this.sfu.audio ? ["audio", "video"] : ["video"]);
    for (const f of feeds) for (const kind of kinds(f.mid)) this.subscription.set(`${kind[0]}-${f.feed}`, { feed: f.feed, mid: `${kind[0]}-${f.feed}`, kind });
    return { offerSdp: "v=0 offer", streams: [...this.subscription.values()] };
  }
  /** Each configure of subscribed m-lines (pause, resume, layer), as `mid:send`. */
  readonly configured: string[] = [];
  async configureVideos(changes: { mid: string; send?: boolean }[]) {
    this.configured.push(...changes.map((c) => `${c.mid}:${c.send}`));
  }
  async unsubscribe() {
    return { streams: [] };
  }
  /** Subscriptions made ahead (at hello), by their feeds and layers. */
  readonly prepared: string[][] = [];
  prepareSubscription(feeds: { feed: string | number; substream?: number | undefined }[]) {
    this.prepared.push(feeds.map((f) => `${f.feed}/${f.substream}`));
  }
  readonly answers: string[] = [];
  async answer(sdp: string) {
    this.calls.push("answer");
    this.answers.push(sdp);
  }
  async moderate(kind: string, blocked: boolean) {
    this.calls.push(`moderate ${kind} ${blocked ? "block" : "unblock"}`);
  }
  async trickle(_t: string, c: unknown) {
    this.trickles.push(c);
  }
  async mute() {}
  async close() {
    this.sfu.open_.delete(this);
  }
}

class Client implements SeatClient {
  readonly pushes: CallPush[] = [];
  readonly endings: SessionEndReason[] = [];
  push(e: CallPush) {
    this.pushes.push(e);
  }
  ended(r: SessionEndReason) {
    this.endings.push(r);
  }
}

let dir: string;
let store: SqliteStore;
let sfu: FakeSfu;
let calls: CallService;
let seats: CallSeats;
let roomState: Record<string, unknown> | undefined;
const SEAT_BASICS = { clock: { now: () => Date.now() }, moderation: { reactions: { perMinute: 30, burst: 5 } } };
let keyLog: string[];
let ids = 0;

function makeSeats(opts: { keys?: boolean } & Pick<CallSeatsDeps, "onSeat" | "observeE2ee"> = {}) {
  keyLog = [];
  return new CallSeats({
    ...SEAT_BASICS,
    calls,
    sfu,
    rooms: { stateEvent: async () => roomState && { sender: BOT, content: roomState } },
    keys: opts.keys === false ? undefined : {
      join: (_c: string, _r: string, _m: object, d: KeyDevice) => keyLog.push(`join ${d.deviceId}`),
      leave: () => keyLog.push("leave"),
    },
    botUserId: BOT,
    requireE2ee: true,
    ...(opts.onSeat ? { onSeat: opts.onSeat } : {}),
    ...(opts.observeE2ee ? { observeE2ee: opts.observeE2ee } : {}),
  });
}

beforeEach(async () => {
  dir = mkdtempSync(path.join(os.tmpdir(), "parley-seats-"));
  store = new SqliteStore(path.join(dir, "p.db"));
  await store.claimAlias("#meet-x:a.example");
  await store.completeAlias("#meet-x:a.example", ROOM);
  sfu = new FakeSfu();
  roomState = { version: 1, api: "https://meet.a.example" };
  calls = makeCalls();
  seats = makeSeats();
});

function makeCalls(more: Partial<ConstructorParameters<typeof CallService>[1]> = {}) {
  return new CallService(
    { sessionTtlMs: 60_000, iceServers: [], sessionsPerUserPerCall: 5 },
    {
      homeserver: { resolveAlias: async () => undefined, getMembership: async () => "join" },
      store,
      policy: new FederationPolicy("a.example", []),
      verifier: { verify: async () => ({ userId: ALICE }) },
      sfu,
      clock: { now: () => 1_000 },
      ids: { callId: () => `call${++ids}`, sessionToken: () => `session-${++ids}` },
      ...more,
    },
  );
}

afterEach(async () => {
  calls.stop();
  await store.close();
  rmSync(dir, { recursive: true, force: true });
});

const session = async () => (await calls.join({ openIdToken: "t", serverName: "a.example", room: ROOM })).session;
const candidate = { candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host" };

describe("a seat", () => {
  it("takes its session over from another socket, which is ended and releases its SFU session at once", async () => {
    const token = await session();
    const [one, two] = [new Client(), new Client()];
    const first = await seats.open(one, token, "DEV");
    await seats.media.trickle(first.seat, "publisher", candidate);
    expect(sfu.open_.size).toBe(1);
    const firstMedia = [...sfu.open_][0]!;
    const second = await seats.open(two, token, "DEV");
    expect(one.endings).toEqual([{ errcode: "M_FORBIDDEN", message: "session taken over by another connection" }]);
    expect(sfu.open_.has(firstMedia)).toBe(false);
    // Every media message re-checks the seat: the first one is refused, the second one served.
    await expect(seats.media.trickle(first.seat, "publisher", candidate)).rejects.toMatchObject({ errcode: "M_FORBIDDEN" });
    await seats.media.trickle(second.seat, "publisher", candidate);
    expect(sfu.open_.size).toBe(1);
  });

  it("tells the metrics of each seat opened and how each ended, and of each end-to-end encryption check", async () => {
    const seatEvents: string[] = [];
    const checks: string[] = [];
    seats = makeSeats({ onSeat: (what) => seatEvents.push(what), observeE2ee: (role, outcome) => checks.push(`${role} ${outcome}`) });
    const token = await session();
    await seats.open(new Client(), token, "DEV");
    await seats.open(new Client(), token, "DEV");
    const third = await seats.open(new Client(), await session(), "DEV2");
    const fourth = await seats.open(new Client(), await session(), "DEV3");
    expect(seats.seatsPerCall()).toEqual([3]);
    await expect(seats.media.publish(fourth.seat, { sdp: "v=0", simulcast: false, e2ee: undefined })).rejects.toMatchObject({ errcode: "M_FORBIDDEN" });
    await seats.media.publish(fourth.seat, { sdp: "v=0", simulcast: false, e2ee: true });
    seats.closed(third.seat);
    seats.closed(third.seat);
    calls.evict(ROOM, ALICE, "ban", { by: "@host:a.example" });
    expect(seatEvents).toEqual(["joined", "taken_over", "joined", "joined", "joined", "socket_closed", "removed", "removed"]);
    expect(checks).toEqual(["publish refused", "publish encrypted"]);
    expect(seats.seatsPerCall()).toEqual([]);
    await seats.open(new Client(), await session(), "DEV4");
    await calls.endCall((await store.activeCall(ROOM))!);
    calls.evict(ROOM, ALICE, "leave");
    expect(seatEvents.slice(8)).toEqual(["joined", "call_ended"]);
    await seats.open(new Client(), await session(), "DEV5");
    calls.evict(ROOM, ALICE, "leave");
    expect(seatEvents.slice(10)).toEqual(["joined", "left_room"]);
  });

  it("opens one SFU session for a burst of first messages", async () => {
    const { seat } = await seats.open(new Client(), await session(), "DEV");
    let release!: () => void;
    sfu.gate = new Promise((r) => (release = r));
    const burst = Array.from({ length: 50 }, () => seats.media.trickle(seat, "subscriber", candidate));
    release();
    await Promise.all(burst);
    expect(sfu.opened).toBe(1);
    expect([...sfu.open_][0]!.trickles).toHaveLength(50);
  });

  it("releases an SFU session that was still opening when the seat ended", async () => {
    const token = await session();
    const { seat } = await seats.open(new Client(), token, "DEV");
    let release!: () => void;
    sfu.gate = new Promise((r) => (release = r));
    const pending = seats.media.trickle(seat, "publisher", candidate);
    calls.evict(ROOM, ALICE, "kick");
    release();
    await expect(pending).rejects.toMatchObject({ errcode: "M_FORBIDDEN" });
    expect(sfu.open_.size).toBe(0);
  });

  it("ends on the call's end: client told, SFU session and key membership released", async () => {
    const client = new Client();
    const { seat } = await seats.open(client, await session(), "DEV");
    await seats.media.publish(seat, { sdp: "v=0", simulcast: false, e2ee: true });
    await calls.endCall((await store.activeCall(ROOM))!);
    expect(client.endings).toEqual([{ errcode: "M_NOT_FOUND", message: "the call has ended" }]);
    expect(sfu.open_.size).toBe(0);
  });

  it("refuses media that does not declare end-to-end encryption, before the SFU", async () => {
    const { seat } = await seats.open(new Client(), await session(), "DEV");
    await expect(seats.media.publish(seat, { sdp: "v=0", simulcast: false, e2ee: undefined })).rejects.toMatchObject({ errcode: "M_FORBIDDEN" });
    await expect(seats.media.subscribe(seat, [{ feed: "p1" }], false)).rejects.toMatchObject({ errcode: "M_FORBIDDEN" });
    // The SFU session opened at hello; nothing was published or subscribed in it.
    await vi.waitFor(() => expect(sfu.opened).toBe(1));
    expect([...sfu.open_][0]!.calls).toEqual([]);
  });

  it("opens the SFU session at hello and shows the newcomer the call, before it asks for anything", async () => {
    const [a, b] = [new Client(), new Client()];
    const first = await seats.open(a, await session(), "DEVA");
    await seats.media.publish(first.seat, { sdp: "v=0", simulcast: false, e2ee: true });
    await vi.waitFor(() => expect(a.pushes.at(-1)).toMatchObject({ type: "participants", participants: [{ streams: [{ mid: "0" }] }] }));
    await seats.open(b, await session(), "DEVB");
    await vi.waitFor(() => expect(sfu.opened).toBe(2));
    const seen = b.pushes.filter((p) => p.type === "participants").at(-1);
    expect(seen).toMatchObject({ participants: [{ device_id: "DEVA", streams: [{ mid: "0" }] }, { device_id: "DEVB", streams: [] }] });
    // ...and the SFU makes the subscription the newcomer will ask for: every announced feed, on the first layer.
    const [mediaA, mediaB] = [...sfu.open_] as [FakeMedia, FakeMedia];
    expect(mediaA.prepared).toEqual([]);
    expect(mediaB.prepared).toEqual([[`${mediaA.feedId}/${FIRST_LAYER}`]]);
  });

  it("a session granted ahead (the pre-join's) is admitted again at its hello; refused, it gets no seat and no SFU session", async () => {
    const admissions: string[] = [];
    let locked = false;
    calls.stop();
    calls = makeCalls({
      admission: async (_room, user, inCall, ahead) => {
        admissions.push(`${user} inCall=${inCall} ahead=${ahead}`);
        if (locked && !inCall) throw new ParleyError("M_FORBIDDEN", "this meeting is locked");
      },
    });
    seats = makeSeats();
    const early = (await calls.join({ openIdToken: "t", serverName: "a.example", room: ROOM, ahead: true })).session;
    const plain = await session();
    locked = true;
    const client = new Client();
    await expect(seats.open(client, early, "DEV")).rejects.toMatchObject({ errcode: "M_FORBIDDEN", message: "this meeting is locked" });
    expect(sfu.opened).toBe(0);
    expect(admissions).toEqual([`${ALICE} inCall=false ahead=true`, `${ALICE} inCall=false ahead=false`, `${ALICE} inCall=false ahead=false`]);
    await seats.open(client, plain, "DEV"); // granted at Join: decided then
    expect(admissions).toHaveLength(3);
  });

  it("a second publish starts over on a fresh SFU session; a lost one is forgotten and the client told to renegotiate", async () => {
    const client = new Client();
    const { seat } = await seats.open(client, await session(), "DEV");
    await seats.media.publish(seat, { sdp: "v=0", simulcast: false, e2ee: true });
    await seats.media.publish(seat, { sdp: "v=0", simulcast: false, e2ee: true });
    expect(sfu.opened).toBe(2);
    expect(sfu.open_.size).toBe(1);
    sfu.lose.at(-1)!("media session lost");
    await new Promise((r) => setTimeout(r, 0));
    expect(sfu.open_.size).toBe(0);
    expect(client.pushes.at(-1)).toEqual({ type: "renegotiate", reason: "media session lost" });
  });
});

describe("a pre-join's subscription (docs/join.md, seventeenth pass)", () => {
  /** Alice's first device in the call, publishing, announced. */
  async function publisherIn() {
    const client = new Client();
    const { seat } = await seats.open(client, await session(), "DEVA");
    await seats.media.publish(seat, { sdp: "v=0", simulcast: false, e2ee: true });
    await vi.waitFor(() => expect(client.pushes.at(-1)).toMatchObject({ type: "participants", participants: [{ streams: [{ mid: "0" }, { mid: "1" }] }] }));
    return { client, seat, media: [...sfu.open_][0]! };
  }
  const live = () => true;
  /** Alice publishing, and a pre-join's subscription to her feed, made (not answered): its SFU session is `early`. */
  async function preparedFor() {
    const host = await publisherIn();
    const token = await session();
    const prepared = (await seats.prepare(token, live))!;
    return { host, token, prepared, early: [...sfu.open_].at(-1)! };
  }
  beforeEach(() => {
    sfu.audio = true;
    sfu.videoOnly = false;
  });

  it("is made paused for every announced feed's audio, outside the roster; answered, the real hello seats it on the same SFU session and it forwards", async () => {
    const host = await publisherIn();
    const token = await session();
    const prepared = (await seats.prepare(token, live))!;
    expect(prepared.streams.map((s) => ({ mid: s.mid, user_id: s.user_id, device_id: s.device_id }))).toEqual([
      { mid: `a-${host.media.feedId}`, user_id: ALICE, device_id: "DEVA" },
    ]);
    // The video is held back (docs/join.md, twenty-sixth pass): the seat subscribes to it at Join.
    expect(prepared.held).toEqual([{ feed: host.media.feedId, mid: "1" }]);
    const early = [...sfu.open_].at(-1)!;
    expect(early.calls).toEqual(["subscribe paused"]);
    expect(early.subscribed).toEqual([[`${host.media.feedId}/0`]]);
    // Nobody sees a pre-join: the host was told of no newcomer.
    const toldHost = host.client.pushes.length;
    await prepared.answer("v=0 answer", true);
    await prepared.trickle(candidate);
    expect(early.trickles).toEqual([candidate]);
    expect(host.client.pushes.length).toBe(toldHost);
    expect(early.configured).toEqual([]);
    const joiner = new Client();
    const opened = await seats.open(joiner, token, "DEVB", { media: Promise.resolve(prepared), answering: undefined });
    expect(opened.prepared).toBe(true);
    expect(sfu.opened).toBe(2); // no third SFU session: the seat's is the prepared one
    expect(seats.media.roster.get(opened.seat.session.callId, opened.seat)?.media).toBe(early);
    // It forwards from the hello: the audio at once.
    await vi.waitFor(() => expect(early.configured).toEqual([`a-${host.media.feedId}:true`]));
    await vi.waitFor(() => expect(host.client.pushes.at(-1)).toMatchObject({ type: "participants", participants: [{ device_id: "DEVA" }, { device_id: "DEVB" }] }));
    expect(early.calls).toEqual(["subscribe paused", "answer"]);
    // The held video, subscribed by its publisher's mid: added paused, and nothing resumed before
    // the client's answer (the key frame asked with the resume would reach no m-line).
    const held = await seats.media.subscribe(opened.seat, [{ feed: host.media.feedId, mid: "1" }], true);
    expect(held.offerSdp).toBeDefined();
    expect(held.streams.map((s) => s.mid)).toEqual([`a-${host.media.feedId}`, `v-${host.media.feedId}`]);
    expect(early.calls).toEqual(["subscribe paused", "answer", "subscribe paused"]);
    await new Promise((r) => setTimeout(r, 20));
    expect(early.configured).toEqual([`a-${host.media.feedId}:true`]);
    // Answered: the viewer chooses it, and it resumes.
    await seats.media.answer(opened.seat, "v=0 answer 2", true);
    await vi.waitFor(() => expect(early.configured).toEqual([`a-${host.media.feedId}:true`, `v-${host.media.feedId}:true`]));
    // Held once: the same m-line asked again is a subscribe like any other (not paused).
    await seats.media.subscribe(opened.seat, [{ feed: host.media.feedId, mid: "1" }], true);
    expect(early.calls.at(-1)).toBe("subscribe");
  });

  it("connected on standby, its held videos are added paused and their offer pushed; answered there, the hello seats it whole and the chosen video resumes at once", async () => {
    const { host, token, prepared, early } = await preparedFor();
    const offers: { sdp: string; streams: { mid: string; user_id: string }[] }[] = [];
    prepared.onUpdate = (o) => offers.push(o);
    early.up(); // (not answered yet: nothing; the SFU is not up before an answer anyway)
    await prepared.answer("v=0 answer", true);
    early.up();
    await vi.waitFor(() => expect(offers).toHaveLength(1));
    early.up(); // once
    expect(early.calls).toEqual(["subscribe paused", "answer", "subscribe paused"]);
    expect(early.subscribed.at(-1)).toEqual([`${host.media.feedId}/1`]);
    expect(offers[0]!.streams.map((s) => `${s.mid} ${s.user_id}`)).toEqual([`a-${host.media.feedId} ${ALICE}`, `v-${host.media.feedId} ${ALICE}`]);
    // Its answer, on the standby; a third one is refused.
    await prepared.answer("v=0 answer 2", true);
    await expect(prepared.answer("v=0 answer 3", true)).rejects.toMatchObject({ errcode: "M_INVALID_PARAM" });
    expect(early.configured).toEqual([]);
    const opened = await seats.open(new Client(), token, "DEVB", { media: Promise.resolve(prepared), answering: undefined });
    expect(opened).toMatchObject({ prepared: true });
    expect(opened).not.toHaveProperty("preparedUpdate");
    await vi.waitFor(() => expect(early.configured.sort()).toEqual([`a-${host.media.feedId}:true`, `v-${host.media.feedId}:true`]));
    // Nothing held any more: the same m-line asked again is a subscribe like any other.
    await seats.media.subscribe(opened.seat, [{ feed: host.media.feedId, mid: "1" }], true);
    expect(early.calls.at(-1)).toBe("subscribe");
  });

  it("a hello that crossed the held videos' offer is handed it; the video resumes once the call answers it, not before", async () => {
    const { host, token, prepared, early } = await preparedFor();
    let pushed = 0;
    prepared.onUpdate = () => void pushed++;
    await prepared.answer("v=0 answer", true);
    // The hello arrives while the SFU is still making the renegotiation: it waits for it.
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const subscribe = early.subscribe.bind(early);
    early.subscribe = async (...a: Parameters<typeof subscribe>) => (await gate, subscribe(...a));
    early.up();
    const opening = seats.open(new Client(), token, "DEVB", { media: Promise.resolve(prepared), answering: undefined });
    release();
    const opened = await opening;
    expect(pushed).toBe(1); // (pushed on the standby, which the socket no longer sends: the hello carries it)
    expect(opened.preparedUpdate?.streams.map((s) => s.mid)).toEqual([`a-${host.media.feedId}`, `v-${host.media.feedId}`]);
    await vi.waitFor(() => expect(early.configured).toEqual([`a-${host.media.feedId}:true`]));
    await new Promise((r) => setTimeout(r, 20));
    expect(early.configured).toEqual([`a-${host.media.feedId}:true`]);
    await seats.media.answer(opened.seat, "v=0 answer 2", true);
    await vi.waitFor(() => expect(early.configured).toEqual([`a-${host.media.feedId}:true`, `v-${host.media.feedId}:true`]));
  });

  it("connected only after the hello came: nothing is added on standby, the seat subscribes to the held videos", async () => {
    const { host, token, prepared, early } = await preparedFor();
    await prepared.answer("v=0 answer", true);
    const opened = await seats.open(new Client(), token, "DEVB", { media: Promise.resolve(prepared), answering: undefined });
    early.up();
    await new Promise((r) => setTimeout(r, 20));
    expect(early.calls).toEqual(["subscribe paused", "answer"]);
    await seats.media.subscribe(opened.seat, [{ feed: host.media.feedId, mid: "1" }], true);
    expect(early.calls.at(-1)).toBe("subscribe paused");
  });

  it("a subscribe naming anything not held is not paused, held m-lines included", async () => {
    const { host, token, prepared, early } = await preparedFor();
    await prepared.answer("v=0 answer", true);
    const opened = await seats.open(new Client(), token, "DEVB", { media: Promise.resolve(prepared), answering: undefined });
    expect(opened.prepared).toBe(true);
    await seats.media.subscribe(opened.seat, [{ feed: host.media.feedId, mid: "1" }, { feed: host.media.feedId, mid: "0" }], true);
    expect(early.calls.at(-1)).toBe("subscribe");
  });

  it("with no feed's audio (none published), the offer holds every m-line and nothing is held", async () => {
    sfu.videoOnly = true;
    const client = new Client();
    const { seat } = await seats.open(client, await session(), "DEVA");
    await seats.media.publish(seat, { sdp: "v=0", simulcast: false, e2ee: true });
    await vi.waitFor(() => expect(client.pushes.at(-1)).toMatchObject({ type: "participants", participants: [{ streams: [{ mid: "1" }] }] }));
    const host = { media: [...sfu.open_][0]! };
    const prepared = (await seats.prepare(await session(), live))!;
    expect(prepared.held).toEqual([]);
    expect([...sfu.open_].at(-1)!.subscribed).toEqual([[host.media.feedId]]);
  });

  it("not answered by the hello, it is closed and the seat opens its own SFU session, as without", async () => {
    await publisherIn();
    const token = await session();
    const prepared = (await seats.prepare(token, live))!;
    const early = [...sfu.open_].at(-1)!;
    const opened = await seats.open(new Client(), token, "DEVB", { media: Promise.resolve(prepared), answering: undefined });
    expect(opened.prepared).toBeUndefined();
    expect(sfu.open_.has(early)).toBe(false);
    await vi.waitFor(() => expect(sfu.opened).toBe(3));
    await expect(prepared.answer("v=0 late", true)).rejects.toMatchObject({ errcode: "M_NOT_FOUND" });
  });

  it("a hello right behind the answer waits for it; an answer the SFU refused leaves nothing seated", async () => {
    await publisherIn();
    const token = await session();
    const prepared = (await seats.prepare(token, live))!;
    const early = [...sfu.open_].at(-1)!;
    let release!: () => void;
    const slow = new Promise<void>((r) => (release = r));
    early.answer = async () => {
      await slow;
      throw new ParleyError("M_UNKNOWN", "answering: refused");
    };
    const answering = prepared.answer("v=0", true);
    const opening = seats.open(new Client(), token, "DEVB", { media: Promise.resolve(prepared), answering });
    release();
    await expect(answering).rejects.toMatchObject({ errcode: "M_UNKNOWN" });
    expect((await opening).prepared).toBeUndefined();
    expect(sfu.open_.has(early)).toBe(false);
  });

  it("an answer must declare end-to-end encryption; another session's hello does not take it", async () => {
    await publisherIn();
    const [token, other] = [await session(), await session()];
    const prepared = (await seats.prepare(token, live))!;
    const early = [...sfu.open_].at(-1)!;
    await expect(prepared.answer("v=0", undefined)).rejects.toMatchObject({ errcode: "M_FORBIDDEN" });
    expect(early.answers).toEqual([]);
    await prepared.answer("v=0", true);
    expect((await seats.open(new Client(), other, "DEVC", { media: Promise.resolve(prepared), answering: undefined })).prepared).toBeUndefined();
    expect(sfu.open_.has(early)).toBe(false);
  });

  it("none for a call without feeds, a session gone, a knocker in the lobby not let in, or past prejoinSubscriptionsPerCall; a closed one frees its place", async () => {
    const token = await session();
    expect(await seats.prepare(token, live)).toBeUndefined(); // nobody publishes yet
    await publisherIn();
    expect(await seats.prepare("no-such-session", live)).toBeUndefined();
    // A knocker's grant: made only once let in (CallService.letInForMedia), and only if the standby still wants it then.
    const opened = sfu.opened;
    const lobby = vi.spyOn(calls, "grantedInLobby").mockReturnValue(true);
    const letIn = vi.spyOn(calls, "letInForMedia").mockResolvedValue(null);
    expect(await seats.prepare(token, live)).toBeUndefined();
    let wanted = true;
    letIn.mockImplementation(async () => {
      wanted = false; // the real hello came while it waited
      return {};
    });
    expect(await seats.prepare(token, () => wanted)).toBeUndefined();
    expect(sfu.opened).toBe(opened);
    const ice = { iceServers: [{ urls: "turn:127.0.0.1:3478", username: "u", credential: "c" }], iceTransportPolicy: "all" as const };
    letIn.mockResolvedValue({ ice });
    const letInPrepared = (await seats.prepare(token, live))!;
    expect(letInPrepared.ice).toEqual(ice); // sent with its offer: its grant carried none
    expect(letIn).toHaveBeenCalledWith(token, live); // (its wait past the reads ends once the standby is gone)
    await letInPrepared.close();
    lobby.mockRestore();
    letIn.mockRestore();
    expect(await seats.prepare(token, () => false)).toBeUndefined(); // the standby went meanwhile
    seats = new CallSeats({ ...SEAT_BASICS, calls, sfu, rooms: { stateEvent: async () => undefined }, keys: undefined, botUserId: BOT, requireE2ee: true, preparedPerCall: 1 });
    // (The limit counts this CallSeats' own; the publisher is another's: a fresh one publishes here.)
    const c = new Client();
    const { seat } = await seats.open(c, await session(), "DEVA2");
    await seats.media.publish(seat, { sdp: "v=0", simulcast: false, e2ee: true });
    await vi.waitFor(() => expect(c.pushes.at(-1)).toMatchObject({ type: "participants", participants: [{ streams: [{ mid: "0" }, { mid: "1" }] }] }));
    const before = sfu.open_.size;
    const first = (await seats.prepare(token, live))!;
    expect(first).toBeDefined();
    expect(await seats.prepare(await session(), live)).toBeUndefined();
    expect(sfu.open_.size).toBe(before + 1);
    await first.close();
    expect(sfu.open_.size).toBe(before);
    expect(await seats.prepare(await session(), live)).toBeDefined();
  });

  it("a feed that left during the pre-join is not resumed (a configure naming its gone m-lines would be refused whole)", async () => {
    const host = await publisherIn();
    const other = new Client();
    const { seat: leaving } = await seats.open(other, await session(), "DEVC");
    await seats.media.publish(leaving, { sdp: "v=0", simulcast: false, e2ee: true });
    const leavingFeed = [...sfu.open_].at(-1)!.feedId;
    await vi.waitFor(() => expect(host.client.pushes.at(-1)).toMatchObject({ type: "participants", participants: [{ streams: [{}, {}] }, { streams: [{}, {}] }] }));
    const token = await session();
    const prepared = (await seats.prepare(token, live))!;
    const early = [...sfu.open_].at(-1)!;
    expect(prepared.streams.map((s) => String(s.feed))).toEqual([host.media.feedId, leavingFeed]);
    expect(prepared.held.map((h) => String(h.feed))).toEqual([host.media.feedId, leavingFeed]);
    await prepared.answer("v=0", true);
    seats.closed(leaving);
    const opened = await seats.open(new Client(), token, "DEVB", { media: Promise.resolve(prepared), answering: undefined });
    expect(opened.prepared).toBe(true);
    await vi.waitFor(() => expect(early.configured).toEqual([`a-${host.media.feedId}:true`]));
    // Its held videos, the gone one's included (the client asks for what it was told): only the present one is subscribed.
    await seats.media.subscribe(opened.seat, prepared.held, true);
    expect(early.subscribed.at(-1)).toEqual([`${host.media.feedId}/1`]);
    await seats.media.answer(opened.seat, "v=0", true);
    await vi.waitFor(() => expect(early.configured).toEqual([`a-${host.media.feedId}:true`, `v-${host.media.feedId}:true`]));
    await new Promise((r) => setTimeout(r, 20));
    expect(early.configured.some((c) => c.includes(leavingFeed))).toBe(false);
  });

  it("the SFU losing it before the hello closes it: the hello seats nothing from it", async () => {
    await publisherIn();
    const token = await session();
    const prepared = (await seats.prepare(token, live))!;
    await prepared.answer("v=0", true);
    sfu.lose.at(-1)!("media session lost");
    await new Promise((r) => setTimeout(r, 0));
    expect((await seats.open(new Client(), token, "DEVB", { media: Promise.resolve(prepared), answering: undefined })).prepared).toBeUndefined();
  });
});

describe("a Janus restart, as the call's seats see it", () => {
  /** Two seats that published, their streams announced to each other. */
  async function twoPublished() {
    const [a, b] = [new Client(), new Client()];
    const seatA = (await seats.open(a, await session(), "DEVA")).seat;
    const seatB = (await seats.open(b, await session(), "DEVB")).seat;
    await seats.media.publish(seatA, { sdp: "v=0", simulcast: false, e2ee: true });
    await seats.media.publish(seatB, { sdp: "v=0", simulcast: false, e2ee: true });
    const announced = (c: Client) => c.pushes.filter((p) => p.type === "participants").at(-1);
    await vi.waitFor(() => expect(announced(a)).toMatchObject({ participants: [{ streams: [{ mid: "0" }] }, { streams: [{ mid: "0" }] }] }));
    return { a, b, seatA, seatB };
  }

  it("every session lost at once: each client hears after all were dropped, with a list holding no dead feed, then renegotiate", async () => {
    const { a, b } = await twoPublished();
    const [pushedA, pushedB] = [a.pushes.length, b.pushes.length];
    for (const lose of sfu.lose) lose("media session lost");
    await new Promise((r) => setTimeout(r, 0));
    for (const [client, from] of [[a, pushedA], [b, pushedB]] as const) {
      const told = client.pushes.slice(from);
      // One participant list per drop at most, then the current one (nobody left) and renegotiate, last.
      expect(told.slice(-2)).toEqual([{ type: "participants", participants: [] }, { type: "renegotiate", reason: "media session lost" }]);
      expect(told.filter((p) => p.type === "renegotiate")).toHaveLength(1);
    }
  });

  it("an unsubscribe after the session was lost opens no SFU session (the client drops its old feeds)", async () => {
    const { seatA } = await twoPublished();
    for (const lose of sfu.lose) lose("media session lost");
    await new Promise((r) => setTimeout(r, 0));
    const opened = sfu.opened;
    expect(await seats.media.unsubscribe(seatA, ["p2"])).toEqual({ streams: [] });
    expect(sfu.opened).toBe(opened);
  });

  it("a lost session the client already left (it published again) brings no renegotiate", async () => {
    const client = new Client();
    const { seat } = await seats.open(client, await session(), "DEV");
    await seats.media.publish(seat, { sdp: "v=0", simulcast: false, e2ee: true });
    await seats.media.publish(seat, { sdp: "v=0", simulcast: false, e2ee: true });
    sfu.lose[0]!("media session lost");
    await new Promise((r) => setTimeout(r, 0));
    expect(client.pushes.filter((p) => p.type === "renegotiate")).toEqual([]);
  });

  it("subscribe asks the SFU only for feeds announced now: a gone or unannounced feed is left out, none left means no offer", async () => {
    const { seatA } = await twoPublished();
    const [mediaA, mediaB] = [...sfu.open_] as [FakeMedia, FakeMedia];
    const got = await seats.media.subscribe(seatA, [{ feed: mediaB.feedId }, { feed: "p-gone" }], true);
    expect(mediaA.subscribed).toEqual([[mediaB.feedId]]);
    expect(mediaA.substreams).toEqual([FIRST_LAYER]); // a new m-line starts on the layer the viewers assume
    expect(got).toMatchObject({ offerSdp: "v=0 offer", streams: [{ feed: mediaB.feedId }] });
    expect(await seats.media.subscribe(seatA, [{ feed: "p-gone" }], true)).toEqual({ streams: [] });
    expect(mediaA.subscribed).toHaveLength(1);
  });

  it("a feed vanishing between the check and the SFU: checked once more, then subscribed without it", async () => {
    const { seatA } = await twoPublished();
    const [mediaA, mediaB] = [...sfu.open_] as [FakeMedia, FakeMedia];
    mediaA.noSuchFeed = 1;
    const got = await seats.media.subscribe(seatA, [{ feed: mediaB.feedId }], true);
    expect(mediaA.subscribed).toEqual([[mediaB.feedId], [mediaB.feedId]]);
    expect(got.streams).toHaveLength(1);
    mediaA.noSuchFeed = 2; // still refused the second time: the error reaches the client
    await expect(seats.media.subscribe(seatA, [{ feed: mediaB.feedId }], true)).rejects.toMatchObject({ errcode: "M_NOT_FOUND" });
  });
});

describe("the key mode comes from the room's org.parley.call state", () => {
  it("provisioned: the device joins the key service, and leaves it synchronously when its seat ends", async () => {
    roomState = { version: 1, e2ee: { keys: "provisioned", bot: BOT } };
    const token = await session();
    const opened = await seats.open(new Client(), token, "DEV");
    expect(opened.e2ee).toEqual({ required: true, keys: "provisioned", bot: BOT });
    expect(keyLog).toEqual(["join DEV"]);
    calls.evict(ROOM, ALICE, "kick");
    expect(keyLog).toEqual(["join DEV", "leave"]);
  });

  it("no state, or no e2ee in it: participant keys", async () => {
    for (const state of [undefined, { version: 1 }, { e2ee: "provisioned" }]) {
      roomState = state;
      expect((await seats.open(new Client(), await session(), "DEV")).e2ee).toEqual({ required: true, keys: "participant", bot: BOT });
    }
    expect(keyLog.filter((l) => l.startsWith("join"))).toEqual([]);
  });

  it("provisioned for another bot, or without crypto: this Parley sends no keys", async () => {
    roomState = { e2ee: { keys: "provisioned", bot: "@other:b.example" } };
    expect((await seats.open(new Client(), await session(), "DEV")).e2ee).toMatchObject({ keys: "provisioned", bot: "@other:b.example" });
    expect(keyLog).toEqual([]);
  });

  it("an unreadable room state refuses the hello (M_UNAVAILABLE) rather than guess", async () => {
    seats = new CallSeats({ ...SEAT_BASICS, calls, sfu, rooms: { stateEvent: async () => Promise.reject(new Error("down")) }, keys: undefined, botUserId: BOT, requireE2ee: true });
    await expect(seats.open(new Client(), await session(), "DEV")).rejects.toMatchObject({ errcode: "M_UNAVAILABLE" });
  });
});

describe("a Parley restart (docs/resilience.md)", () => {
  const recorder = () => ({
    key: (token: string) => `hash:${token}`,
    save: (seat: Parameters<SqliteStore["saveSeat"]>[0]) => store.saveSeat(seat),
    media: (key: string, media: string | null, at: number) => store.setSeatMedia(key, media, at),
    forget: (key: string) => store.forgetSeat(key),
  });
  /** A CallService and its seats as a (re)started process makes them, on the same store. */
  function process() {
    calls.stop();
    calls = makeCalls({ recorder: recorder() });
    seats = makeSeats();
  }
  /** Alice's seat, published, as recorded by the first process. */
  async function published() {
    process();
    const token = await session();
    const { seat } = await seats.open(new Client(), token, "DEV");
    await seats.media.publish(seat, { sdp: "v=0", simulcast: false, e2ee: true });
    await vi.waitFor(async () => expect(JSON.parse((await store.seats())[0]?.media ?? "{}")).toMatchObject({ published: true, streams: [{ mid: "0" }] }));
    const [record] = await store.seats();
    expect(record).toMatchObject({ tokenHash: `hash:${token}`, userId: ALICE, deviceId: "DEV", expiresAt: null });
    expect(JSON.stringify(record)).not.toContain(`"${token}"`);
    return { token, feedId: [...sfu.open_][0]!.feedId };
  }

  it("the next process adopts the SFU session; the client's hello takes it over with nothing to publish again", async () => {
    const { token, feedId } = await published();
    sfu.adoptable.add(feedId);
    const opened = sfu.opened;
    process(); // the old process is gone without a word (SIGKILL): nothing was released
    expect(await seats.restore(await store.seats(), 30_000, 1_000)).toEqual({ sessions: 1, media: 1 });
    const client = new Client();
    const { seat, resumed } = await seats.open(client, token, "DEV");
    expect(resumed).toBe(true);
    expect(sfu.adopted).toEqual([feedId]);
    expect(sfu.opened).toBe(opened); // no new SFU session
    await vi.waitFor(() => expect(client.pushes.filter((p) => p.type === "participants").at(-1)).toMatchObject({ participants: [{ feed_id: feedId, streams: [{ mid: "0" }] }] }));
    // The adopted session serves the seat's requests.
    await seats.media.trickle(seat, "publisher", candidate);
    expect([...sfu.open_].at(-1)!.trickles).toEqual([candidate]);
  });

  it("a forced mute restored with the moderation blocks the adopted session's stream again (Janus may not have had it)", async () => {
    const { feedId } = await published();
    sfu.adoptable.add(feedId);
    process();
    seats.media.moderation.restore([{ callId: (await store.seats())[0]!.callId, userId: ALICE, forcedAudioBy: "@host:b.example", forcedVideoBy: null, shareStopped: false, handAt: null, updatedAt: 1 }]);
    await seats.restore(await store.seats(), 30_000, 1_000);
    expect([...sfu.open_].at(-1)!.calls).toEqual(["moderate audio block"]); // the adopted one (the old process's published)
  });

  it("a session whose client does not come back within the grace ends: its SFU session closes, its record goes", async () => {
    const { feedId } = await published();
    sfu.adoptable.add(feedId);
    process();
    await seats.restore(await store.seats(), 20, 1_000);
    expect(sfu.open_.size).toBe(2); // the old process's (never released) and the adopted one
    await vi.waitFor(async () => expect(await store.seats()).toEqual([]));
    // The adopted one closed; what is left is the old process's own (the fake does not share them).
    expect([...sfu.open_].map((m) => m.calls)).toEqual([["publish"]]);
  });

  it("an SFU session the SFU lost (Janus restarted too): the hello works, and the client publishes again", async () => {
    const { token } = await published();
    process();
    expect(await seats.restore(await store.seats(), 30_000, 1_000)).toEqual({ sessions: 1, media: 0 });
    const { resumed } = await seats.open(new Client(), token, "DEV");
    expect(resumed).toBe(false);
  });

  it("while stopping, sockets that close end no session (the next process takes them over)", async () => {
    const { token } = await published();
    const { seat } = await seats.open(new Client(), token, "DEV");
    const media = sfu.open_.size;
    seats.suspend();
    seats.closed(seat);
    expect(sfu.open_.size).toBe(media);
    expect(await store.seats()).toHaveLength(1);
  });
});
