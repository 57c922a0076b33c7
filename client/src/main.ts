// The standalone web client: fetch the client config, finish an SSO redirect if this is one,
// then hand the page to the app model and its views.
import "./ui/styles.css";
import { toClientError } from "./errors.ts";
import { discoverHomeserver, getLoginFlows, normalizeHomeserverUrl, passwordLogin, sessionIsValid, logout, ssoRedirectUrl, tokenLogin } from "./matrix/login.ts";
import { MatrixHttp } from "./matrix/http.ts";
import { meetingTarget, type ClientSettings } from "./matrix/rooms.ts";
import { safeStorage, SessionStore } from "./matrix/session.ts";
import { webMeetingServices } from "./webServices.ts";
import { AppModel } from "./state/appModel.ts";
import { h } from "./ui/dom.ts";
import { mountApp } from "./ui/appView.ts";

async function loadSettings(): Promise<ClientSettings> {
  const res = await fetch("/_parley/v1/client-config", { signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw new Error(`client-config: HTTP ${res.status}`);
  const raw = (await res.json()) as Partial<ClientSettings>;
  if (typeof raw.homeserverUrl !== "string" || typeof raw.serverName !== "string" || typeof raw.aliasPrefix !== "string") {
    throw new Error("client-config: missing homeserverUrl/serverName/aliasPrefix");
  }
  return { homeserverUrl: raw.homeserverUrl, serverName: raw.serverName, aliasPrefix: raw.aliasPrefix };
}

async function boot(root: HTMLElement): Promise<void> {
  let settings: ClientSettings;
  try {
    settings = await loadSettings();
  } catch (err) {
    root.replaceChildren(
      h("main", { id: "main" },
        h("div", { class: "card centered" },
          h("h2", {}, "Parley can't start"),
          h("p", { class: "error", role: "alert" }, "This page couldn't load its settings from the Parley server. Reload the page; if it keeps happening, tell your administrator."),
          h("p", { class: "hint" }, toClientError(err, "login").detail ?? ""),
        ),
      ),
    );
    return;
  }
  const sessions = new SessionStore(safeStorage("localStorage"), safeStorage("sessionStorage"));
  const app = new AppModel({
    settings,
    sessions,
    validate: (s) => sessionIsValid(s),
    logout: (s) => logout(s),
    completeSso: async () => {
      const params = new URLSearchParams(location.search);
      const token = params.get("loginToken");
      if (!token) return null;
      history.replaceState(null, "", location.pathname + location.hash);
      const pending = sessions.takePendingSso();
      const session = await tokenLogin(new MatrixHttp(pending?.homeserverUrl ?? settings.homeserverUrl), token);
      return { session, returnHash: pending?.returnHash ?? "" };
    },
    login: {
      normalize: normalizeHomeserverUrl,
      flows: (hs) => getLoginFlows(new MatrixHttp(hs)),
      password: (hs, user, password) => passwordLogin(new MatrixHttp(hs), user, password),
      startSso: (hs, idp) => {
        sessions.savePendingSso({ homeserverUrl: hs, returnHash: location.hash });
        location.assign(ssoRedirectUrl(new MatrixHttp(hs), location.origin + location.pathname, idp));
      },
      discover: (serverName) => discoverHomeserver(serverName),
    },
    meeting: (session) => webMeetingServices(session, location.origin),
    meetingTarget: (input) => meetingTarget(input, settings),
    navigate: (hash) => {
      location.hash = hash;
    },
  });
  const example = `#${settings.aliasPrefix}<name>:${settings.serverName}`;
  mountApp(root, app, { aliasExample: example, goHome: () => (location.hash = "#/") });
  addEventListener("hashchange", () => void app.route(location.hash));
  await app.start(location.hash);
}

void boot(document.getElementById("app")!);
