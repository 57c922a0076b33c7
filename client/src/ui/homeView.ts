// Home: open a meeting by name, alias, room id or link.
import type { AppModel } from "../state/appModel.ts";
import { h, type View } from "./dom.ts";

export function homeView(app: AppModel, error: string | null, aliasExample: string): View {
  const input = h("input", { id: "open-target", name: "target", required: true, placeholder: "team-sync", autocomplete: "off", spellcheck: "false", "aria-describedby": "open-hint open-error" });
  const form = h("form", { class: "card open", "aria-labelledby": "open-title" },
    h("h2", { id: "open-title" }, "Open a meeting"),
    h("label", { for: "open-target" }, "Meeting name, alias, room id or link"),
    input,
    h("p", { class: "hint", id: "open-hint" }, `A name opens ${aliasExample}; anyone you share the link with can join from their own homeserver.`),
    h("button", { type: "submit", class: "primary" }, "Open"),
    h("p", { class: "error", role: "alert", id: "open-error" }, error ?? ""),
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    app.openMeeting(input.value);
  });
  queueMicrotask(() => input.focus());
  return { el: form, dispose: () => undefined };
}
