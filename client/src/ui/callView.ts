// The call: the tiles (tilesView.ts: pages, the speaker view, who is talking), the toolbar, the
// banner for reconnects and errors, the chat panel and the meeting's controls (meetingControls.ts).
//
// Test ids (stable, for the browser tests), besides the ids #call-mic, #call-camera, ...:
//   forced-mute-notice    "Muted by <host>" while a host's mute lasts (the mic button is disabled)
//   .call-status          the call's state: data-phase (the connection), data-media (whether the
//                         others' media arrives: alone|connecting|flowing|quiet|stalled)
//   #call-e2ee            the E2EE badge: data-state encrypted|failing|waiting|alone|no-media|off
//   + tilesView.ts
import type { ActiveCall } from "../state/meetingModel.ts";
import { chatView } from "./chatView.ts";
import { h, icon, setText, setToggle, type View } from "./dom.ts";
import { ICONS } from "./icons.ts";
import { meetingControls } from "./meetingControls.ts";
import { tilesView } from "./tilesView.ts";

const PHASE_TEXT: Record<string, string> = {
  idle: "Starting…",
  joining: "Joining the call…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  ended: "You left the call",
  failed: "Not connected",
};

/** The connection's phase, or what the media says when that is worse: stalled media is not "Connected". */
function statusText(phase: string, media: string | null): string {
  if ((phase === "connected" || phase === "reconnecting") && media === "stalled") return "Reconnecting media…";
  // Media still arrives: only the signalling socket is being reopened (a Parley restart).
  if (phase === "reconnecting" && (media === "flowing" || media === "quiet")) return "Connected · reconnecting to the server…";
  if (phase === "connected" && media === "connecting") return "Connecting media…";
  return PHASE_TEXT[phase] ?? phase;
}

export function callView(call: ActiveCall, roomName: string, actions: { onLeave: () => void; onRetry: () => void }): View {
  const { vm, chat } = call;
  const controls = meetingControls(call);
  const tiles = tilesView(call);
  const status = h("span", { class: "call-status", role: "status" });
  const e2ee = h("span", { class: "e2ee", id: "call-e2ee", role: "status", "aria-live": "polite" });
  const keys = h("span", { class: "e2ee-keys", id: "call-keys" });
  const banner = h("p", { class: "banner", role: "status", "aria-live": "polite" });
  const errorText = h("span", { role: "alert" });
  const retryBtn = h("button", { type: "button", class: "primary", onclick: actions.onRetry }, "Join again");
  const errorBox = h("div", { class: "banner error" }, errorText, retryBtn);
  const micBtn = h("button", { type: "button", class: "toggle", id: "call-mic", onclick: () => void vm.toggleMic() });
  const camBtn = h("button", { type: "button", class: "toggle", id: "call-camera", onclick: () => void vm.toggleCamera() });
  const screenBtn = h("button", { type: "button", class: "toggle", id: "call-screen", onclick: () => void vm.toggleScreenShare() });
  const chatBadge = h("span", { class: "badge", "aria-hidden": "true" });
  const chatBtn = h("button", { type: "button", class: "toggle", id: "call-chat", onclick: () => chat.setOpen(!chat.state.get().open) });
  const leaveBtn = h("button", { type: "button", class: "danger", id: "call-leave", onclick: actions.onLeave }, icon(ICONS.hangup), h("span", { class: "label" }, "Leave"));
  const forced = h("p", { class: "banner forced", role: "status", "data-testid": "forced-mute-notice", hidden: true });
  const chatPanel = chatView(chat);
  const stage = h("div", { class: "stage" }, h("div", { class: "grid-wrap" }, tiles.grid, controls.overlay), ...controls.panels, chatPanel.el);
  const toolbar = h("div", { class: "toolbar", role: "toolbar", "aria-label": "Call controls" }, micBtn, camBtn, screenBtn, ...controls.tools, chatBtn, leaveBtn, controls.endForAll);
  const el = h("section", { class: "call", "aria-label": `Call in ${roomName}` },
    h("div", { class: "call-top" }, h("h2", {}, roomName), e2ee, keys, status),
    banner,
    errorBox,
    ...controls.banners,
    forced,
    tiles.bar,
    stage,
    tiles.audio,
    toolbar,
    ...controls.dialogs,
  );
  const canShare = typeof navigator.mediaDevices?.getDisplayMedia === "function";

  const offVm = vm.state.subscribe((s) => {
    setText(status, statusText(s.phase, s.media));
    status.dataset.phase = s.phase;
    status.dataset.media = s.media ?? "";
    setText(e2ee, s.e2ee ? s.e2ee.text : "Not encrypted");
    e2ee.dataset.state = s.e2ee?.state ?? "off";
    e2ee.dataset.mode = s.e2ee?.mode ?? "";
    setText(keys, s.e2ee?.keys ?? "");
    keys.hidden = !s.e2ee;
    keys.dataset.mode = s.e2ee?.mode ?? "";
    setText(banner, s.notice ?? "");
    banner.hidden = !s.notice;
    setText(errorText, s.error ?? "");
    errorBox.hidden = !s.error;
    const over = s.phase === "failed" || s.phase === "ended";
    micBtn.hidden = camBtn.hidden = over;
    screenBtn.hidden = over || !canShare;
    for (const t of [...controls.tools, controls.endForAll]) t.classList.toggle("over", over);
    setText(forced, s.forcedNotice ? `${s.forcedNotice}. You can turn it back on once a host allows it.` : "");
    forced.hidden = !s.forcedNotice || over;
    // Forced off by a host, the button says who did it, not what a click would do.
    const micAction = s.forced.audio ? `Muted by ${s.forced.audio}` : s.micOn ? "Mute your microphone" : "Unmute your microphone";
    setToggle(micBtn, { pressed: s.micOn, label: "Microphone", icon: s.micOn ? ICONS.mic : ICONS.micOff, action: micAction });
    micBtn.classList.toggle("off", !s.micOn);
    micBtn.disabled = s.busy.mic || !!s.forced.audio;
    const camAction = s.forced.video ? `Camera turned off by ${s.forced.video}` : s.cameraOn ? "Turn your camera off" : "Turn your camera on";
    setToggle(camBtn, { pressed: s.cameraOn, label: "Camera", icon: s.cameraOn ? ICONS.camera : ICONS.cameraOff, action: camAction });
    camBtn.classList.toggle("off", !s.cameraOn);
    camBtn.disabled = s.busy.camera || !!s.forced.video;
    setToggle(screenBtn, { pressed: s.sharing, label: s.sharing ? "Stop sharing" : "Share screen", icon: ICONS.screen, action: s.sharing ? "Stop sharing your screen" : "Share your screen" });
    screenBtn.disabled = s.busy.screen || s.phase !== "connected" || (!s.sharing && !!s.forced.video);
  }, true);


  const offChat = chat.state.subscribe((c) => {
    setToggle(chatBtn, { pressed: c.open, label: "Chat", icon: ICONS.chat, action: c.open ? "Hide the chat" : "Show the chat" });
    chatBadge.textContent = c.unread ? String(c.unread) : "";
    chatBadge.hidden = !c.unread;
    chatBtn.append(chatBadge);
    if (c.unread) chatBtn.setAttribute("aria-description", `${c.unread} unread`);
    else chatBtn.removeAttribute("aria-description");
    stage.classList.toggle("with-chat", c.open);
  }, true);

  return {
    el,
    dispose: () => {
      offVm();
      offChat();
      chatPanel.dispose();
      controls.dispose();
      tiles.dispose();
    },
  };
}
