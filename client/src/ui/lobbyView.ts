// The lobby queue in the people panel: who is knocking (avatar, name, server, reason), with
// "Let in" / "Turn away" per person and "Let everyone in".
//
// Test ids (stable, for the browser tests):
//   lobby                      the section (hidden while nobody waits)
//   lobby-entry-<userId>       one waiting person
//   admit-<userId>             let them in
//   deny-<userId>              turn them away
//   admit-all                  let everyone in
import type { LobbyModel, LobbyRow } from "../state/lobbyModel.ts";
import { initialsOf } from "../state/memberDirectory.ts";
import { avatarEl, h, keyed, type View } from "./dom.ts";

export function lobbyView(lobby: LobbyModel): View {
  const title = h("h4", { id: "lobby-title" });
  const admitAll = h("button", { type: "button", class: "primary small", "data-testid": "admit-all", onclick: () => void lobby.admitAll() }, "Let everyone in");
  const list = h("ul", { class: "lobby-list", "aria-labelledby": "lobby-title" });
  const el = h("section", { class: "lobby", "data-testid": "lobby" }, h("div", { class: "panel-head" }, title, admitAll), list);
  const rows = new Map<string, HTMLElement>();

  const make = (r: LobbyRow) => {
    const admit = h("button", { type: "button", class: "primary small", "data-testid": `admit-${r.userId}`, onclick: () => void lobby.admit(r.userId) }, "Let in");
    const deny = h("button", { type: "button", class: "small", "data-testid": `deny-${r.userId}`, onclick: () => void lobby.deny(r.userId) }, "Turn away");
    return h("li", { class: "lobby-entry", "data-testid": `lobby-entry-${r.userId}` },
      h("span", { class: "who-avatar" }),
      h("div", { class: "who" }, h("span", { class: "who-name" }), h("span", { class: "who-server" }), h("q", { class: "who-reason" })),
      h("div", { class: "row-actions" }, admit, deny),
    );
  };
  const update = (li: HTMLElement, r: LobbyRow) => {
    const [avatar, who] = li.children as unknown as [HTMLElement, HTMLElement];
    const [name, server, reason] = who.children as unknown as [HTMLElement, HTMLElement, HTMLElement];
    if (avatar.dataset.url !== (r.avatarUrl ?? "")) {
      avatar.dataset.url = r.avatarUrl ?? "";
      avatar.replaceChildren(avatarEl(r.avatarUrl, initialsOf(r.name), r.userId));
    }
    name.textContent = r.name;
    server.textContent = r.userId === r.name ? r.server : `${r.userId}`;
    reason.textContent = r.reason ?? "";
    reason.hidden = !r.reason;
    li.title = r.since ? `Waiting since ${new Date(r.since).toLocaleTimeString()}` : "";
    li.setAttribute("aria-label", `${r.name} from ${r.server} is waiting${r.reason ? `: ${r.reason}` : ""}`);
  };

  const off = lobby.state.subscribe((s) => {
    el.hidden = s.waiting.length === 0;
    title.textContent = `Waiting to join (${s.waiting.length})`;
    keyed(list, rows, s.waiting, (r) => r.userId, make, update);
  }, true);
  return { el, dispose: off };
}
