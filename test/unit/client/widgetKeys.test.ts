// Widget mode's media-key channel, driven through the real widget API on both sides: the widget's
// WidgetApi (inside WidgetSession) talks postMessage to matrix-widget-api's own ClientWidgetApi,
// the host half Element runs, over a fake window; a fake WidgetDriver stands in for Element.
import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { ClientWidgetApi, UnstableApiVersion, Widget, WidgetDriver, type Capability, type IRoomEvent } from "matrix-widget-api";
import "./fakes.ts";
import { ParleyClientError } from "../../../client/src/errors.ts";
import { CALL_MEMBER_EVENT } from "../../../client/src/matrix/membership.ts";
import { parseToDeviceKey, WidgetSession, type WidgetParams } from "../../../client/src/matrix/widget.ts";
import { CALL_KEYS_EVENT, keyContent, type DeviceRef, type KeySender } from "../../../client/src/rtc/e2ee/keyShare.ts";

const ROOM = "!call:parley.test";
const ME = "@me:parley.test";
const params: WidgetParams = { widgetId: "parley-w", parentOrigin: "https://element.test", roomId: ROOM, userId: ME, deviceId: "MYDEV", hostDevice: true, callId: null };
const SEND_KEYS = `org.matrix.msc3819.send.to_device:${CALL_KEYS_EVENT}`;
const RECEIVE_KEYS = `org.matrix.msc3819.receive.to_device:${CALL_KEYS_EVENT}`;

let seq = 0;
function stateEvent(type: string, sender: string, stateKey: string, content: Record<string, unknown>): IRoomEvent {
  return { type, sender, state_key: stateKey, content, room_id: ROOM, event_id: `$${++seq}`, origin_server_ts: Date.now(), unsigned: {} };
}
const joined = (user: string) => stateEvent("m.room.member", user, user, { membership: "join" });
const left = (user: string) => stateEvent("m.room.member", user, user, { membership: "leave" });
const inCall = (user: string, device: string, extra: Record<string, unknown> = {}) =>
  stateEvent(CALL_MEMBER_EVENT, user, `_${user}_${device}`, { device_id: device, created_ts: Date.now(), expires: 3_600_000, ...extra });

/** Element's side, as far as the widget API reaches it. */
class FakeElement extends WidgetDriver {
  requested = new Set<Capability>();
  denied = new Set<Capability>();
  sent: { type: string; encrypted: boolean; messages: Record<string, Record<string, object>> }[] = [];
  state: IRoomEvent[] = [];

  override async validateCapabilities(requested: Set<Capability>): Promise<Set<Capability>> {
    this.requested = requested;
    return new Set([...requested].filter((c) => !this.denied.has(c)));
  }
  override async sendToDevice(type: string, encrypted: boolean, messages: Record<string, Record<string, object>>): Promise<void> {
    this.sent.push({ type, encrypted, messages });
  }
  override async readRoomState(roomId: string, type: string): Promise<IRoomEvent[]> {
    return this.state.filter((e) => e.room_id === roomId && e.type === type);
  }
  override async readRoomTimeline(): Promise<IRoomEvent[]> {
    return [];
  }
  override getKnownRooms(): string[] {
    return [ROOM];
  }
}

/** One window for both halves: postMessage is a structured clone delivered in a later task. */
function fakeWindow(): () => void {
  const bus = new EventTarget();
  const parent = { postMessage: (data: unknown) => void setTimeout(() => bus.dispatchEvent(fromParent(data)), 0) };
  // From the host: the widget drops anything whose source is not its parent window.
  const fromParent = (data: unknown) => Object.defineProperty(new MessageEvent("message", { data: structuredClone(data), origin: params.parentOrigin }), "source", { value: parent });
  const g = globalThis as Record<string, unknown>;
  g.parent = parent;
  g.addEventListener = bus.addEventListener.bind(bus);
  g.removeEventListener = bus.removeEventListener.bind(bus);
  return () => {
    delete g.parent;
    delete g.addEventListener;
    delete g.removeEventListener;
  };
}

let element: FakeElement;
let host: ClientWidgetApi;
let restoreWindow: () => void;
let session: WidgetSession | null;

beforeEach(() => {
  // matrix-widget-api logs every message it posts.
  for (const level of ["log", "debug", "info", "warn"] as const) vi.spyOn(console, level).mockImplementation(() => undefined);
  restoreWindow = fakeWindow();
  element = new FakeElement();
  element.state = [joined(ME), joined("@ann:x"), inCall("@ann:x", "ANN1")];
  session = null;
});

afterEach(async () => {
  session?.api.transport.stop();
  host?.stop();
  // The library reports the requests the stop cut short a task later: still muted.
  await new Promise((r) => setTimeout(r, 0));
  restoreWindow();
  vi.restoreAllMocks();
});

/** `updateState: false`: an older Element that feeds state as timeline events and answers reads. */
async function connect(opts: { updateState?: boolean; params?: Partial<WidgetParams> } = {}): Promise<WidgetSession> {
  const iframe = Object.assign(new EventTarget(), { contentWindow: (globalThis as unknown as { parent: Window }).parent });
  host = new ClientWidgetApi(new Widget({ id: params.widgetId, creatorUserId: "@bot:parley.test", type: "m.custom", url: "https://parley.test/widget.html" }), iframe as unknown as HTMLIFrameElement, element);
  if (opts.updateState === false) {
    const versions = host.getWidgetVersions.bind(host);
    vi.spyOn(host, "getWidgetVersions").mockImplementation(async () => (await versions()).filter((v) => v !== UnstableApiVersion.MSC2762_UPDATE_STATE));
  }
  const connecting = WidgetSession.connect({ ...params, ...opts.params }, 2000);
  iframe.dispatchEvent(new Event("load"));
  session = await connecting;
  return session;
}

function feedKey(from: DeviceRef, encrypted: boolean, index = 0): Promise<void> {
  const content = keyContent(ROOM, from, index, new Uint8Array(32).fill(index + 1), Date.now());
  return host.feedToDevice({ type: CALL_KEYS_EVENT, sender: from.userId, content: content as unknown as Record<string, unknown> }, encrypted);
}

describe("widget media-key channel", () => {
  it("asks Element to send and receive the key to-device events, and keeps reading call memberships", async () => {
    await connect();
    expect(element.requested).toContain(SEND_KEYS);
    expect(element.requested).toContain(RECEIVE_KEYS);
    expect(element.requested).toContain(`org.matrix.msc2762.receive.state_event:${CALL_MEMBER_EVENT}`);
  });

  it("sends a key to all devices in one encrypted to-device request", async () => {
    const channel = await (await connect()).keyChannel();
    const content = keyContent(ROOM, { userId: ME, deviceId: "MYDEV" }, 3, new Uint8Array(32), 1);
    await channel.transport.send(
      [
        { userId: "@ann:x", deviceId: "ANN1" },
        { userId: "@ann:x", deviceId: "ANN2" },
        { userId: "@bob:x", deviceId: "BOB1" },
      ],
      content,
    );
    expect(element.sent).toEqual([{ type: CALL_KEYS_EVENT, encrypted: true, messages: { "@ann:x": { ANN1: content, ANN2: content }, "@bob:x": { BOB1: content } } }]);
  });

  it("delivers keys that came before anyone listened, then live ones, with the device each claims (the host's Olm binds the key to its sender's user only)", async () => {
    const w = await connect();
    await feedKey({ userId: "@ann:x", deviceId: "ANN1" }, true, 0);
    await feedKey({ userId: "@ann:x", deviceId: "ANN1" }, true, 1);
    const got: { from: KeySender; index: unknown }[] = [];
    const channel = await w.keyChannel();
    expect(channel.authenticatedDevices).toBe(false);
    const off = channel.transport.onKeys((from, content) => got.push({ from, index: (content as { keys: { index: number } }).keys.index }));
    expect(got).toEqual([
      { from: { userId: "@ann:x", deviceId: "ANN1" }, index: 0 },
      { from: { userId: "@ann:x", deviceId: "ANN1" }, index: 1 },
    ]);
    await feedKey({ userId: "@bob:x", deviceId: "BOB1" }, true, 2);
    expect(got.at(-1)).toEqual({ from: { userId: "@bob:x", deviceId: "BOB1" }, index: 2 });
    off();
    await feedKey({ userId: "@bob:x", deviceId: "BOB1" }, true, 3);
    expect(got).toHaveLength(3);
  });

  it("ignores keys Element did not receive Olm-encrypted", async () => {
    const w = await connect();
    await feedKey({ userId: "@eve:x", deviceId: "EVE1" }, false);
    const got: KeySender[] = [];
    (await w.keyChannel()).transport.onKeys((from) => got.push(from));
    await feedKey({ userId: "@eve:x", deviceId: "EVE1" }, false);
    expect(got).toEqual([]);
  });

  it("derives the call's devices from the room state and follows its changes", async () => {
    element.state.push(
      joined("@bob:x"),
      inCall("@bob:x", "BOB1", { created_ts: Date.now() - 10_000, expires: 5_000 }), // expired
      left("@cat:x"),
      inCall("@cat:x", "CAT1"), // not joined
      stateEvent(CALL_MEMBER_EVENT, "@ann:x", "_@bob:x_BOB2", { device_id: "BOB2" }), // someone else's key
      stateEvent(CALL_MEMBER_EVENT, ME, `_${ME}_OLD`, {}), // left the call
    );
    const { members } = await (await connect()).keyChannel();
    expect(members.devices()).toEqual([{ userId: "@ann:x", deviceId: "ANN1" }]);

    const changed = vi.fn();
    members.onChange(changed);
    await host.feedStateUpdate(inCall("@bob:x", "BOB1"));
    await vi.waitFor(() => expect(changed).toHaveBeenCalled());
    expect(members.devices()).toEqual([
      { userId: "@ann:x", deviceId: "ANN1" },
      { userId: "@bob:x", deviceId: "BOB1" },
    ]);
    changed.mockClear();
    await host.feedStateUpdate(left("@ann:x"));
    await vi.waitFor(() => expect(changed).toHaveBeenCalled());
    expect(members.devices()).toEqual([{ userId: "@bob:x", deviceId: "BOB1" }]);
  });

  it("follows call memberships fed as timeline events by a client without update_state", async () => {
    const { members } = await (await connect({ updateState: false })).keyChannel();
    expect(members.devices()).toEqual([{ userId: "@ann:x", deviceId: "ANN1" }]);
    const changed = vi.fn();
    members.onChange(changed);
    await host.feedEvent(inCall(ME, "MYDEV"));
    expect(changed).toHaveBeenCalled();
    expect(members.devices()).toContainEqual({ userId: ME, deviceId: "MYDEV" });
  });

  it("still hands the room's messages to the chat feed", async () => {
    const feed = (await connect()).roomFeed();
    await feed.start();
    const got: string[] = [];
    feed.events.on("message", (m) => got.push(m.body));
    await host.feedEvent({ type: "m.room.message", sender: "@ann:x", content: { msgtype: "m.text", body: "hi" }, room_id: ROOM, event_id: "$m1", origin_server_ts: 1, unsigned: {} });
    expect(got).toEqual(["hi"]);
    feed.stop();
  });

  it("has no key channel when Element refuses the to-device capabilities", async () => {
    element.denied.add(RECEIVE_KEYS);
    const w = await connect();
    const err = await w.keyChannel().catch((e: unknown) => e);
    expect(err).toBeInstanceOf(ParleyClientError);
    expect(err).toMatchObject({ code: "E2EE_UNSUPPORTED" });
    expect((err as ParleyClientError).detail).toContain(RECEIVE_KEYS);
  });

  it("has no key channel without the client's device id (keys would go to a device that does not exist)", async () => {
    const err = await (await connect({ params: { hostDevice: false } })).keyChannel().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: "E2EE_UNSUPPORTED", detail: expect.stringContaining("no device id") });
  });
});

describe("parseToDeviceKey", () => {
  it("names every reason a message is not an acceptable key", () => {
    expect(parseToDeviceKey({ type: "m.other", encrypted: false, content: {} })).toEqual({
      errors: [`type is not ${CALL_KEYS_EVENT}`, "not Olm-encrypted", "no sender"],
    });
    expect(parseToDeviceKey(null)).toEqual({ errors: ["not an object"] });
  });

  it("takes the user from the sender (the host's Olm) and the device, within that user, from the claim", () => {
    const content = { member: { claimed_device_id: "D1" } };
    expect(parseToDeviceKey({ type: CALL_KEYS_EVENT, encrypted: true, sender: "@a:x", content })).toEqual({ from: { userId: "@a:x", deviceId: "D1" }, content });
    expect(parseToDeviceKey({ type: CALL_KEYS_EVENT, encrypted: true, sender: "@a:x", content: {} })).toEqual({ from: { userId: "@a:x", deviceId: null }, content: {} });
  });
});
