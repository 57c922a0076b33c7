// Switching microphone and camera during the call: a toolbar button opening two pickers.
//
// Test ids (stable, for the browser tests):
//   devices          the toolbar button
//   device-mic       <select> of microphones
//   device-camera    <select> of cameras
import type { CallDevicesModel } from "../state/callDevices.ts";
import { fillSelect, h, setToggle, type View } from "./dom.ts";
import { ICONS } from "./icons.ts";

export function devicesView(devices: CallDevicesModel): View {
  const button = h("button", { type: "button", class: "toggle", id: "call-devices", "data-testid": "devices", "aria-haspopup": "true", onclick: () => void devices.setOpen(!devices.state.get().open) });
  const mic = h("select", { id: "call-mic-device", "data-testid": "device-mic" });
  const camera = h("select", { id: "call-camera-device", "data-testid": "device-camera" });
  mic.addEventListener("change", () => void devices.choose("audio", mic.value));
  camera.addEventListener("change", () => void devices.choose("video", camera.value));
  const popover = h("div", { class: "popover device-picker", role: "group", "aria-label": "Devices" },
    h("label", { for: "call-mic-device" }, "Microphone"), mic,
    h("label", { for: "call-camera-device" }, "Camera"), camera,
  );
  const el = h("div", { class: "popover-anchor" }, button, popover);
  const off = devices.state.subscribe((s) => {
    popover.hidden = !s.open;
    setToggle(button, { pressed: s.open, label: "Devices", icon: ICONS.tune, action: s.open ? "Close the device choice" : "Choose microphone and camera" });
    fillSelect(mic, s.devices.audioinput, s.audioDeviceId, "No microphone found");
    fillSelect(camera, s.devices.videoinput, s.videoDeviceId, "No camera found");
  }, true);
  return { el, dispose: off };
}
