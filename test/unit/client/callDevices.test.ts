import { describe, expect, it } from "vitest";
import type { DeviceLists } from "../../../client/src/rtc/devices.ts";
import { CallDevicesModel } from "../../../client/src/state/callDevices.ts";
import { tick } from "./fakes.ts";

function setup() {
  let lists: DeviceLists = { audioinput: [{ deviceId: "m1", label: "Mic 1" }], videoinput: [{ deviceId: "c1", label: "Cam 1" }], audiooutput: [] };
  let onChange: (() => void) | null = null;
  const inUse = { audio: "m1" as string | null, video: "c1" as string | null };
  const switched: string[] = [];
  const model = new CallDevicesModel(
    {
      list: async () => lists,
      onDeviceChange: (fn) => {
        onChange = fn;
        return () => (onChange = null);
      },
    },
    {
      switchDevice: async (kind, id) => {
        switched.push(`${kind} ${id}`);
        // The call model falls back to the default when the chosen device is gone.
        inUse[kind] = id === "gone" ? "default" : id;
      },
      deviceIds: () => ({ ...inUse }),
    },
  );
  return { model, switched, setLists: (l: DeviceLists) => (lists = l), change: () => onChange?.(), listening: () => onChange !== null };
}

describe("CallDevicesModel", () => {
  it("lists devices when the pickers open and shows the ones in use", async () => {
    const { model } = setup();
    expect(model.state.get()).toMatchObject({ open: false, audioDeviceId: "m1", videoDeviceId: "c1" });
    await model.setOpen(true);
    expect(model.state.get().devices.audioinput).toEqual([{ deviceId: "m1", label: "Mic 1" }]);
  });

  it("follows plugged devices only while open", async () => {
    const { model, setLists, change, listening } = setup();
    await model.setOpen(true);
    setLists({ audioinput: [{ deviceId: "m1", label: "Mic 1" }, { deviceId: "m2", label: "Headset" }], videoinput: [], audiooutput: [] });
    change();
    await tick();
    expect(model.state.get().devices.audioinput.map((d) => d.deviceId)).toEqual(["m1", "m2"]);
    await model.setOpen(false);
    expect(listening()).toBe(false);
  });

  it("asks the call to switch, then shows what the track really uses", async () => {
    const { model, switched } = setup();
    await model.choose("audio", "m2");
    expect(switched).toEqual(["audio m2"]);
    expect(model.state.get().audioDeviceId).toBe("m2");
    await model.choose("video", "gone");
    expect(model.state.get().videoDeviceId).toBe("default");
  });
});
