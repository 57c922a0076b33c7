// The sign-in screen: which homeserver, which ways it offers (password, SSO), and the attempt.
// A full Matrix id of another server signs in at that server's homeserver (server discovery), so
// that a meeting link from another institution works with the user's own account.
import { ParleyClientError, toClientError } from "../errors.ts";
import { serverNameOf } from "../matrix/discovery.ts";
import type { LoginFlows } from "../matrix/login.ts";
import type { MatrixSession } from "../matrix/session.ts";
import { Store } from "./store.ts";

export interface LoginPort {
  normalize(input: string): string;
  flows(homeserverUrl: string): Promise<LoginFlows>;
  password(homeserverUrl: string, user: string, password: string): Promise<MatrixSession>;
  /** Sends the browser to the homeserver's SSO page (does not return in a browser). */
  startSso(homeserverUrl: string, idpId: string | undefined): void;
  /** The homeserver of a server name (.well-known), or a ParleyClientError that names the server. */
  discover(serverName: string): Promise<string>;
  /** The sign-in will most likely be this user's at this homeserver: the device may get ready for it. */
  expect?(homeserverUrl: string, userId: string): void;
}

/** The meeting a sign-in leads to (the page was opened by its link), and who hosts it. */
export interface LoginPurpose {
  target: string;
  /** The server name of the meeting's alias or room id; null when it has none. */
  hostedBy: string | null;
}

export interface LoginContext {
  /** This Parley's homeserver, filled in the form. */
  homeserver: string;
  /** Its server name: bare user names and ids of this server sign in there. */
  serverName: string;
  meeting: LoginPurpose | null;
}

/**
 * Where a password sign-in goes: null for the homeserver in the form (a bare user name, an id of
 * this Parley's server, or an address the user typed), else the server name whose homeserver is
 * to be discovered.
 */
export function serverToDiscover(user: string, ctx: { serverName: string; homeserverChosen: boolean }): string | null {
  const server = serverNameOf(user);
  if (!server || ctx.homeserverChosen || server.toLowerCase() === ctx.serverName.toLowerCase()) return null;
  return server;
}

/**
 * The user id a password sign-in will have, when the form tells it before /login answers: a bare
 * user name or an id of this Parley's server, at the homeserver in the form (not one the user
 * typed, whose server name is unknown, nor another server's, found only by discovery). Its user
 * name lower-cased, as homeservers register them (a homeserver's canonical id in another case
 * shows at the sign-in: LoginPort.password). Null otherwise, and for what is no Matrix user name.
 */
export function expectedUserId(user: string, ctx: { serverName: string; homeserverChosen: boolean }): string | null {
  const u = user.trim();
  if (ctx.homeserverChosen || !u) return null;
  let name = u;
  if (u.startsWith("@")) {
    const server = serverNameOf(u);
    if (!server || server.toLowerCase() !== ctx.serverName.toLowerCase()) return null;
    name = u.slice(1, u.indexOf(":"));
  }
  name = name.toLowerCase();
  return /^[a-z0-9._=\-/+]+$/.test(name) ? `@${name}:${ctx.serverName}` : null;
}

export interface LoginState {
  homeserver: string;
  flows: LoginFlows | null;
  /** Loading the homeserver's login flows. */
  checking: boolean;
  busy: boolean;
  error: string | null;
  /** Why the user is here (an expired sign-in, a failed SSO), shown above the form. */
  notice: string | null;
  meeting: LoginPurpose | null;
}

export class LoginModel {
  readonly state: Store<LoginState>;
  private readonly port: LoginPort;
  private readonly onSignedIn: (s: MatrixSession) => void;
  private readonly serverName: string;
  private flowsFor = "";
  /** The user typed a homeserver address: their ids sign in there, not where discovery says. */
  private homeserverChosen = false;

  constructor(port: LoginPort, ctx: LoginContext, onSignedIn: (s: MatrixSession) => void, notice: string | null = null) {
    this.port = port;
    this.onSignedIn = onSignedIn;
    this.serverName = ctx.serverName;
    this.state = new Store<LoginState>({
      homeserver: ctx.homeserver,
      flows: null,
      checking: false,
      busy: false,
      error: null,
      notice,
      meeting: ctx.meeting,
    });
  }

  /** The user changed the homeserver address in the form. */
  async chooseHomeserver(input: string): Promise<void> {
    this.homeserverChosen = true;
    await this.setHomeserver(input);
  }

  /** Looks up what the homeserver offers (on start, when the address changes, after discovery). */
  async setHomeserver(input: string): Promise<void> {
    let url: string;
    try {
      url = this.port.normalize(input);
    } catch (err) {
      this.state.update({ homeserver: input, flows: null, error: toClientError(err, "login").human });
      return;
    }
    if (url === this.flowsFor && this.state.get().flows) return;
    this.flowsFor = url;
    this.state.update({ homeserver: url, checking: true, error: null });
    try {
      const flows = await this.port.flows(url);
      if (this.flowsFor !== url) return;
      this.state.update({ flows, checking: false });
    } catch (err) {
      if (this.flowsFor !== url) return;
      this.state.update({ flows: null, checking: false, error: toClientError(err, "login").human });
    }
  }

  /** The password is being typed (or the user changed after it): the device may get ready for the user the form names. */
  expectUser(user: string): void {
    const userId = expectedUserId(user, { serverName: this.serverName, homeserverChosen: this.homeserverChosen });
    if (userId) this.port.expect?.(this.state.get().homeserver, userId);
  }

  async signInWithPassword(user: string, password: string): Promise<void> {
    if (this.state.get().busy) return;
    this.state.update({ busy: true, error: null });
    try {
      const server = serverToDiscover(user, { serverName: this.serverName, homeserverChosen: this.homeserverChosen });
      if (server) {
        // The form then shows where the password goes, and what that homeserver offers.
        await this.setHomeserver(await this.port.discover(server));
        const { flows, error } = this.state.get();
        if (error) return this.state.update({ busy: false });
        if (flows && !flows.password) {
          return this.state.update({ busy: false, error: `${server} doesn't take passwords here: sign in with single sign-on below.` });
        }
      }
      const session = await this.port.password(this.state.get().homeserver, user, password);
      this.state.update({ busy: false });
      this.onSignedIn(session);
    } catch (err) {
      this.state.update({ busy: false, error: toClientError(err, "login").human });
    }
  }

  signInWithSso(idpId?: string): void {
    const { flows, homeserver } = this.state.get();
    if (!flows?.sso) {
      this.state.update({ error: new ParleyClientError("NO_SSO", "login").human });
      return;
    }
    this.state.update({ busy: true, error: null });
    this.port.startSso(homeserver, idpId);
  }
}
