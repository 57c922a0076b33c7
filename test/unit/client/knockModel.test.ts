// Asking to join, as the meeting screen drives it: a knock at once after a refused join, the wait
// in the lobby, let in (the meeting opens again), declined, cancelled, refused because locked.
import { describe, expect, it, vi } from "vitest";
import { ParleyClientError } from "../../../client/src/errors.ts";
import type { Admission, RoomPreview } from "../../../client/src/matrix/knock.ts";
import type { RoomSummary } from "../../../client/src/matrix/rooms.ts";
import { INVITE_ONLY_TEXT, KnockModel, LOCKED_TEXT, type KnockPort } from "../../../client/src/state/knockModel.ts";
import { MeetingModel, type ActiveCall, type MeetingServices } from "../../../client/src/state/meetingModel.ts";
import type { PrejoinModel } from "../../../client/src/state/prejoinModel.ts";
import { tick } from "./fakes.ts";

const FORBIDDEN = new ParleyClientError("M_FORBIDDEN", "room", { status: 403, detail: "M_FORBIDDEN: You are not invited to this room." });
const KNOCKABLE: RoomPreview = { kind: "summary", roomId: "!r:x", name: "Board meeting", joinRule: "knock", membership: "leave" };

/** A knock port whose wait resolves when the test answers. */
function port(preview: RoomPreview = KNOCKABLE) {
  let answer: ((a: Admission) => void) | null = null;
  let fail: ((e: unknown) => void) | null = null;
  const signals: AbortSignal[] = [];
  const p = {
    preview: vi.fn(async () => preview),
    knock: vi.fn(async (): Promise<string> => "!r:x"),
    wait: vi.fn(
      (_roomId: string, signal: AbortSignal) =>
        new Promise<Admission>((resolve, reject) => {
          signals.push(signal);
          answer = resolve;
          fail = reject;
          signal.addEventListener("abort", () => reject(new ParleyClientError("CLOSED", "room")));
        }),
    ),
    withdraw: vi.fn(async () => undefined),
  } satisfies KnockPort;
  return { p, signals, answer: (a: Admission) => answer?.(a), fail: (e: unknown) => fail?.(e) };
}

/** A knock model that started (and so knocked, where the room takes knocks). */
async function asked(p: KnockPort, admitted = vi.fn()): Promise<KnockModel> {
  const k = new KnockModel("#board:x", p, admitted);
  await k.start(FORBIDDEN);
  return k;
}

describe("KnockModel", () => {
  it("knocks at once, without asking, where the room takes knocks, and waits", async () => {
    const { p } = port();
    const k = await asked(p);
    expect(p.knock).toHaveBeenCalledWith("#board:x", "");
    expect(k.state.get()).toEqual({ status: "waiting", name: "Board meeting", cancelling: false, error: null, note: "none" });
    expect(p.wait).toHaveBeenCalledWith("!r:x", expect.any(AbortSignal));
  });

  it("goes on to the meeting when let in (by a host, or at once by the meeting's server)", async () => {
    const { p, answer } = port();
    const admitted = vi.fn();
    await asked(p, admitted);
    answer("invited");
    await tick();
    expect(admitted).toHaveBeenCalledOnce();
  });

  it("sends a message for the hosts while waiting, as the knock's reason, and keeps waiting", async () => {
    const { p, signals } = port();
    const k = await asked(p);
    await k.addNote("   ");
    expect(p.knock).toHaveBeenCalledTimes(1); // nothing to send
    await k.addNote("  I'm presenting the budget  ");
    expect(p.knock).toHaveBeenLastCalledWith("#board:x", "I'm presenting the budget");
    expect(k.state.get()).toMatchObject({ status: "waiting", note: "sent", error: null });
    expect(signals[0]!.aborted).toBe(false);
    const again = await asked(p);
    p.knock.mockRejectedValueOnce(new ParleyClientError("NETWORK", "room"));
    await again.addNote("hello");
    expect(again.state.get()).toMatchObject({ status: "waiting", note: "none", error: expect.stringMatching(/^Your message didn't reach the hosts/) });
  });

  it("says a host declined, and may ask again with a reason", async () => {
    const { p, answer } = port();
    const k = await asked(p);
    answer("declined");
    await tick();
    expect(k.state.get()).toEqual({ status: "declined", name: "Board meeting" });
    await k.ask(" please ");
    expect(p.knock).toHaveBeenLastCalledWith("#board:x", "please");
    expect(k.state.get().status).toBe("waiting");
  });

  it("says a locked meeting takes no requests when the knock is refused, and may try again", async () => {
    const { p } = port();
    p.knock.mockRejectedValueOnce(new ParleyClientError("M_FORBIDDEN", "room", { status: 403 }));
    const k = await asked(p);
    expect(k.state.get()).toEqual({ status: "offer", name: "Board meeting", sending: false, error: LOCKED_TEXT });
    await k.ask("");
    expect(k.state.get().status).toBe("waiting");
  });

  it("takes the request back on cancel: stops waiting and leaves the knock; asking again is the user's choice", async () => {
    const { p, signals } = port();
    const k = await asked(p);
    await k.cancel();
    expect(signals[0]!.aborted).toBe(true);
    expect(p.withdraw).toHaveBeenCalledWith("!r:x");
    expect(k.state.get()).toEqual({ status: "offer", name: "Board meeting", sending: false, error: null });
    expect(p.knock).toHaveBeenCalledTimes(1);
  });

  it("keeps waiting when the request can't be taken back", async () => {
    const { p } = port();
    p.withdraw.mockRejectedValueOnce(new ParleyClientError("NETWORK", "room"));
    const k = await asked(p);
    await k.cancel();
    expect(k.state.get()).toMatchObject({ status: "waiting", error: expect.stringMatching(/^Couldn't take your request back/) });
    expect(p.wait).toHaveBeenCalledTimes(2);
  });

  it("resumes the wait for a knock made earlier (the page was reloaded)", async () => {
    const { p } = port({ ...KNOCKABLE, membership: "knock" });
    const k = await asked(p);
    expect(k.state.get().status).toBe("waiting");
    expect(p.knock).not.toHaveBeenCalled();
  });

  it("does not knock where it can't be done: invite-only or hidden, banned", async () => {
    for (const [preview, message] of [
      [{ ...KNOCKABLE, joinRule: "invite" }, INVITE_ONLY_TEXT],
      [{ kind: "hidden" }, INVITE_ONLY_TEXT],
      [{ ...KNOCKABLE, membership: "ban" }, "You were banned from this meeting."],
      [{ ...KNOCKABLE, joinRule: "public" }, FORBIDDEN.human],
    ] as [RoomPreview, string][]) {
      const { p } = port(preview);
      const k = await asked(p);
      expect(k.state.get()).toMatchObject({ status: "closed", message });
      expect(p.knock).not.toHaveBeenCalled();
    }
  });

  it("knocks when the homeserver can't say what the room allows (the knock's answer will)", async () => {
    const { p } = port({ kind: "unknown" });
    const k = await asked(p);
    expect(p.knock).toHaveBeenCalledOnce();
    expect(k.state.get()).toMatchObject({ status: "waiting", name: "#board:x" });
  });

  it("says so when the wait can't go on (the sign-in expired)", async () => {
    const { p, fail } = port();
    const k = await asked(p);
    fail(new ParleyClientError("M_UNKNOWN_TOKEN", "room"));
    await tick();
    expect(k.state.get()).toMatchObject({ status: "offer", error: "Stopped waiting for a host: Your sign-in has expired. Sign in again to open the meeting." });
  });
});

describe("MeetingModel: asking to join", () => {
  const ROOM: RoomSummary = { roomId: "!r:x", name: "Board meeting", call: null, host: { trust: "origin", api: "http://p", origin: "http://p", host: "p" }, encrypted: false };

  /** A fake pre-join: what the meeting model asks of it. */
  function fakePrejoin(canJoin = true) {
    const off = { audio: null, video: null, micOn: true, cameraOn: true, audioDeviceId: null, videoDeviceId: null };
    return { canJoin, start: vi.fn(async () => undefined), settled: vi.fn(async () => undefined), handOff: vi.fn(() => off), dispose: vi.fn() };
  }

  function meeting(knock?: KnockPort, opts: { lobby?: boolean; canJoin?: boolean; letIn?: MeetingServices["letInRoom"] } = {}) {
    const lobby = fakePrejoin(opts.canJoin);
    const fresh = fakePrejoin();
    const openRoom = vi.fn<MeetingServices["openRoom"]>(async () => Promise.reject(FORBIDDEN));
    const prejoin = vi.fn((_room: RoomSummary, kept?: PrejoinModel) => (kept ?? fresh) as unknown as PrejoinModel);
    const joinCall = vi.fn(async () => undefined);
    const call = vi.fn((_room: RoomSummary, _local: unknown, _joined?: Promise<unknown>): ActiveCall => ({ vm: { join: joinCall }, chat: { start: vi.fn(async () => undefined) }, dispose: vi.fn() }) as unknown as ActiveCall);
    const services: MeetingServices = {
      openRoom,
      ...(opts.letIn ? { letInRoom: opts.letIn } : {}),
      prejoin,
      call,
      ...(opts.lobby === false ? {} : { lobbyPrejoin: () => lobby as unknown as PrejoinModel }),
      ...(knock ? { knock } : {}),
    };
    return { m: new MeetingModel("#board:x", services), openRoom, prejoin, lobby, fresh, call, joinCall };
  }

  it("shows the preview beside the wait; let in, the pre-join goes on with the same devices", async () => {
    const { p, answer } = port();
    const { m, openRoom, prejoin, lobby, call } = meeting(p);
    await m.open();
    expect(m.state.get()).toMatchObject({ stage: "knock", prejoin: lobby, joinWhenAdmitted: false, admitted: false });
    expect(lobby.start).toHaveBeenCalledTimes(1); // the camera started as the room was opened, and goes on in the wait
    expect(openRoom.mock.invocationCallOrder[0]).toBeGreaterThan(lobby.start.mock.invocationCallOrder[0]!);
    let joined!: (r: RoomSummary) => void;
    openRoom.mockImplementationOnce(() => new Promise((r) => (joined = r)));
    answer("invited");
    await tick(10);
    expect(m.state.get()).toMatchObject({ stage: "knock", admitted: true }); // the room opening, the preview still there
    joined(ROOM);
    await tick(10);
    expect(m.state.get()).toMatchObject({ stage: "prejoin", prejoin: lobby });
    expect(prejoin).toHaveBeenCalledWith(ROOM, lobby);
    expect(lobby.start).toHaveBeenCalledTimes(1); // not opened again
    expect(lobby.dispose).not.toHaveBeenCalled();
    expect(call).not.toHaveBeenCalled(); // the user did not ask to join yet: their Join
    await m.join();
    expect(call).toHaveBeenCalledTimes(1);
    expect(m.state.get().stage).toBe("call");
  });

  it("'Join when let in' enters the call as soon as the room opens, with the devices chosen while waiting", async () => {
    const { p, answer } = port();
    const { m, openRoom, lobby, call, joinCall } = meeting(p);
    await m.open();
    await m.join();
    expect(m.state.get()).toMatchObject({ stage: "knock", joinWhenAdmitted: true });
    expect(call).not.toHaveBeenCalled(); // not let in yet
    openRoom.mockResolvedValueOnce(ROOM);
    answer("invited");
    await tick(10);
    expect(m.state.get().stage).toBe("call");
    expect(lobby.settled).toHaveBeenCalled();
    expect(lobby.handOff).toHaveBeenCalledTimes(1);
    expect(call).toHaveBeenCalledWith(ROOM, lobby.handOff.mock.results[0]!.value, undefined);
    expect(joinCall).toHaveBeenCalledTimes(1);
  });

  it("Join pressed once let in, while the room opens, enters the call as soon as it has", async () => {
    const { p, answer } = port();
    const { m, openRoom, call } = meeting(p);
    await m.open();
    let joined!: (r: RoomSummary) => void;
    openRoom.mockImplementationOnce(() => new Promise((r) => (joined = r)));
    answer("invited");
    await tick(10);
    expect(m.state.get()).toMatchObject({ stage: "knock", admitted: true, joinWhenAdmitted: false });
    await m.join();
    expect(m.state.get()).toMatchObject({ stage: "knock", joinWhenAdmitted: true });
    joined(ROOM);
    await tick(10);
    expect(m.state.get().stage).toBe("call");
    expect(call).toHaveBeenCalledTimes(1);
  });

  /** A let-in whose invite announces the call: the room at once, its join answered when the test says. */
  function letInEarly() {
    let joinedAs!: (roomId: string) => void;
    let refuse!: (err: unknown) => void;
    const joined = new Promise<string>((resolve, reject) => ((joinedAs = resolve), (refuse = reject)));
    const letIn = vi.fn<NonNullable<MeetingServices["letInRoom"]>>(() => ({ room: ROOM, joined }));
    return { letIn, joinedAs: (id = ROOM.roomId) => joinedAs(id), refuse: (err: unknown) => refuse(err) };
  }

  /** Let in (no "Join when let in"), the call announced by the invite: the room's join still under way. */
  async function letInJoinPending() {
    const { p, answer } = port();
    const early = letInEarly();
    const meet = meeting(p, { letIn: early.letIn });
    await meet.m.open();
    answer("invited");
    await tick(10);
    return { ...meet, early };
  }

  it("'Join when let in', the call announced by the invite: the call starts at the let-in, beside the room's join, and its membership waits for it", async () => {
    const { p, answer } = port();
    const early = letInEarly();
    const { m, openRoom, lobby, call, joinCall } = meeting(p, { letIn: early.letIn });
    await m.open();
    await m.join();
    answer("invited");
    await tick(10);
    // In the call before the room's join answered: nothing read, nothing joined again.
    expect(m.state.get().stage).toBe("call");
    expect(early.letIn).toHaveBeenCalledWith("#board:x");
    expect(openRoom).toHaveBeenCalledTimes(1); // the refused first opening only
    expect(call).toHaveBeenCalledWith(ROOM, lobby.handOff.mock.results[0]!.value, expect.any(Promise));
    expect(joinCall).toHaveBeenCalledTimes(1);
    const joined = call.mock.calls[0]![2]!;
    let settled = false;
    void joined.then(() => (settled = true));
    await tick(10);
    expect(settled).toBe(false); // what the membership waits for
    early.joinedAs();
    await tick(10);
    expect(settled).toBe(true);
    expect(m.state.get().stage).toBe("call");
  });

  it("a room join that fails after the call started ends that call: refused, the meeting asks again; otherwise the error shows", async () => {
    for (const [err, stage] of [[FORBIDDEN, "knock"], [new ParleyClientError("M_UNKNOWN", "room"), "error"]] as const) {
      const { p, answer } = port();
      const early = letInEarly();
      const { m, openRoom, call } = meeting(p, { letIn: early.letIn });
      await m.open();
      await m.join();
      answer("invited");
      await tick(10);
      expect(m.state.get().stage).toBe("call");
      early.refuse(err);
      await tick(10);
      expect(call.mock.results[0]!.value.dispose).toHaveBeenCalledTimes(1);
      expect(m.state.get().stage).toBe(stage);
      if (stage === "knock") expect(openRoom).toHaveBeenCalledTimes(2); // opened again, from the start
    }
  });

  it("a join that lands in another room than the invite's (the alias moved) ends the early call too", async () => {
    const { p, answer } = port();
    const early = letInEarly();
    const { m, call } = meeting(p, { letIn: early.letIn });
    await m.open();
    await m.join();
    answer("invited");
    await tick(10);
    early.joinedAs("!other:x");
    await tick(10);
    expect(call.mock.results[0]!.value.dispose).toHaveBeenCalledTimes(1);
    expect(m.state.get().stage).toBe("error");
  });

  it("let in without 'Join when let in': the invite's join is used for the pre-join, and the call waits for Join", async () => {
    const { m, openRoom, call, early } = await letInJoinPending();
    expect(m.state.get()).toMatchObject({ stage: "knock", admitted: true });
    early.joinedAs();
    await tick(10);
    expect(m.state.get().stage).toBe("prejoin");
    expect(openRoom).toHaveBeenCalledTimes(1);
    expect(call).not.toHaveBeenCalled();
    await m.join();
    expect(call).toHaveBeenCalledWith(ROOM, expect.anything(), undefined);
  });

  it("Join pressed once let in with the call announced, the room's join under way: the call starts now, beside that join, once", async () => {
    const { m, openRoom, prejoin, lobby, call, joinCall, early } = await letInJoinPending();
    expect(m.state.get()).toMatchObject({ stage: "knock", admitted: true, joinWhenAdmitted: false });
    expect(call).not.toHaveBeenCalled();
    await m.join();
    await m.join(); // pressed twice: one call
    await tick(10);
    // In the call before the room's join answered, as with "Join when let in" pressed before the let-in.
    expect(m.state.get().stage).toBe("call");
    expect(call).toHaveBeenCalledTimes(1);
    expect(call).toHaveBeenCalledWith(ROOM, lobby.handOff.mock.results[0]!.value, expect.any(Promise));
    expect(joinCall).toHaveBeenCalledTimes(1);
    early.joinedAs();
    await tick(10);
    // The join's answer moves nothing more: no pre-join shown, no second call, nothing opened again.
    expect(m.state.get().stage).toBe("call");
    expect(call).toHaveBeenCalledTimes(1);
    expect(prejoin.mock.calls).toEqual([[ROOM, lobby]]);
    expect(openRoom).toHaveBeenCalledTimes(1);
  });

  it("Join pressed once let in, the room's join then refused: the call started beside it ends and the meeting asks again, once", async () => {
    const { m, openRoom, call, early } = await letInJoinPending();
    await m.join();
    await tick(10);
    expect(m.state.get().stage).toBe("call");
    early.refuse(FORBIDDEN);
    await tick(10);
    expect(call.mock.results[0]!.value.dispose).toHaveBeenCalledTimes(1);
    expect(m.state.get().stage).toBe("knock");
    expect(openRoom).toHaveBeenCalledTimes(2); // opened again from the start, once
  });

  it("Join pressed once let in, the room's join refused but the room then opens (a join race outlasting the retries): the call starts again without a second Join", async () => {
    const { m, openRoom, call, early } = await letInJoinPending();
    await m.join();
    await tick(10);
    expect(m.state.get().stage).toBe("call");
    openRoom.mockResolvedValueOnce(ROOM); // the user is in the room by now
    early.refuse(new ParleyClientError("M_FORBIDDEN", "room", { detail: "duplicate auth_events" }));
    await tick(10);
    expect(call.mock.results[0]!.value.dispose).toHaveBeenCalledTimes(1);
    expect(openRoom).toHaveBeenCalledTimes(2);
    // Not left at the pre-join: the Join pressed stands.
    expect(m.state.get().stage).toBe("call");
    expect(call).toHaveBeenCalledTimes(2);
    expect(call.mock.calls[1]![0]).toBe(ROOM);
  });

  it("the same with 'Join when let in' and no call in the invite; but a plain let-in whose join is refused, then opens, stops at the pre-join", async () => {
    for (const joinWhenLetIn of [true, false]) {
      const { p, answer } = port();
      const { m, openRoom, call } = meeting(p);
      await m.open();
      if (joinWhenLetIn) await m.join(); // "Join when let in"
      openRoom.mockRejectedValueOnce(FORBIDDEN).mockResolvedValueOnce(ROOM);
      answer("invited");
      await tick(10);
      expect(openRoom).toHaveBeenCalledTimes(3); // refused, let in and refused after all, opened
      expect(m.state.get().stage).toBe(joinWhenLetIn ? "call" : "prejoin");
      expect(call).toHaveBeenCalledTimes(joinWhenLetIn ? 1 : 0);
    }
  });

  it("a Join that stands across the reopening waits for a pre-join that may start the call (its host still to be asked about)", async () => {
    const { m, openRoom, call, early, lobby } = await letInJoinPending();
    await m.join();
    await tick(10);
    lobby.canJoin = false; // the devices opened again with the room (the lobby's kind)
    openRoom.mockResolvedValueOnce(ROOM);
    early.refuse(FORBIDDEN);
    await tick(10);
    expect(m.state.get().stage).toBe("prejoin");
    expect(call).toHaveBeenCalledTimes(1);
  });

  it("'Join when let in' stops at the pre-join when the call's host must be asked about first", async () => {
    const { p, answer } = port();
    const { m, openRoom, call } = meeting(p, { canJoin: false });
    await m.open();
    await m.join();
    openRoom.mockResolvedValueOnce(ROOM);
    answer("invited");
    await tick(10);
    expect(m.state.get().stage).toBe("prejoin");
    expect(call).not.toHaveBeenCalled();
  });

  it("'Join when let in', the call announced by the invite but its host still to be asked about: the pre-join once the room is joined, made once", async () => {
    const { p, answer } = port();
    const early = letInEarly();
    const { m, openRoom, prejoin, lobby, call } = meeting(p, { canJoin: false, letIn: early.letIn });
    await m.open();
    await m.join();
    answer("invited");
    await tick(10);
    expect(m.state.get()).toMatchObject({ stage: "knock", admitted: true });
    expect(call).not.toHaveBeenCalled();
    early.joinedAs();
    await tick(10);
    expect(m.state.get()).toMatchObject({ stage: "prejoin", prejoin: lobby });
    expect(prejoin.mock.calls).toEqual([[ROOM, lobby]]);
    expect(openRoom).toHaveBeenCalledTimes(1); // the refused first opening only
    expect(call).not.toHaveBeenCalled();
  });

  it("'Join when let in' holds only while waiting: not before the knock is out, and not after a cancel", async () => {
    const { p } = port();
    const { m } = meeting(p);
    await m.open();
    const s = m.state.get();
    if (s.stage !== "knock") throw new Error("not knocking");
    await m.join();
    expect(m.state.get()).toMatchObject({ joinWhenAdmitted: true });
    await s.knock.cancel();
    expect(m.state.get()).toMatchObject({ stage: "knock", joinWhenAdmitted: false });
    await m.join(); // the offer to ask again shows: nothing to join yet
    expect(m.state.get()).toMatchObject({ joinWhenAdmitted: false });
  });

  it("stops the preview when asking is not possible, and when the meeting screen goes away", async () => {
    const { p } = port({ ...KNOCKABLE, joinRule: "invite" });
    const { m, lobby } = meeting(p);
    await m.open();
    expect(m.state.get()).toMatchObject({ stage: "knock", prejoin: null });
    expect(lobby.dispose).toHaveBeenCalledTimes(1);
    const other = port();
    const waiting = meeting(other.p);
    await waiting.m.open();
    waiting.m.dispose();
    expect(waiting.lobby.dispose).toHaveBeenCalledTimes(1);
  });

  it("stops the preview when the room cannot be opened after all", async () => {
    const { p, answer } = port();
    const { m, openRoom, lobby } = meeting(p);
    await m.open();
    openRoom.mockRejectedValueOnce(new ParleyClientError("M_UNKNOWN", "room"));
    answer("invited");
    await tick(10);
    expect(m.state.get().stage).toBe("error");
    expect(lobby.dispose).toHaveBeenCalledTimes(1);
  });

  it("without a preview beside the wait (the services give none), opens the meeting when let in as before", async () => {
    const { p, answer } = port();
    const { m, openRoom, fresh } = meeting(p, { lobby: false });
    await m.open();
    expect(m.state.get()).toMatchObject({ stage: "knock", prejoin: null });
    openRoom.mockResolvedValueOnce(ROOM);
    answer("invited");
    await tick(10);
    expect(m.state.get()).toMatchObject({ stage: "prejoin", prejoin: fresh });
    expect(fresh.start).toHaveBeenCalledTimes(1);
  });

  it("goes to the knock stage on a refused join, and opens the meeting once let in", async () => {
    const { p, answer } = port();
    const { m, openRoom } = meeting(p);
    await m.open();
    expect(m.state.get().stage).toBe("knock");
    openRoom.mockResolvedValueOnce(ROOM);
    answer("invited");
    await tick(10);
    expect(m.state.get().stage).toBe("prejoin");
    expect(openRoom).toHaveBeenCalledTimes(2);
  });

  it("stops waiting when the meeting screen goes away", async () => {
    const { p, signals } = port({ ...KNOCKABLE, membership: "knock" });
    const { m } = meeting(p);
    await m.open();
    expect(m.state.get().stage).toBe("knock");
    m.dispose();
    expect(signals[0]!.aborted).toBe(true);
    expect(p.withdraw).not.toHaveBeenCalled(); // the knock stays for when the meeting opens again
  });

  it("keeps the old error where it can't knock (the Element widget), or for other errors", async () => {
    const { m } = meeting();
    await m.open();
    expect(m.state.get()).toMatchObject({ stage: "error", message: FORBIDDEN.human });
    const { p } = port();
    const other = meeting(p);
    other.openRoom.mockRejectedValueOnce(new ParleyClientError("M_NOT_FOUND", "room"));
    await other.m.open();
    expect(other.m.state.get().stage).toBe("error");
    expect(p.preview).not.toHaveBeenCalled();
  });
});
