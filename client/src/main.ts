// The standalone web client: fetch the client config, finish an SSO redirect if this is one,
// then hand the page to the app model and its views.
import "./ui/styles.css";
import { toClientError } from "./errors.ts";
import { findHomeserver } from "./matrix/discovery.ts";
import { finishSso, getLoginFlows, newSsoNonce, normalizeHomeserverUrl, passwordLogin, sessionIsValid, logout, ssoRedirectUrl, ssoReturnUrl, tokenLogin } from "./matrix/login.ts";
import { CallTrust, HostConsents, type CallTrustSettings } from "./matrix/callTrust.ts";
import { createGuest, guestMode } from "./matrix/guest.ts";
import { MatrixHttp } from "./matrix/http.ts";
import { deleteCryptoStore, prepareCryptoBeforeSignIn, preloadCryptoCode, readyNextDevice, signInOnNextDevice } from "./matrix/deviceCrypto.ts";
import { isNewMeeting, isOwnMeetingAlias } from "./matrix/meetingInfo.ts";
import { meetingTarget, type ClientSettings } from "./matrix/rooms.ts";
import { safeStorage, SessionStore } from "./matrix/session.ts";
import { webMeetingServices } from "./webServices.ts";
import { AppModel } from "./state/appModel.ts";
import { h } from "./ui/dom.ts";
import { mountApp } from "./ui/appView.ts";

function parseCallTrust(raw: unknown): CallTrustSettings {
  const r = (raw ?? {}) as Record<string, unknown>;
  const strings = (v: unknown) => (Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : []);
  return { servers: strings(r.servers), botLocalparts: strings(r.botLocalparts), insecureLoopback: r.insecureLoopback === true };
}

async function loadSettings(): Promise<ClientSettings> {
  const res = await fetch("/_parley/v1/client-config", { signal: AbortSignal.timeout(10_000) });
  if (!res.ok) throw new Error(`client-config: HTTP ${res.status}`);
  const raw = (await res.json()) as Partial<Record<keyof ClientSettings, unknown>>;
  if (typeof raw.serverName !== "string" || typeof raw.aliasPrefix !== "string") {
    throw new Error("client-config: missing serverName/aliasPrefix");
  }
  const { serverName, aliasPrefix } = raw;
  const callTrust = parseCallTrust(raw.callTrust);
  // Without a public homeserver URL in the config: the server name's .well-known, else the name.
  const homeserverUrl =
    typeof raw.homeserverUrl === "string"
      ? raw.homeserverUrl
      : await findHomeserver(serverName, { insecureLoopback: callTrust.insecureLoopback }).catch(() => normalizeHomeserverUrl(serverName));
  return { homeserverUrl, serverName, aliasPrefix, callTrust };
}

async function boot(root: HTMLElement): Promise<void> {
  // A meeting link: its crypto's code loads while the page signs in (the join needs it first),
  // and, signed out, so does the crypto store of the device the sign-in will make.
  if (location.hash.startsWith("#/call/")) {
    void preloadCryptoCode();
    const storage = safeStorage("localStorage");
    if (!new SessionStore(storage).load()) readyNextDevice(storage);
  }
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
  const trust = new CallTrust(location.origin, settings.callTrust, new HostConsents(safeStorage("localStorage")));
  const app = new AppModel({
    settings,
    sessions,
    validate: (s) => sessionIsValid(s),
    logout: async (s) => {
      await logout(s);
      // The device is gone from the homeserver: its crypto store goes too, and the sign-in form
      // that follows gets a device made ready, as a meeting link opened signed out does.
      deleteCryptoStore(s.deviceId);
      readyNextDevice(safeStorage("localStorage"));
    },
    completeSso: async () => {
      const search = location.search;
      if (!new URLSearchParams(search).has("loginToken")) return null;
      history.replaceState(null, "", location.pathname + location.hash);
      return finishSso(search, sessions.takePendingSso(), (hs, token) => tokenLogin(new MatrixHttp(hs), token));
    },
    login: {
      normalize: normalizeHomeserverUrl,
      flows: (hs) => getLoginFlows(new MatrixHttp(hs)),
      password: (hs, user, password) => signInOnNextDevice((deviceId) => passwordLogin(new MatrixHttp(hs), user, password, deviceId), logout),
      expect: (hs, userId) => prepareCryptoBeforeSignIn(new MatrixHttp(hs).baseUrl, userId),
      startSso: (hs, idp) => {
        const nonce = newSsoNonce();
        sessions.savePendingSso({ homeserverUrl: hs, returnHash: location.hash, nonce });
        location.assign(ssoRedirectUrl(new MatrixHttp(hs), ssoReturnUrl(location.origin + location.pathname, nonce), idp));
      },
      discover: (serverName) => findHomeserver(serverName, { insecureLoopback: settings.callTrust.insecureLoopback }),
    },
    guests: { mode: () => guestMode(location.origin), create: (name, meeting) => createGuest(location.origin, name, meeting) },
    meeting: (session) =>
      webMeetingServices(
        session,
        trust,
        (target) => isNewMeeting(target, { settings, apiBase: location.origin }),
        (target) => isOwnMeetingAlias(target, settings),
      ),
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
