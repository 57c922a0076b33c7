// The meeting settings sheet (hosts): who may come in (access level), locking the meeting, and
// guests. Every change is sent at once; the controls show what the server says afterwards.
//
// Test ids (stable, for the browser tests):
//   settings-sheet     the sheet
//   settings-access    <select>: open | institution | invited
//   settings-lock      checkbox: locked
//   settings-guests    checkbox: guests allowed
//   settings-close     close the sheet
import type { Access } from "../rtc/governanceProtocol.ts";
import type { GovernanceModel } from "../state/governanceModel.ts";
import { h, icon, type View } from "./dom.ts";
import { ICONS } from "./icons.ts";

const ACCESS_TEXT: Record<Access, string> = {
  open: "Anyone with the link",
  institution: "People of this organisation; others ask to join",
  invited: "Only invited people; others ask to join",
};

export function settingsView(g: GovernanceModel): View & { open(): void } {
  const access = h("select", { id: "settings-access", "data-testid": "settings-access" },
    ...(Object.keys(ACCESS_TEXT) as Access[]).map((a) => h("option", { value: a }, ACCESS_TEXT[a])),
  );
  const lock = h("input", { type: "checkbox", id: "settings-lock", "data-testid": "settings-lock" });
  const guests = h("input", { type: "checkbox", id: "settings-guests", "data-testid": "settings-guests" });
  const close = h("button", { type: "button", class: "icon-only", "aria-label": "Close the settings", "data-testid": "settings-close" }, icon(ICONS.close));
  const el = h("div", { class: "sheet", role: "dialog", "aria-labelledby": "settings-title", "data-testid": "settings-sheet", hidden: true },
    h("div", { class: "panel-head" }, h("h3", { id: "settings-title" }, "Meeting settings"), close),
    h("label", { for: "settings-access" }, "Who can join"),
    access,
    h("label", { class: "check" }, lock, "Lock the meeting: nobody new can join or ask to"),
    h("label", { class: "check" }, guests, "Allow guest accounts"),
  );

  access.addEventListener("change", () => void g.changeSettings({ access: access.value as Access }));
  lock.addEventListener("change", () => void g.changeSettings({ locked: lock.checked }));
  guests.addEventListener("change", () => void g.changeSettings({ guests: guests.checked }));
  close.addEventListener("click", () => (el.hidden = true));

  const render = () => {
    const { meeting, you } = g.state.get();
    if (!you.can.includes("settings")) el.hidden = true;
    access.disabled = lock.disabled = guests.disabled = !meeting;
    if (!meeting) return;
    access.value = meeting.access;
    lock.checked = meeting.locked;
    guests.checked = meeting.guests;
  };
  const off = g.state.subscribe(render, true);
  return {
    el,
    open: () => {
      render();
      el.hidden = false;
      access.focus();
    },
    dispose: off,
  };
}
