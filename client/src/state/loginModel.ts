// The sign-in screen: which homeserver, which ways it offers (password, SSO), and the attempt.
import { ParleyClientError, toClientError } from "../errors.ts";
import type { LoginFlows } from "../matrix/login.ts";
import type { MatrixSession } from "../matrix/session.ts";
import { Store } from "./store.ts";

export interface LoginPort {
  normalize(input: string): string;
  flows(homeserverUrl: string): Promise<LoginFlows>;
  password(homeserverUrl: string, user: string, password: string): Promise<MatrixSession>;
  /** Sends the browser to the homeserver's SSO page (does not return in a browser). */
  startSso(homeserverUrl: string, idpId: string | undefined): void;
  /** A homeserver from .well-known for a server name, or null. */
  discover(serverName: string): Promise<string | null>;
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
}

export class LoginModel {
  readonly state: Store<LoginState>;
  private readonly port: LoginPort;
  private readonly onSignedIn: (s: MatrixSession) => void;
  private flowsFor = "";

  constructor(port: LoginPort, defaultHomeserver: string, onSignedIn: (s: MatrixSession) => void, initialError: string | null = null) {
    this.port = port;
    this.onSignedIn = onSignedIn;
    this.state = new Store<LoginState>({
      homeserver: defaultHomeserver,
      flows: null,
      checking: false,
      busy: false,
      error: null,
      notice: initialError,
    });
  }

  /** Looks up what the homeserver offers (on start and when the address changes). */
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

  async signInWithPassword(user: string, password: string): Promise<void> {
    if (this.state.get().busy) return;
    this.state.update({ busy: true, error: null });
    try {
      let homeserver = this.state.get().homeserver;
      // "@alice:other.example" on a homeserver that isn't other.example: ask other.example where its homeserver is.
      const server = /^@[^:]+:(.+)$/.exec(user.trim())?.[1];
      if (server && !homeserver.includes(server)) {
        const found = await this.port.discover(server);
        if (found) {
          homeserver = found;
          this.state.update({ homeserver });
        }
      }
      const session = await this.port.password(homeserver, user, password);
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
