// The page frame: header with who is signed in, and the current screen.
import type { AppModel } from "../state/appModel.ts";
import { h, type View } from "./dom.ts";
import { guestView } from "./guestView.ts";
import { homeView } from "./homeView.ts";
import { loginView } from "./loginView.ts";
import { meetingView } from "./meetingView.ts";

export function mountApp(root: HTMLElement, app: AppModel, opts: { aliasExample: string; goHome: () => void }): () => void {
  const who = h("span", { class: "whoami" });
  const signOut = h("button", { type: "button", class: "link", onclick: () => void app.signOut() }, "Sign out");
  const main = h("main", { id: "main" });
  root.replaceChildren(
    h("header", { class: "top" }, h("a", { class: "brand", href: "#/" }, "Parley"), h("div", { class: "account" }, who, signOut)),
    main,
  );
  let view: View | null = null;
  let current: unknown = null;
  const off = app.state.subscribe((s) => {
    who.textContent = s.session?.userId ?? "";
    signOut.hidden = !s.session;
    const v = s.view;
    const key = v.screen === "login" ? v.login : v.screen === "meeting" ? v.meeting : v;
    if (key === current) return;
    current = key;
    view?.dispose();
    switch (v.screen) {
      case "loading":
        view = { el: h("p", { class: "centered", role: "status" }, "Loading…"), dispose: () => undefined };
        break;
      case "login":
        view = loginView(v.login);
        if (v.guest) {
          const [signIn, guest] = [view, guestView(v.guest)];
          view = { el: h("div", { class: "login-choices" }, signIn.el, guest.el), dispose: () => (signIn.dispose(), guest.dispose()) };
        }
        break;
      case "home":
        view = homeView(app, v.error, opts.aliasExample);
        break;
      case "meeting":
        view = meetingView(v.meeting, { userName: s.session?.userId ?? "", onHome: opts.goHome });
        break;
    }
    main.replaceChildren(view.el);
  }, true);
  return () => {
    off();
    view?.dispose();
  };
}
