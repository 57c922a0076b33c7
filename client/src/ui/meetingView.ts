// A meeting's stages: opening the room, the yes to a new meeting, asking to join, pre-join, the
// call, after leaving, or why it failed.
import type { MeetingModel } from "../state/meetingModel.ts";
import { callView } from "./callView.ts";
import { h, type View } from "./dom.ts";
import { knockView } from "./knockView.ts";
import { prejoinView } from "./prejoinView.ts";

export function meetingView(meeting: MeetingModel, opts: { userName: string; onHome: (() => void) | null }): View {
  const el = h("div", { class: "meeting" });
  let child: View | null = null;
  let stageKey: unknown = null;
  let stage: string | null = null;

  const homeButton = () => (opts.onHome ? h("button", { type: "button", id: "meeting-home", onclick: opts.onHome }, "Back to start") : null);

  const off = meeting.state.subscribe((s) => {
    // The knock's view stays while its flags change; it is built again without the preview.
    const key = s.stage === "prejoin" ? s.prejoin : s.stage === "call" ? s.call : s.stage === "knock" ? (s.prejoin ?? s.knock) : s;
    if (key === stageKey && s.stage === stage) return;
    stageKey = key;
    stage = s.stage;
    child?.dispose();
    switch (s.stage) {
      case "opening":
        child = { el: h("div", { class: "card centered", role: "status" }, h("p", {}, `Opening ${s.target}…`)), dispose: () => undefined };
        break;
      case "confirm":
        child = {
          el: h("div", { class: "card centered", "aria-labelledby": "meeting-new-title" },
            h("h2", { id: "meeting-new-title" }, "A new meeting"),
            h("p", { id: "meeting-new" }, `This is a new meeting: ${s.target}. Create it?`),
            h("p", { class: "hint" }, "No meeting has this name yet. If you meant to join one, go back and check the name."),
            h("div", { class: "row" }, h("button", { type: "button", class: "primary", id: "meeting-create", onclick: () => void meeting.create() }, "Create it"), homeButton()),
          ),
          dispose: () => undefined,
        };
        break;
      case "knock":
        child = knockView(s.knock, {
          onHome: opts.onHome,
          onRetry: () => void meeting.open(),
          lobby: s.prejoin ? { prejoin: s.prejoin, meeting, userName: opts.userName } : null,
        });
        break;
      case "prejoin":
        child = prejoinView(s.prejoin, s.room, () => meeting.join(), s.room.selfName ?? opts.userName);
        break;
      case "call":
        child = callView(s.call, s.room.name, { onLeave: () => void meeting.leave(), onRetry: () => meeting.retry() });
        break;
      case "left":
        child = {
          el: h("div", { class: "card centered" },
            h("h2", {}, s.reason ? "The call ended" : "You left the call"),
            s.reason ? h("p", { class: "error", role: "alert" }, s.reason) : h("p", {}, s.room.name),
            h("div", { class: "row" }, h("button", { type: "button", class: "primary", onclick: () => meeting.rejoin() }, "Join again"), homeButton()),
          ),
          dispose: () => undefined,
        };
        break;
      case "error":
        child = {
          el: h("div", { class: "card centered" },
            h("h2", {}, "Couldn't open the meeting"),
            h("p", { class: "error", role: "alert" }, s.message),
            h("div", { class: "row" }, h("button", { type: "button", class: "primary", onclick: () => void meeting.open() }, "Try again"), homeButton()),
          ),
          dispose: () => undefined,
        };
        break;
    }
    el.replaceChildren(child.el);
  }, true);

  return {
    el,
    dispose: () => {
      off();
      child?.dispose();
    },
  };
}
