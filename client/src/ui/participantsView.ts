// The people panel: the lobby (for those who may let people in), the host tools, and everyone in
// the call with role, raised hand and mute state; hosts and co-hosts open a per-person menu.
//
// Test ids (stable, for the browser tests):
//   people-panel                     the panel
//   participant-<userId>             one person's row (data-role, data-hand, data-muted-audio,
//                                    data-forced-audio, data-forced-video)
//   menu-<userId>                    opens that person's menu (click it before its acts)
//   mute-audio-<userId>, mute-video-<userId>, allow-audio-<userId>, allow-video-<userId>,
//   stop-share-<userId>, lower-hand-<userId>, make-cohost-<userId>, make-participant-<userId>,
//   remove-<userId>, ban-<userId>    the menu's acts
//   mute-all                         mute everyone (but hosts and co-hosts)
//   settings-open                    the meeting settings sheet (hosts)
//   people-close                     close the panel
//   + the lobby's ids (lobbyView.ts)
import type { GovernanceModel } from "../state/governanceModel.ts";
import type { PersonRow } from "../state/participants.ts";
import { avatarEl, h, icon, keyed, replace, type View } from "./dom.ts";
import { ICONS } from "./icons.ts";
import { lobbyView } from "./lobbyView.ts";

export function participantsView(g: GovernanceModel, actions: { onSettings: () => void }): View {
  const title = h("h3", { id: "people-title" });
  const close = h("button", { type: "button", class: "icon-only", title: "Close", "aria-label": "Close the people panel", "data-testid": "people-close", onclick: () => g.lobby.setOpen(false) }, icon(ICONS.close));
  const muteAll = h("button", { type: "button", class: "small", "data-testid": "mute-all", onclick: () => void g.muteAll("audio") }, "Mute everyone");
  const settings = h("button", { type: "button", class: "small", "data-testid": "settings-open", onclick: actions.onSettings }, icon(ICONS.lock), "Meeting settings");
  const tools = h("div", { class: "host-tools" }, muteAll, settings);
  const lobby = lobbyView(g.lobby);
  const list = h("ul", { class: "people-list", "aria-labelledby": "people-title" });
  const el = h("aside", { class: "people", "data-testid": "people-panel", "aria-labelledby": "people-title" },
    h("div", { class: "panel-head" }, title, close),
    tools,
    lobby.el,
    list,
  );
  const rows = new Map<string, HTMLElement>();

  const make = (p: PersonRow) => {
    // The menu is a popover (the top layer): the panel's scrolling never clips it.
    const items = h("div", { class: "menu-items", role: "menu", popover: "auto" });
    const toggle = h("button", { type: "button", class: "icon-only menu-toggle", "data-testid": `menu-${p.userId}`, title: `Actions for ${p.name}`, "aria-label": `Actions for ${p.name}`, "aria-haspopup": "menu" }, icon(ICONS.more));
    toggle.popoverTargetElement = items;
    items.addEventListener("toggle", (ev) => {
      toggle.setAttribute("aria-expanded", String((ev as ToggleEvent).newState === "open"));
      if ((ev as ToggleEvent).newState === "open") placeBelow(items, toggle);
    });
    return h("li", { class: "person", "data-testid": `participant-${p.userId}` },
      h("span", { class: "who-avatar" }),
      h("div", { class: "who" }, h("span", { class: "who-name" }), h("span", { class: "who-role" })),
      h("span", { class: "person-state" }),
      h("span", { class: "menu" }, toggle, items),
    );
  };

  const update = (li: HTMLElement, p: PersonRow) => {
    const [avatar, who, state, menu] = li.children as unknown as [HTMLElement, HTMLElement, HTMLElement, HTMLElement];
    const items = menu.lastElementChild as HTMLElement;
    const [name, role] = who.children as unknown as [HTMLElement, HTMLElement];
    if (avatar.dataset.url !== (p.avatarUrl ?? "")) {
      avatar.dataset.url = p.avatarUrl ?? "";
      avatar.replaceChildren(avatarEl(p.avatarUrl, p.initials, p.userId));
    }
    name.textContent = p.name;
    role.textContent = p.roleText;
    role.hidden = !p.roleText;
    li.dataset.role = p.role;
    li.dataset.hand = String(p.hand !== null);
    li.dataset.mutedAudio = String(p.muted.audio);
    li.dataset.forcedAudio = String(p.forced.audio);
    li.dataset.forcedVideo = String(p.forced.video);
    replace(state, 
      p.hand !== null ? h("span", { class: "hand", title: "Hand raised" }, icon(ICONS.hand)) : null,
      p.sharing ? h("span", { class: "tag" }, "Sharing") : null,
      p.forced.audio || p.forced.video ? h("span", { class: "tag forced", title: "Muted by a host" }, "Muted by host") : null,
      p.muted.audio ? h("span", { class: "tile-muted", title: "Microphone muted" }, icon(ICONS.mutedSmall)) : null,
    );
    li.setAttribute("aria-label", `${p.name}${p.roleText ? `, ${p.roleText}` : ""}${p.hand !== null ? ", hand raised" : ""}${p.muted.audio ? ", muted" : ""}`);
    // The menu is rebuilt only when its acts change, so an open menu stays open.
    const key = p.actions.map((a) => a.id).join(",");
    menu.hidden = !p.actions.length;
    if (menu.dataset.key !== key) {
      menu.dataset.key = key;
      if (!p.actions.length && items.matches(":popover-open")) items.hidePopover();
      items.replaceChildren(
        ...p.actions.map((a) =>
          h("button", {
            type: "button",
            role: "menuitem",
            class: a.danger ? "small danger-text" : "small",
            "data-testid": `${a.id}-${p.userId}`,
            onclick: () => {
              items.hidePopover();
              void g.moderate(a.action);
            },
          }, a.label),
        ),
      );
    }
  };

  const off = g.state.subscribe((s) => {
    title.textContent = `People (${s.people.length})`;
    muteAll.hidden = !s.you.can.includes("mute_all");
    settings.hidden = !s.you.can.includes("settings");
    tools.hidden = muteAll.hidden && settings.hidden;
    keyed(list, rows, s.people, (p) => p.userId, make, update);
  }, true);
  const offOpen = g.lobby.state.subscribe((l) => {
    el.hidden = !l.open;
  }, true);

  return {
    el,
    dispose: () => {
      off();
      offOpen();
      lobby.dispose();
    },
  };
}

/** Puts a popover under its button, right-aligned, inside the window. */
function placeBelow(pop: HTMLElement, anchor: HTMLElement): void {
  const r = anchor.getBoundingClientRect();
  const { offsetWidth: w, offsetHeight: ht } = pop;
  pop.style.left = `${Math.max(8, Math.min(r.right - w, innerWidth - w - 8))}px`;
  pop.style.top = `${r.bottom + 4 + ht > innerHeight - 8 ? Math.max(8, r.top - 4 - ht) : r.bottom + 4}px`;
}
