// The call: a grid of tiles (video or avatar, name, mute, speaking), the toolbar, the banner
// for reconnects and errors, the chat panel and the meeting's controls (meetingControls.ts).
// Tiles are kept by key and updated in place so video elements never restart.
//
// Test ids (stable, for the browser tests), besides the ids #call-mic, #call-camera, ...:
//   forced-mute-notice    "Muted by <host>" while a host's mute lasts (the mic button is disabled)
import type { Tile } from "../state/callModel.ts";
import { tileWidth } from "../state/layoutModel.ts";
import type { ActiveCall } from "../state/meetingModel.ts";
import { chatView } from "./chatView.ts";
import { h, hueOf, icon, setToggle, type View } from "./dom.ts";
import { ICONS } from "./icons.ts";
import { meetingControls } from "./meetingControls.ts";

interface TileEls {
  root: HTMLElement;
  video: HTMLVideoElement;
  audio: HTMLAudioElement | null;
  avatar: HTMLElement;
  name: HTMLElement;
  muted: HTMLElement;
  hand: HTMLElement;
  userId: string;
  localTrack: MediaStreamTrack | null;
  avatarUrl: string | null;
}

const PHASE_TEXT: Record<string, string> = {
  idle: "Starting…",
  joining: "Joining the call…",
  connected: "Connected",
  reconnecting: "Reconnecting…",
  ended: "You left the call",
  failed: "Not connected",
};

export function callView(call: ActiveCall, roomName: string, actions: { onLeave: () => void; onRetry: () => void }): View {
  const { vm, chat } = call;
  const controls = meetingControls(call);
  const grid = h("div", { class: "grid", role: "list", "aria-label": "Participants" });
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
  const stage = h("div", { class: "stage" }, h("div", { class: "grid-wrap" }, grid, controls.overlay), ...controls.panels, chatPanel.el);
  const toolbar = h("div", { class: "toolbar", role: "toolbar", "aria-label": "Call controls" }, micBtn, camBtn, screenBtn, ...controls.tools, chatBtn, leaveBtn, controls.endForAll);
  const el = h("section", { class: "call", "aria-label": `Call in ${roomName}` },
    h("div", { class: "call-top" }, h("h2", {}, roomName), e2ee, keys, status),
    banner,
    errorBox,
    ...controls.banners,
    forced,
    stage,
    toolbar,
    ...controls.dialogs,
  );
  const canShare = typeof navigator.mediaDevices?.getDisplayMedia === "function";

  const tiles = new Map<string, TileEls>();
  const layout = () => {
    const { width, height } = grid.getBoundingClientRect();
    if (width && height) grid.style.setProperty("--tile-w", `${tileWidth(grid.children.length, width, height)}px`);
  };
  const resize = new ResizeObserver(layout);
  resize.observe(grid);

  const renderTile = (t: Tile): TileEls => {
    let els = tiles.get(t.key);
    if (!els) {
      const video = h("video", { autoplay: true, playsInline: true, muted: true, class: "tile-video" });
      const audio = t.local ? null : h("audio", { autoplay: true });
      const avatar = h("div", { class: "avatar", "aria-hidden": "true" });
      const name = h("span", { class: "tile-name" });
      const muted = h("span", { class: "tile-muted", title: "Microphone muted" }, icon(ICONS.mutedSmall));
      const hand = h("span", { class: "hand", title: "Hand raised", hidden: true }, icon(ICONS.hand));
      const root = h("div", { class: "tile", role: "listitem" }, avatar, video, audio, h("div", { class: "tile-label" }, hand, muted, name));
      els = { root, video, audio, avatar, name, muted, hand, userId: t.userId, localTrack: null, avatarUrl: "" };
      tiles.set(t.key, els);
    }
    const e = els;
    e.root.classList.toggle("speaking", t.speaking);
    e.root.classList.toggle("local", t.local);
    e.root.classList.toggle("screen", t.screen);
    e.root.classList.toggle("video-off", !t.videoOn);
    e.root.classList.toggle("undecryptable", t.undecryptable);
    e.root.setAttribute(
      "aria-label",
      `${t.name}${t.screen ? ", sharing screen" : ""}${t.audioMuted ? ", muted" : ""}${t.speaking ? ", speaking" : ""}${t.undecryptable ? ", media can't be decrypted" : ""}`,
    );
    e.name.textContent = t.name;
    e.muted.hidden = !t.audioMuted;
    if (t.local) {
      if (e.localTrack !== t.localVideo) {
        e.localTrack = t.localVideo;
        e.video.srcObject = t.localVideo ? new MediaStream([t.localVideo]) : null;
      }
    } else {
      if (e.video.srcObject !== t.stream) e.video.srcObject = t.stream;
      if (e.audio && e.audio.srcObject !== t.stream) e.audio.srcObject = t.stream;
    }
    e.video.hidden = !t.videoOn;
    if (e.avatarUrl !== t.avatarUrl) {
      e.avatarUrl = t.avatarUrl;
      e.avatar.replaceChildren(t.avatarUrl ? h("img", { src: t.avatarUrl, alt: "" }) : h("span", { class: "initials" }, t.initials));
      if (!t.avatarUrl) e.avatar.dataset.hue = String(hueOf(t.userId));
    }
    return e;
  };

  // Raised hands show on the tiles too (the governance model knows them, per person).
  const markHands = () => {
    const raised = new Set(call.governance.state.get().people.filter((p) => p.hand !== null).map((p) => p.userId));
    for (const e of tiles.values()) e.hand.hidden = !raised.has(e.userId);
  };
  const offHands = call.governance.state.subscribe(markHands);

  const offVm = vm.state.subscribe((s) => {
    status.textContent = PHASE_TEXT[s.phase] ?? s.phase;
    status.dataset.phase = s.phase;
    e2ee.textContent = s.e2ee ? s.e2ee.text : "Not encrypted";
    e2ee.dataset.state = !s.e2ee ? "off" : s.e2ee.encrypted ? "encrypted" : s.e2ee.failing.length ? "failing" : "waiting";
    e2ee.dataset.mode = s.e2ee?.mode ?? "";
    keys.textContent = s.e2ee?.keys ?? "";
    keys.hidden = !s.e2ee;
    keys.dataset.mode = s.e2ee?.mode ?? "";
    banner.textContent = s.notice ?? "";
    banner.hidden = !s.notice;
    errorText.textContent = s.error ?? "";
    errorBox.hidden = !s.error;
    const over = s.phase === "failed" || s.phase === "ended";
    micBtn.hidden = camBtn.hidden = over;
    screenBtn.hidden = over || !canShare;
    for (const t of [...controls.tools, controls.endForAll]) t.classList.toggle("over", over);
    forced.textContent = s.forcedNotice ? `${s.forcedNotice}. You can turn it back on once a host allows it.` : "";
    forced.hidden = !s.forcedNotice || over;
    setToggle(micBtn, { pressed: s.micOn, label: "Microphone", icon: icon(s.micOn ? ICONS.mic : ICONS.micOff), action: s.micOn ? "Mute your microphone" : "Unmute your microphone" });
    micBtn.classList.toggle("off", !s.micOn);
    micBtn.disabled = s.busy.mic || !!s.forced.audio;
    if (s.forced.audio) micBtn.title = `Muted by ${s.forced.audio}`;
    setToggle(camBtn, { pressed: s.cameraOn, label: "Camera", icon: icon(s.cameraOn ? ICONS.camera : ICONS.cameraOff), action: s.cameraOn ? "Turn your camera off" : "Turn your camera on" });
    camBtn.classList.toggle("off", !s.cameraOn);
    camBtn.disabled = s.busy.camera || !!s.forced.video;
    if (s.forced.video) camBtn.title = `Camera turned off by ${s.forced.video}`;
    setToggle(screenBtn, { pressed: s.sharing, label: s.sharing ? "Stop sharing" : "Share screen", icon: icon(ICONS.screen), action: s.sharing ? "Stop sharing your screen" : "Share your screen" });
    screenBtn.disabled = s.busy.screen || s.phase !== "connected" || (!s.sharing && !!s.forced.video);

    const seen = new Set<string>();
    const ordered = s.tiles.map((t) => {
      seen.add(t.key);
      return renderTile(t).root;
    });
    for (const [key, e] of tiles) {
      if (seen.has(key)) continue;
      e.video.srcObject = null;
      if (e.audio) e.audio.srcObject = null;
      tiles.delete(key);
    }
    // Reorder only when needed: moving a playing video element restarts it in some browsers.
    const current = [...grid.children];
    if (current.length !== ordered.length || ordered.some((n, i) => current[i] !== n)) grid.replaceChildren(...ordered);
    layout();
    markHands();
  }, true);


  const offChat = chat.state.subscribe((c) => {
    setToggle(chatBtn, { pressed: c.open, label: "Chat", icon: icon(ICONS.chat), action: c.open ? "Hide the chat" : "Show the chat" });
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
      resize.disconnect();
      offVm();
      offChat();
      chatPanel.dispose();
      controls.dispose();
      offHands();
      for (const e of tiles.values()) {
        e.video.srcObject = null;
        if (e.audio) e.audio.srcObject = null;
      }
    },
  };
}
