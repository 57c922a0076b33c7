// The app: signed out -> login; signed in -> home (open a meeting) or a meeting from the link.
// Finishes an SSO sign-in when the homeserver redirects back with a loginToken.
import { ParleyClientError, toClientError } from "../errors.ts";
import { serverOfTarget, type ClientSettings } from "../matrix/rooms.ts";
import type { MatrixSession } from "../matrix/session.ts";
import { GuestModel, type GuestPort } from "./guestModel.ts";
import { LoginModel, type LoginPort } from "./loginModel.ts";
import { MeetingModel, type MeetingServices } from "./meetingModel.ts";
import { callHash, parseRoute } from "./router.ts";
import { Store } from "./store.ts";

export interface AppServices {
  settings: ClientSettings;
  sessions: {
    load(): MatrixSession | null;
    save(s: MatrixSession): void;
    clear(): void;
  };
  /** false when the homeserver no longer accepts the token. */
  validate(s: MatrixSession): Promise<boolean>;
  logout(s: MatrixSession): Promise<void>;
  /** When the page was opened by an SSO redirect: the finished session and where to go next. */
  completeSso(): Promise<{ session: MatrixSession; returnHash: string } | null>;
  login: LoginPort;
  /** "Join as guest" on a meeting link's sign-in page (absent: never offered). */
  guests?: GuestPort;
  meeting(session: MatrixSession): MeetingServices;
  meetingTarget(input: string): string;
  navigate(hash: string): void;
}

export type AppScreen =
  | { screen: "loading" }
  | { screen: "login"; login: LoginModel; guest?: GuestModel }
  | { screen: "home"; error: string | null }
  | { screen: "meeting"; meeting: MeetingModel };

export interface AppState {
  session: MatrixSession | null;
  view: AppScreen;
}

export class AppModel {
  readonly state = new Store<AppState>({ session: null, view: { screen: "loading" } });
  private readonly s: AppServices;
  private hash = "";

  constructor(services: AppServices) {
    this.s = services;
  }

  async start(hash: string): Promise<void> {
    this.hash = hash;
    try {
      const sso = await this.s.completeSso();
      if (sso) {
        this.s.sessions.save(sso.session);
        this.state.update({ session: sso.session });
        if (sso.returnHash && sso.returnHash !== hash) {
          this.hash = sso.returnHash;
          this.s.navigate(sso.returnHash);
        }
        return this.route(this.hash);
      }
    } catch (err) {
      return this.showLogin(`Single sign-on didn't finish: ${toClientError(err, "login").human}`);
    }
    const stored = this.s.sessions.load();
    if (stored) {
      try {
        if (!(await this.s.validate(stored))) {
          this.s.sessions.clear();
          return this.showLogin("Your sign-in has expired. Sign in again.");
        }
      } catch {
        // Homeserver unreachable: keep the session; the meeting screen will say what fails.
      }
      this.state.update({ session: stored });
    }
    await this.route(hash);
  }

  /** On every hash change. */
  async route(hash: string): Promise<void> {
    this.hash = hash;
    const session = this.state.get().session;
    if (!session) return this.showLogin(null);
    const route = parseRoute(hash);
    const view = this.state.get().view;
    if (route.name === "home") {
      this.disposeView();
      this.state.update({ view: { screen: "home", error: null } });
      return;
    }
    if (view.screen === "meeting" && view.meeting.state.get().target === route.target) return;
    this.disposeView();
    const meeting = new MeetingModel(route.target, this.s.meeting(session));
    this.state.update({ view: { screen: "meeting", meeting } });
    await meeting.open();
  }

  openMeeting(input: string): void {
    try {
      this.s.navigate(callHash(this.s.meetingTarget(input)));
    } catch (err) {
      const human = err instanceof ParleyClientError ? err.human : toClientError(err, "room").human;
      this.state.update({ view: { screen: "home", error: human } });
    }
  }

  async signOut(): Promise<void> {
    const session = this.state.get().session;
    this.disposeView();
    this.s.sessions.clear();
    this.state.update({ session: null });
    if (session) await this.s.logout(session);
    this.showLogin(null);
  }

  private showLogin(error: string | null): void {
    this.disposeView();
    const route = parseRoute(this.hash);
    const meeting = route.name === "call" ? { target: route.target, hostedBy: serverOfTarget(route.target) } : null;
    const { homeserverUrl: homeserver, serverName } = this.s.settings;
    const signedIn = (session: MatrixSession) => {
      this.s.sessions.save(session);
      this.state.update({ session });
      void this.route(this.hash);
    };
    const login = new LoginModel(this.s.login, { homeserver, serverName, meeting }, signedIn, error);
    const guest = this.s.guests && route.name === "call" ? new GuestModel(this.s.guests, route.target, signedIn) : undefined;
    this.state.update({ view: { screen: "login", login, ...(guest ? { guest } : {}) } });
    void login.setHomeserver(this.s.settings.homeserverUrl);
    void guest?.load();
  }

  private disposeView(): void {
    const view = this.state.get().view;
    if (view.screen === "meeting") view.meeting.dispose();
  }
}
