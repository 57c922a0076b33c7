import { afterEach, beforeEach, describe, expect, it, vi } from "vitest";
import { CALL_KEYS_EVENT, PROVISIONED_KEY_RESEND_MS, ProvisionedKeyService, type KeyDevice } from "../../../appservice/src/calls/provisionedKeys.ts";

const A = { userId: "@a:x", deviceId: "ADEV" };
const B = { userId: "@b:y", deviceId: "BDEV" };
const C = { userId: "@c:z", deviceId: "CDEV" };

/** `unreachable`: device ids a send does not reach; `failing.left`: sends that fail outright (they reach nobody). */
function harness(unreachable = new Set<string>(), failing = { left: 0 }) {
  const sends: { type: string; to: string[]; index: number; key: string; content: Record<string, unknown> }[] = [];
  let n = 0;
  const svc = new ProvisionedKeyService({
    sender: {
      userId: "@parley:x",
      deviceId: async () => "BOTDEV",
      sendToDevices: async (type: string, devices: KeyDevice[], content: Record<string, unknown>) => {
        const keys = content.keys as { index: number; key: string };
        sends.push({ type, to: devices.map((d) => d.deviceId), index: keys.index, key: keys.key, content });
        if (failing.left > 0 && failing.left--) throw new Error("M_UNKNOWN: the homeserver failed");
        return { sent: devices.filter((d) => !unreachable.has(d.deviceId)), unreachable: devices.filter((d) => unreachable.has(d.deviceId)) };
      },
    },
    random: () => new Uint8Array(32).fill(++n),
    coalesceMs: 50,
  });
  return { svc, sends };
}

beforeEach(() => vi.useFakeTimers());
afterEach(() => vi.useRealTimers());

describe("ProvisionedKeyService", () => {
  it("sends one call key to every joined device, in MatrixRTC's to-device shape, from the bot's device", async () => {
    const { svc, sends } = harness();
    const [ca, cb] = [{}, {}];
    svc.join("call1", "!r:x", ca, A);
    svc.join("call1", "!r:x", cb, B);
    await vi.advanceTimersByTimeAsync(50);
    await svc.settled("call1");
    expect(sends).toHaveLength(1); // two joins close together: one rotation
    expect(sends[0]).toMatchObject({ type: CALL_KEYS_EVENT, to: ["ADEV", "BDEV"], index: 0 });
    expect(sends[0]!.content).toMatchObject({
      room_id: "!r:x",
      member: { id: "@parley:x:BOTDEV", claimed_device_id: "BOTDEV" },
      session: { application: "m.call", call_id: "", scope: "m.room" },
    });
    expect(Buffer.from(sends[0]!.key, "base64")).toHaveLength(32);
  });

  it("rotates on every membership change; a leaver never gets the new key", async () => {
    const { svc, sends } = harness();
    const [ca, cb, cc] = [{}, {}, {}];
    svc.join("call1", "!r:x", ca, A);
    svc.join("call1", "!r:x", cb, B);
    await vi.advanceTimersByTimeAsync(50);
    svc.join("call1", "!r:x", cc, C);
    await vi.advanceTimersByTimeAsync(50);
    svc.leave("call1", cc);
    await vi.advanceTimersByTimeAsync(50);
    await svc.settled("call1");
    expect(sends.map((s) => [s.index, s.to])).toEqual([
      [0, ["ADEV", "BDEV"]],
      [1, ["ADEV", "BDEV", "CDEV"]],
      [2, ["ADEV", "BDEV"]],
    ]);
    expect(new Set(sends.map((s) => s.key)).size).toBe(3);
  });

  it("reads the member set just before sending: a device evicted while a rotation is under way gets none of it", async () => {
    const sends: string[][] = [];
    let botDevice!: () => void;
    const gate = new Promise<string>((resolve) => (botDevice = () => resolve("BOTDEV")));
    const svc = new ProvisionedKeyService({
      sender: {
        userId: "@parley:x",
        deviceId: () => gate,
        sendToDevices: async (_type: string, devices: KeyDevice[]) => {
          sends.push(devices.map((d) => d.deviceId));
          return { sent: devices, unreachable: [] };
        },
      },
      random: () => new Uint8Array(32),
      coalesceMs: 50,
    });
    const [ca, cb] = [{}, {}];
    svc.join("call1", "!r:x", ca, A);
    svc.join("call1", "!r:x", cb, B);
    await vi.advanceTimersByTimeAsync(50); // the rotation starts and waits for the bot's device
    svc.leave("call1", cb); // B is evicted meanwhile
    botDevice();
    await vi.advanceTimersByTimeAsync(50);
    await svc.settled("call1");
    expect(sends.flat()).not.toContain("BDEV");
    expect(sends.at(-1)).toEqual(["ADEV"]);
  });

  it("forgets a call when its last device leaves, and keeps calls apart", async () => {
    const { svc, sends } = harness();
    const [ca, cb] = [{}, {}];
    svc.join("call1", "!r:x", ca, A);
    svc.join("call2", "!s:x", cb, B);
    svc.leave("call1", ca);
    await vi.advanceTimersByTimeAsync(50);
    await svc.settled("call2");
    expect(sends.map((s) => [s.content.room_id, s.to])).toEqual([["!s:x", ["BDEV"]]]);
  });

  it("sends the same key again to a device it did not reach (no Olm session yet), once reachable; the others are not sent it again", async () => {
    const unreachable = new Set(["BDEV"]);
    const { svc, sends } = harness(unreachable);
    const [ca, cb] = [{}, {}];
    svc.join("call1", "!r:x", ca, A);
    svc.join("call1", "!r:x", cb, B);
    await vi.advanceTimersByTimeAsync(50);
    await svc.settled("call1");
    expect(sends.map((s) => s.to)).toEqual([["ADEV", "BDEV"]]);
    await vi.advanceTimersByTimeAsync(PROVISIONED_KEY_RESEND_MS[0]!); // still no session
    await svc.settled("call1");
    unreachable.clear();
    await vi.advanceTimersByTimeAsync(PROVISIONED_KEY_RESEND_MS[1]!);
    await svc.settled("call1");
    expect(sends.map((s) => [s.to, s.index, s.key])).toEqual([0, 1, 2].map((i) => [i === 0 ? ["ADEV", "BDEV"] : ["BDEV"], 0, sends[0]!.key]));
    await vi.advanceTimersByTimeAsync(60_000);
    expect(sends).toHaveLength(3); // reached: no more
  });

  it(`gives a device up after ${PROVISIONED_KEY_RESEND_MS.length} resends, until the next rotation; a rotation ends the resends of the key before it`, async () => {
    const { svc, sends } = harness(new Set(["BDEV"]));
    const [ca, cb, cc] = [{}, {}, {}];
    svc.join("call1", "!r:x", ca, A);
    svc.join("call1", "!r:x", cb, B);
    await vi.advanceTimersByTimeAsync(50);
    await vi.advanceTimersByTimeAsync(PROVISIONED_KEY_RESEND_MS.reduce((a, b) => a + b, 0) + 60_000);
    await svc.settled("call1");
    expect(sends).toHaveLength(1 + PROVISIONED_KEY_RESEND_MS.length);
    expect(sends.slice(1).every((s) => s.index === 0 && s.to.join() === "BDEV")).toBe(true);

    // A new rotation (Carol joins) goes to everyone; Bob's resends are of the new key only.
    svc.join("call1", "!r:x", cc, C);
    await vi.advanceTimersByTimeAsync(50);
    await svc.settled("call1");
    expect(sends.at(-1)).toMatchObject({ index: 1, to: ["ADEV", "BDEV", "CDEV"] });
    svc.join("call1", "!r:x", {}, { userId: "@d:x", deviceId: "DDEV" }); // and another, before Bob's first resend
    await vi.advanceTimersByTimeAsync(50);
    await vi.advanceTimersByTimeAsync(PROVISIONED_KEY_RESEND_MS[0]!);
    await svc.settled("call1");
    expect(sends.filter((s) => s.index === 1)).toHaveLength(1);
    expect(sends.at(-1)).toMatchObject({ index: 2, to: ["BDEV"] });
  });

  it("a send that fails outright goes again to every device; nothing goes after stop", async () => {
    const failing = { left: 1 };
    const { svc, sends } = harness(new Set(), failing);
    const [ca, cb] = [{}, {}];
    svc.join("call1", "!r:x", ca, A);
    svc.join("call1", "!r:x", cb, B);
    await vi.advanceTimersByTimeAsync(50);
    await svc.settled("call1");
    expect(sends).toHaveLength(1);
    await vi.advanceTimersByTimeAsync(PROVISIONED_KEY_RESEND_MS[0]!);
    await svc.settled("call1");
    expect(sends.map((s) => [s.to, s.index])).toEqual([
      [["ADEV", "BDEV"], 0],
      [["ADEV", "BDEV"], 0],
    ]);
    // Failing again, then the service stops: nothing is sent after it.
    failing.left = 1;
    svc.join("call1", "!r:x", {}, C);
    await vi.advanceTimersByTimeAsync(50);
    await svc.settled("call1");
    expect(sends.at(-1)).toMatchObject({ index: 1, to: ["ADEV", "BDEV", "CDEV"] });
    const before = sends.length;
    svc.stop();
    await vi.advanceTimersByTimeAsync(60_000);
    expect(sends).toHaveLength(before);
  });
});
