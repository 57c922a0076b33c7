import { describe, expect, it } from "vitest";
import { mediaError } from "../../../client/src/rtc/devices.ts";
import { PrejoinModel, type PrejoinMediaPort } from "../../../client/src/state/prejoinModel.ts";
import { asTrack, FakeTrack, tick } from "./fakes.ts";

function media(opts: { fail?: Partial<Record<"audio" | "video", Error>> } = {}) {
  const opened: FakeTrack[] = [];
  const port: PrejoinMediaPort & { opened: FakeTrack[] } = {
    opened,
    list: async () => ({
      audioinput: [{ deviceId: "mic1", label: "Built-in mic" }, { deviceId: "mic2", label: "Headset" }],
      videoinput: [{ deviceId: "cam1", label: "Webcam" }],
      audiooutput: [],
    }),
    open: async (kind, deviceId) => {
      const f = opts.fail?.[kind];
      if (f) throw mediaError(f, kind);
      const t = new FakeTrack(kind, deviceId ?? (kind === "audio" ? "mic1" : "cam1"));
      opened.push(t);
      return asTrack(t);
    },
    stop: (t) => (t as unknown as FakeTrack | null)?.stop(),
    onDeviceChange: () => () => undefined,
  };
  return port;
}

const named = (name: string, message = "") => Object.assign(new Error(message), { name });

describe("PrejoinModel", () => {
  it("opens the mic and camera and lists devices", async () => {
    const m = new PrejoinModel(media());
    await m.start();
    const s = m.state.get();
    expect(s.audio).not.toBeNull();
    expect(s.video).not.toBeNull();
    expect(s.audioDeviceId).toBe("mic1");
    expect(s.devices.audioinput.map((d) => d.label)).toEqual(["Built-in mic", "Headset"]);
  });

  it("mutes by disabling the track and turns the camera off by releasing it", async () => {
    const port = media();
    const m = new PrejoinModel(port);
    await m.start();
    await m.setMic(false);
    expect((m.state.get().audio as unknown as FakeTrack).enabled).toBe(false);
    const cam = m.state.get().video as unknown as FakeTrack;
    await m.setCamera(false);
    expect(cam.readyState).toBe("ended");
    expect(m.state.get().video).toBeNull();
    await m.setCamera(true);
    expect(m.state.get().video).not.toBeNull();
  });

  it("switches device and stops the old track", async () => {
    const m = new PrejoinModel(media());
    await m.start();
    const old = m.state.get().audio as unknown as FakeTrack;
    await m.chooseDevice("audio", "mic2");
    expect(old.readyState).toBe("ended");
    expect(m.state.get().audioDeviceId).toBe("mic2");
  });

  it("puts a denied camera in words and joins without it", async () => {
    const m = new PrejoinModel(media({ fail: { video: named("NotAllowedError") } }));
    await m.start();
    const s = m.state.get();
    expect(s.cameraError).toBe("Parley isn't allowed to use your camera. Allow it in your browser's site settings, then try again.");
    expect(s.cameraOn).toBe(false);
    expect(m.handOff()).toMatchObject({ cameraOn: false, video: null, micOn: true });
  });

  it("says when the microphone is busy", async () => {
    const m = new PrejoinModel(media({ fail: { audio: named("NotReadableError") } }));
    await m.start();
    expect(m.state.get().micError).toBe("Your microphone couldn't be started. Another app may be using it.");
  });

  it("hands the tracks over instead of stopping them", async () => {
    const m = new PrejoinModel(media());
    await m.start();
    const handed = m.handOff();
    m.dispose();
    await tick();
    expect((handed.audio as unknown as FakeTrack).readyState).toBe("live");
    expect((handed.video as unknown as FakeTrack).readyState).toBe("live");
  });

  it("stops the preview when the screen goes away without joining", async () => {
    const m = new PrejoinModel(media());
    await m.start();
    const { audio, video } = m.state.get();
    m.dispose();
    expect((audio as unknown as FakeTrack).readyState).toBe("ended");
    expect((video as unknown as FakeTrack).readyState).toBe("ended");
  });
});

describe("PrejoinModel.settled", () => {
  it("waits for devices still opening, so joining early hands over the mic and camera", async () => {
    const port = media();
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const open = port.open;
    port.open = async (kind, deviceId) => {
      await gate; // the browser is slow to open devices
      return open(kind, deviceId);
    };
    const m = new PrejoinModel(port);
    void m.start();
    expect(m.handOff()).toMatchObject({ micOn: false, cameraOn: false }); // what joining used to get
    let settled = false;
    const waiting = m.settled().then(() => (settled = true));
    await tick();
    expect(settled).toBe(false);
    release();
    await waiting;
    expect(m.handOff()).toMatchObject({ micOn: true, cameraOn: true });
  });
});

describe("PrejoinModel.setConsent (the pre-join beside the wait to be let in)", () => {
  it("starts without a host, and asks about the call's host once the room opens, keeping its devices", async () => {
    const m = media();
    const p = new PrejoinModel(m);
    await p.start();
    expect(p.canJoin).toBe(true);
    const asked = { trust: "ask", host: "parley.b", api: "https://parley.b", origin: "https://parley.b" } as const;
    const yes = { ...asked, trust: "confirmed" } as const;
    p.setConsent({ host: asked, confirm: () => yes });
    expect(p.canJoin).toBe(false);
    expect(p.state.get().host).toEqual(asked);
    p.confirmHost();
    expect(p.canJoin).toBe(true);
    expect(m.opened).toHaveLength(2); // the same tracks: nothing opened again
    expect(p.handOff()).toMatchObject({ audio: asTrack(m.opened[0]!), video: asTrack(m.opened[1]!) });
  });
});
