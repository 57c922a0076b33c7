// Reactions: the toolbar's picker (a few emoji) and the reactions everyone sent, floating over the
// grid for a few seconds with the sender's name.
//
// Test ids (stable, for the browser tests):
//   reactions              the toolbar button opening the picker
//   react-<name>           one emoji in the picker: thumbsup, clap, laugh, heart, tada, wow, thinking, pray
//   reaction-shown         one reaction on screen (data-user, data-emoji)
import { REACTIONS, type Reaction } from "../rtc/governanceProtocol.ts";
import type { GovernanceModel } from "../state/governanceModel.ts";
import type { ShownReaction } from "../state/reactionsModel.ts";
import { h, keyed, setToggle, type View } from "./dom.ts";
import { ICONS } from "./icons.ts";

const NAMES: Record<Reaction, [string, string]> = {
  "👍": ["thumbsup", "Thumbs up"],
  "👏": ["clap", "Applause"],
  "😂": ["laugh", "Laughter"],
  "❤️": ["heart", "Love"],
  "🎉": ["tada", "Celebration"],
  "😮": ["wow", "Surprise"],
  "🤔": ["thinking", "Thinking"],
  "🙏": ["pray", "Thanks"],
};

export function reactionsView(g: GovernanceModel): View & { button: HTMLButtonElement; overlay: HTMLElement } {
  const button = h("button", { type: "button", class: "toggle", id: "call-reactions", "data-testid": "reactions", "aria-haspopup": "true" });
  const picker = h("div", { class: "popover reaction-picker", role: "menu", "aria-label": "Send a reaction", hidden: true },
    ...REACTIONS.map((emoji) =>
      h("button", {
        type: "button",
        role: "menuitem",
        class: "emoji",
        title: NAMES[emoji][1],
        "aria-label": NAMES[emoji][1],
        "data-testid": `react-${NAMES[emoji][0]}`,
        onclick: () => {
          setOpen(false);
          void g.react(emoji);
        },
      }, emoji),
    ),
  );
  const setOpen = (open: boolean) => {
    picker.hidden = !open;
    setToggle(button, { pressed: open, label: "React", icon: ICONS.smile, action: open ? "Close the reactions" : "Send a reaction" });
  };
  setOpen(false);
  button.addEventListener("click", () => setOpen(picker.hidden));
  const el = h("div", { class: "popover-anchor" }, button, picker);

  const overlay = h("div", { class: "reactions-overlay", "aria-live": "polite" });
  const shown = new Map<string, HTMLElement>();
  const off = g.reactions.state.subscribe((list) => {
    keyed(
      overlay,
      shown,
      list,
      (r) => String(r.id),
      (r: ShownReaction) =>
        h("div", { class: "reaction", "data-testid": "reaction-shown", "data-user": r.userId, "data-emoji": r.emoji },
          h("span", { class: "reaction-emoji", "aria-hidden": "true" }, r.emoji),
          h("span", { class: "reaction-name" }, r.name),
          h("span", { class: "sr-only" }, ` reacted with ${NAMES[r.emoji][1].toLowerCase()}`),
        ),
      () => undefined,
    );
  }, true);

  return { el, button, overlay, dispose: off };
}
