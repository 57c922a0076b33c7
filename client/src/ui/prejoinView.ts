// Pre-join: camera preview, microphone level, device choice, mic/camera toggles, join.
import type { CallHost } from "../matrix/callTrust.ts";
import type { RoomSummary } from "../matrix/rooms.ts";
import { LevelMeter } from "../rtc/speaker.ts";
import type { PrejoinModel } from "../state/prejoinModel.ts";
import { fillSelect, h, setToggle, type View } from "./dom.ts";
import { ICONS } from "./icons.ts";

/** How often the pre-join's microphone meter moves (a dozen times a second is enough to see a voice). */
const METER_EVERY_MS = 80;

export function prejoinView(model: PrejoinModel, room: RoomSummary, onJoin: () => void, userName: string): View {
  const join = h("button", { type: "button", class: "primary join", id: "prejoin-join", onclick: () => model.canJoin && onJoin() }, "Join call");
  const parts = prejoinParts(model, userName, (canJoin) => (join.disabled = !canJoin));
  const el = h("section", { class: "prejoin", "aria-labelledby": "prejoin-title" },
    parts.preview,
    h("div", { class: "card prejoin-side" },
      h("h2", { id: "prejoin-title" }, room.name),
      room.hostedBy ? h("p", { class: "hint", id: "prejoin-hosted-by" }, `Hosted by ${room.hostedBy}`) : null,
      h("p", { class: "hint" }, "Check your camera and microphone, then join."),
      parts.host,
      ...parts.controls,
      join,
    ),
  );
  return { el, dispose: parts.dispose };
}

/**
 * The pre-join's pieces, for the pre-join and for the wait to be let in: the preview (with the
 * user's name), the host question, and the controls (mic and camera toggles, device choice, the
 * level meter, device errors). `canJoin` hears whether the call may start, as it changes.
 */
export function prejoinParts(model: PrejoinModel, userName: string, canJoin: (yes: boolean) => void): { preview: HTMLElement; host: HTMLElement; controls: HTMLElement[]; dispose(): void } {
  const video = h("video", { class: "preview-video", autoplay: true, playsInline: true, muted: true, "aria-label": "Your camera preview" });
  const placeholder = h("div", { class: "preview-off" }, "Camera is off");
  const meterFill = h("div", { class: "meter-fill" });
  const meter = h("div", { class: "meter", role: "meter", "aria-label": "Microphone level", "aria-valuemin": 0, "aria-valuemax": 100, "aria-valuenow": 0 }, meterFill);
  const micBtn = h("button", { type: "button", class: "toggle", id: "prejoin-mic" });
  const camBtn = h("button", { type: "button", class: "toggle", id: "prejoin-camera" });
  const micSel = h("select", { id: "prejoin-mic-device" });
  const camSel = h("select", { id: "prejoin-camera-device" });
  const micErr = h("p", { class: "error", role: "alert" });
  const camErr = h("p", { class: "error", role: "alert" });
  // Where the user's identity goes: asked by host name unless the trust rule already says yes.
  const hostText = h("p", { id: "prejoin-host" });
  const trustHost = h("button", { type: "button", id: "prejoin-trust-host", onclick: () => model.confirmHost() });
  const hostBox = h("div", { class: "prejoin-host" }, hostText, trustHost);

  micBtn.addEventListener("click", () => void model.setMic(!model.state.get().micOn));
  camBtn.addEventListener("click", () => void model.setCamera(!model.state.get().cameraOn));
  micSel.addEventListener("change", () => void model.chooseDevice("audio", micSel.value));
  camSel.addEventListener("change", () => void model.chooseDevice("video", camSel.value));

  const preview = h("div", { class: "preview" }, video, placeholder, h("div", { class: "preview-name" }, userName));
  const controls = [
    h("div", { class: "toggles" }, micBtn, camBtn),
    h("label", { for: "prejoin-mic-device" }, "Microphone"), micSel, meter, micErr,
    h("label", { for: "prejoin-camera-device" }, "Camera"), camSel, camErr,
  ];

  let meterTrack: MediaStreamTrack | null = null;
  let levelMeter: LevelMeter | null = null;
  let raf = 0;
  // The meter moves at most every METER_EVERY_MS, and only when its level changed: at every frame
  // it was a style and layout pass 60 times a second, on the page that makes the call's media
  // connection, runs its first sync and decrypts the media keys while the preview shows.
  let drawnAt = -Infinity;
  let shown = -1;
  const draw = (now: number) => {
    raf = requestAnimationFrame(draw);
    if (now - drawnAt < METER_EVERY_MS) return;
    drawnAt = now;
    const level = Math.round((levelMeter && model.state.get().micOn ? levelMeter.level() : 0) * 100);
    if (level === shown) return;
    shown = level;
    meterFill.style.width = `${level}%`;
    meter.setAttribute("aria-valuenow", String(level));
  };
  raf = requestAnimationFrame(draw);

  const showHost = (host: CallHost | null) => {
    hostBox.hidden = !host || host.trust === "origin";
    trustHost.hidden = host?.trust !== "ask";
    hostText.className = host?.trust === "refused" ? "error" : "hint";
    hostText.setAttribute("role", host?.trust === "refused" || host?.trust === "ask" ? "alert" : "status");
    if (!host || host.trust === "origin") hostText.textContent = "";
    else if (host.trust === "ask") hostText.textContent = `This meeting is hosted at ${host.host}. Send your identity there?`;
    else if (host.trust === "refused") hostText.textContent = host.reason;
    else hostText.textContent = `This meeting is hosted at ${host.host}.`;
    if (host?.trust === "ask") trustHost.textContent = `Yes, send it to ${host.host}`;
  };

  const off = model.state.subscribe((s) => {
    setToggle(micBtn, { pressed: s.micOn, label: "Microphone", icon: s.micOn ? ICONS.mic : ICONS.micOff, action: s.micOn ? "Mute your microphone" : "Unmute your microphone" });
    micBtn.classList.toggle("off", !s.micOn);
    setToggle(camBtn, { pressed: s.cameraOn, label: "Camera", icon: s.cameraOn ? ICONS.camera : ICONS.cameraOff, action: s.cameraOn ? "Turn your camera off" : "Turn your camera on" });
    camBtn.classList.toggle("off", !s.cameraOn);
    micBtn.disabled = s.starting.audio;
    camBtn.disabled = s.starting.video;
    fillSelect(micSel, s.devices.audioinput, s.audioDeviceId, "No microphone found");
    fillSelect(camSel, s.devices.videoinput, s.videoDeviceId, "No camera found");
    showHost(s.host);
    canJoin(model.canJoin);
    micErr.textContent = s.micError ?? "";
    camErr.textContent = s.cameraError ?? "";
    const videoTrack = s.cameraOn ? s.video : null;
    const current = (video.srcObject as MediaStream | null)?.getVideoTracks()[0] ?? null;
    if (current !== videoTrack) video.srcObject = videoTrack ? new MediaStream([videoTrack]) : null;
    placeholder.hidden = !!videoTrack;
    placeholder.textContent = s.starting.video ? "Starting camera…" : "Camera is off";
    if (s.audio !== meterTrack) {
      levelMeter?.close();
      meterTrack = s.audio;
      levelMeter = s.audio ? safeMeter(s.audio) : null;
    }
  }, true);

  return {
    preview,
    host: hostBox,
    controls,
    dispose: () => {
      off();
      cancelAnimationFrame(raf);
      levelMeter?.close();
      video.srcObject = null;
    },
  };
}

function safeMeter(track: MediaStreamTrack): LevelMeter | null {
  try {
    return new LevelMeter(track);
  } catch {
    return null;
  }
}
