// "Join as guest" on the sign-in page of a meeting link: shown when the Parley takes guests; a
// name becomes a guest session (its own Matrix user and device, in Parley's namespace), and the
// usual meeting flow takes over (ask to join, wait for a host, join).
import { toClientError } from "../errors.ts";
import type { GuestMode } from "../matrix/guest.ts";
import type { MatrixSession } from "../matrix/session.ts";
import { Store } from "./store.ts";

/** As the server counts it (code points, after trimming). */
export const GUEST_NAME_MAX = 64;

export interface GuestPort {
  mode(): Promise<GuestMode>;
  create(name: string, meeting: string): Promise<MatrixSession>;
}

export interface GuestState {
  /** null while asking the server. */
  available: boolean | null;
  busy: boolean;
  error: string | null;
}

export class GuestModel {
  readonly state = new Store<GuestState>({ available: null, busy: false, error: null });
  readonly meeting: string;
  private readonly port: GuestPort;
  private readonly onSession: (s: MatrixSession) => void;

  constructor(port: GuestPort, meeting: string, onSession: (s: MatrixSession) => void) {
    this.port = port;
    this.meeting = meeting;
    this.onSession = onSession;
  }

  async load(): Promise<void> {
    const mode = await this.port.mode().catch(() => "off" as const);
    this.state.update({ available: mode === "lobby" });
  }

  async join(rawName: string): Promise<void> {
    if (this.state.get().busy) return;
    const name = rawName.replace(/\s+/g, " ").trim();
    if (!name) return this.state.update({ error: "Enter the name others will see." });
    if ([...name].length > GUEST_NAME_MAX) return this.state.update({ error: `Your name can have at most ${GUEST_NAME_MAX} characters.` });
    this.state.update({ busy: true, error: null });
    try {
      const session = await this.port.create(name, this.meeting);
      this.state.update({ busy: false });
      this.onSession(session);
    } catch (err) {
      this.state.update({ busy: false, error: toClientError(err, "login").human });
    }
  }
}
