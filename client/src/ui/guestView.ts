// "Join as guest": a name, and a button. Hidden unless the Parley takes guests.
import { GUEST_NAME_MAX, type GuestModel } from "../state/guestModel.ts";
import { h, type View } from "./dom.ts";

export function guestView(model: GuestModel): View {
  const name = h("input", { id: "guest-name", name: "guest-name", required: true, autocomplete: "name", maxlength: GUEST_NAME_MAX * 2, spellcheck: "false" });
  const submit = h("button", { type: "submit", class: "primary" }, "Join as guest");
  const error = h("p", { class: "error", role: "alert", id: "guest-error" });
  const form = h("form", { class: "card login guest", "aria-labelledby": "guest-title", "aria-describedby": "guest-error", novalidate: true, hidden: true },
    h("h2", { id: "guest-title" }, "No Matrix account?"),
    h("p", { class: "hint" }, "Join as a guest: others see your name marked “guest”, and a host lets you in."),
    h("label", { for: "guest-name" }, "Your name"),
    name,
    submit,
    error,
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    void model.join(name.value);
  });
  const off = model.state.subscribe((s) => {
    form.hidden = s.available !== true;
    error.textContent = s.error ?? "";
    submit.disabled = s.busy;
    submit.textContent = s.busy ? "Joining…" : "Join as guest";
  }, true);
  return { el: form, dispose: off };
}
