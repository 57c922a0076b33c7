// The meeting's controls around the call grid: raise hand, reactions, the people panel with its
// lobby badge (and a chime when someone knocks), devices, "End for everyone" with its confirmation,
// the meeting settings, a refused act's message, and the "you are alone" hint with the link.
// callView.ts places the pieces.
//
// Test ids (stable, for the browser tests):
//   raise-hand            toggle (aria-pressed)
//   people                the people panel's toolbar button
//   lobby-badge           knocks not seen yet, on the people button (hidden at 0)
//   end-for-all           "End for everyone" (hosts; asks first)
//   end-confirm           yes, end it;  end-cancel: no
//   governance-error      a refused act, named;  governance-error-dismiss
//   alone-hint            "You're the only one here…";  copy-link: copies the meeting's link
//   copy-link-status      "Link copied"
//   + participantsView.ts, lobbyView.ts, settingsView.ts, reactionsView.ts, devicesView.ts
import type { ActiveCall } from "../state/meetingModel.ts";
import { devicesView } from "./devicesView.ts";
import { h, icon, setToggle, type View } from "./dom.ts";
import { ICONS } from "./icons.ts";
import { participantsView } from "./participantsView.ts";
import { reactionsView } from "./reactionsView.ts";
import { settingsView } from "./settingsView.ts";
import { Chime } from "./sound.ts";

export interface MeetingControls {
  /** Toolbar buttons, before chat and leave. */
  tools: HTMLElement[];
  /** After leave. */
  endForAll: HTMLButtonElement;
  /** Above the grid: a refused act, the alone hint. */
  banners: HTMLElement[];
  /** Over the grid. */
  overlay: HTMLElement;
  /** Beside the grid (the people panel). */
  panels: HTMLElement[];
  /** Dialogs over everything (settings, end confirmation). */
  dialogs: HTMLElement[];
  dispose(): void;
}

export function meetingControls(call: ActiveCall): MeetingControls {
  const g = call.governance;
  const views: View[] = [];
  const use = <V extends View>(v: V): V => (views.push(v), v);

  const hand = h("button", { type: "button", class: "toggle", id: "call-hand", "data-testid": "raise-hand", onclick: () => void g.setHand(!g.state.get().handRaised) });
  const badge = h("span", { class: "badge", "data-testid": "lobby-badge", "aria-hidden": "true", hidden: true });
  const people = h("button", { type: "button", class: "toggle", id: "call-people", "data-testid": "people", onclick: () => g.lobby.setOpen(!g.lobby.state.get().open) });
  const endForAll = h("button", { type: "button", class: "danger", id: "call-end-all", "data-testid": "end-for-all", title: "End the meeting for everyone", onclick: () => g.askEnd() }, "End for all");
  const reactions = use(reactionsView(g));
  const devices = use(devicesView(call.devices));
  const settings = use(settingsView(g));
  const panel = use(participantsView(g, { onSettings: () => settings.open() }));

  const errorText = h("span", {});
  const error = h("div", { class: "banner error", role: "alert", "data-testid": "governance-error", hidden: true },
    errorText,
    h("button", { type: "button", "data-testid": "governance-error-dismiss", onclick: () => g.dismissError() }, "Dismiss"),
  );

  const link = h("input", { type: "text", readOnly: true, class: "share-link", "aria-label": "Meeting link" });
  const copied = h("span", { class: "hint", "data-testid": "copy-link-status", role: "status" });
  const copy = h("button", { type: "button", class: "primary small", "data-testid": "copy-link" }, icon(ICONS.link), "Copy link");
  copy.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(link.value);
      copied.textContent = "Link copied";
    } catch {
      link.select();
      copied.textContent = "Press Ctrl+C (⌘C) to copy the selected link";
    }
  });
  const alone = h("div", { class: "banner alone", "data-testid": "alone-hint", hidden: true },
    h("span", {}, "You're the only one here. Share this link to invite others:"),
    link,
    copy,
    copied,
  );

  const confirm = h("div", { class: "sheet confirm", role: "alertdialog", "aria-labelledby": "end-title", "data-testid": "end-confirm-dialog", hidden: true },
    h("h3", { id: "end-title" }, "End the meeting for everyone?"),
    h("p", {}, "Everyone is disconnected, and only hosts can start it again."),
    h("div", { class: "row" },
      h("button", { type: "button", class: "danger", "data-testid": "end-confirm", onclick: () => void g.confirmEnd() }, "End for everyone"),
      h("button", { type: "button", "data-testid": "end-cancel", onclick: () => g.cancelEnd() }, "Cancel"),
    ),
  );

  const chime = new Chime();
  const offKnock = g.lobby.events.on("knock", () => chime.play());
  const offGov = g.state.subscribe((s) => {
    setToggle(hand, { pressed: s.handRaised, label: s.handRaised ? "Lower hand" : "Raise hand", icon: ICONS.hand, action: s.handRaised ? "Lower your hand" : "Raise your hand" });
    endForAll.hidden = !s.you.can.includes("end");
    errorText.textContent = s.error ?? "";
    error.hidden = !s.error;
    alone.hidden = !(s.alone && s.shareLink);
    if (s.shareLink && link.value !== s.shareLink) link.value = s.shareLink;
    confirm.hidden = !s.confirmingEnd;
  }, true);
  const offLobby = g.lobby.state.subscribe((l) => {
    setToggle(people, { pressed: l.open, label: "People", icon: ICONS.people, action: l.open ? "Hide the people" : "Show the people" });
    badge.textContent = l.unseen ? String(l.unseen) : "";
    badge.hidden = !l.unseen;
    people.append(badge);
    if (l.unseen) people.setAttribute("aria-description", `${l.unseen} waiting to join`);
    else people.removeAttribute("aria-description");
  }, true);

  return {
    tools: [hand, reactions.el, people, devices.el],
    endForAll,
    banners: [error, alone],
    overlay: reactions.overlay,
    panels: [panel.el],
    dialogs: [settings.el, confirm],
    dispose: () => {
      offKnock();
      offGov();
      offLobby();
      chime.close();
      for (const v of views) v.dispose();
    },
  };
}
