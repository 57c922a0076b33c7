// Sign in: which meeting it leads to, homeserver address, user and password; SSO buttons where
// the homeserver offers them.
import type { LoginModel } from "../state/loginModel.ts";
import { h, replace, type View } from "./dom.ts";

export function loginView(model: LoginModel): View {
  const homeserver = h("input", { id: "login-homeserver", name: "homeserver", type: "url", required: true, autocomplete: "url", spellcheck: "false" });
  const user = h("input", { id: "login-user", name: "user", required: true, autocomplete: "username", placeholder: "alice or @alice:example.org", spellcheck: "false" });
  const password = h("input", { id: "login-password", name: "password", type: "password", required: true, autocomplete: "current-password" });
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const notice = h("p", { class: "notice", role: "status" });
  const error = h("p", { class: "error", role: "alert", id: "login-error" });
  const checking = h("p", { class: "hint", "aria-live": "polite" });
  const sso = h("div", { class: "sso" });
  const passwordFields = h("div", { class: "password-fields" },
    h("label", { for: "login-user" }, "User"), user,
    h("label", { for: "login-password" }, "Password"), password,
    submit,
  );

  const meeting = model.state.get().meeting;
  const title = meeting
    ? `Sign in to join ${meeting.target}${meeting.hostedBy ? `, hosted by ${meeting.hostedBy}` : ""}`
    : "Sign in with your Matrix account";
  const form = h("form", { class: "card login", "aria-labelledby": "login-title", "aria-describedby": "login-error", novalidate: true },
    h("h2", { id: "login-title" }, title),
    meeting ? h("p", { class: "hint", id: "login-purpose" }, "Use your own Matrix account: from another institution, type your full Matrix ID (@you:your.server).") : null,
    notice,
    h("label", { for: "login-homeserver" }, "Homeserver"),
    homeserver,
    checking,
    passwordFields,
    sso,
    error,
  );
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    void model.signInWithPassword(user.value, password.value);
  });
  homeserver.addEventListener("change", () => void model.chooseHomeserver(homeserver.value));
  // While the password is typed, the device the sign-in will make gets ready for the user named.
  password.addEventListener("input", () => model.expectUser(user.value));
  user.addEventListener("change", () => password.value && model.expectUser(user.value));

  let ssoKey = "";
  const off = model.state.subscribe((s) => {
    if (document.activeElement !== homeserver) homeserver.value = s.homeserver;
    notice.textContent = s.notice ?? "";
    notice.hidden = !s.notice;
    error.textContent = s.error ?? "";
    checking.textContent = s.checking ? "Checking the homeserver…" : "";
    submit.disabled = s.busy || s.checking;
    submit.textContent = s.busy ? "Signing in…" : "Sign in";
    passwordFields.hidden = !!s.flows && !s.flows.password;
    const key = JSON.stringify(s.flows?.sso ?? null) + String(s.busy);
    if (key !== ssoKey) {
      ssoKey = key;
      const providers = s.flows?.sso;
      if (!providers) replace(sso);
      else {
        const buttons = providers.length
          ? providers.map((p) => h("button", { type: "button", disabled: s.busy, onclick: () => model.signInWithSso(p.id) }, `Continue with ${p.name}`))
          : [h("button", { type: "button", disabled: s.busy, onclick: () => model.signInWithSso() }, "Sign in with single sign-on")];
        replace(sso, s.flows?.password ? h("p", { class: "or" }, "or") : null, ...buttons);
      }
    }
  }, true);
  return { el: form, dispose: off };
}
