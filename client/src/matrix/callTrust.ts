// Where a user's OpenID token may go. A room's org.parley.call state names the call API that hosts
// its call, but anyone with the power to send that state (any room admin, on any server) could
// name any URL, and the token proves the user's identity to whoever receives it. So the client
// sends it without asking only to
//   (a) the origin that served this client (the Parley the user chose to open), or
//   (b) an https call API announced by a Parley bot: the state's sender is `@<bot>:<server>` where
//       <bot> is a bot localpart and <server> a server this client's Parley allows (its own
//       homeserver and its federation allow-list, from client-config);
// anything else needs the user's yes to the host name, remembered per origin (c). Plain http is
// accepted only for loopback hosts, and only when the serving Parley says so (test stacks).
import { ParleyClientError } from "../errors.ts";
import type { OpenIdProvider } from "./openid.ts";
import type { KeyValueStorage } from "./session.ts";

/** From client-config: whose announcements are trusted, and whether loopback http is allowed. */
export interface CallTrustSettings {
  servers: string[];
  botLocalparts: string[];
  insecureLoopback: boolean;
}

/** A room's org.parley.call state: the call API it names and who sent it. */
export interface CallAnnouncement {
  api: string;
  sender: string;
}

export type TrustedBy = "origin" | "bot" | "confirmed";

/** The decision for one room: where the token goes and why, or what the user must decide. */
export type CallHost =
  | { trust: TrustedBy; api: string; origin: string; host: string }
  | { trust: "ask"; api: string; origin: string; host: string }
  | { trust: "refused"; host: string; reason: string };

export function isTrusted(h: CallHost): h is Extract<CallHost, { trust: TrustedBy }> {
  return h.trust === "origin" || h.trust === "bot" || h.trust === "confirmed";
}

/** localhost, [::1] or 127.x.y.z: the hosts where plain http may be allowed (test stacks). */
export function isLoopback(hostname: string): boolean {
  return hostname === "localhost" || hostname === "[::1]" || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(hostname);
}

/** "example.org:8448" -> "example.org" (IPv6 literals keep their brackets). */
function hostOf(serverName: string): string {
  const m = /^(\[[^\]]*\]|[^:]*)(?::\d+)?$/.exec(serverName);
  return m ? m[1]! : serverName;
}

function globMatches(glob: string, value: string): boolean {
  const re = glob.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp(`^${re}$`, "i").test(value);
}

/**
 * Whether `userId` is the bot of a server the settings allow. A glob naming a port compares the
 * whole server name, one without compares the host (as m.room.server_acl does).
 */
export function isParleyBot(userId: string, settings: Pick<CallTrustSettings, "servers" | "botLocalparts">): boolean {
  const m = /^@([^:]+):(.+)$/.exec(userId);
  if (!m || !settings.botLocalparts.includes(m[1]!)) return false;
  const server = m[2]!;
  return settings.servers.some((glob) => (/:\d+$/.test(glob) ? globMatches(glob, server) : globMatches(hostOf(glob), hostOf(server))));
}

/**
 * The decision for a room's announcement (null: the room names no call API, so the call is
 * hosted by the Parley that served this client). `confirmed` holds the origins the user said yes to.
 */
export function decideCallHost(
  call: CallAnnouncement | null,
  ctx: { origin: string; settings: CallTrustSettings; confirmed: (origin: string) => boolean },
): CallHost {
  const self = new URL(ctx.origin);
  if (!call) return { trust: "origin", api: self.origin, origin: self.origin, host: self.host };
  let u: URL;
  try {
    u = new URL(call.api);
  } catch {
    return { trust: "refused", host: call.api, reason: "The meeting names a call server that isn't a web address." };
  }
  if ((u.protocol !== "https:" && u.protocol !== "http:") || u.username || u.password || u.search || u.hash) {
    return { trust: "refused", host: u.host || call.api, reason: "The meeting names a call server that isn't a plain web address." };
  }
  const api = `${u.origin}${u.pathname.replace(/\/+$/, "")}`;
  const at = { api, origin: u.origin, host: u.host };
  if (u.origin === self.origin) return { trust: "origin", ...at };
  const secure = u.protocol === "https:" || (ctx.settings.insecureLoopback && isLoopback(u.hostname));
  if (!secure) return { trust: "refused", host: u.host, reason: `The meeting's call server (${u.host}) doesn't use a secure connection.` };
  if (isParleyBot(call.sender, ctx.settings)) return { trust: "bot", ...at };
  if (ctx.confirmed(u.origin)) return { trust: "confirmed", ...at };
  return { trust: "ask", ...at };
}

const CONSENTS = "parley.callHosts.v1";

/** The call hosts the user said yes to, by origin (localStorage: kept across sessions). */
export class HostConsents {
  private readonly storage: KeyValueStorage;

  constructor(storage: KeyValueStorage) {
    this.storage = storage;
  }

  private read(): string[] {
    try {
      const v = JSON.parse(this.storage.getItem(CONSENTS) ?? "[]") as unknown;
      return Array.isArray(v) ? v.filter((x): x is string => typeof x === "string") : [];
    } catch {
      return [];
    }
  }

  has(origin: string): boolean {
    return this.read().includes(origin);
  }

  add(origin: string): void {
    const all = this.read();
    if (!all.includes(origin)) this.storage.setItem(CONSENTS, JSON.stringify([...all, origin]));
  }
}

/** The rule with this client's origin, settings and the user's remembered answers. */
export class CallTrust {
  private readonly origin: string;
  private readonly settings: CallTrustSettings;
  private readonly consents: HostConsents;

  constructor(origin: string, settings: CallTrustSettings, consents: HostConsents) {
    this.origin = origin;
    this.settings = settings;
    this.consents = consents;
  }

  decide(call: CallAnnouncement | null): CallHost {
    return decideCallHost(call, { origin: this.origin, settings: this.settings, confirmed: (o) => this.consents.has(o) });
  }

  /** The user said yes to this host: remembered, and the decision made again. */
  confirm(call: CallAnnouncement | null): CallHost {
    const h = this.decide(call);
    if (h.trust === "ask") this.consents.add(h.origin);
    return this.decide(call);
  }
}

/**
 * The user's OpenID token, only for a call host the trust rule accepts at the moment the call
 * asks for it (decided again here: what the pre-join screen showed is not what is relied on).
 */
export function guardedOpenId(host: CallHost, openId: OpenIdProvider): OpenIdProvider {
  return async () => {
    if (!isTrusted(host)) {
      throw new ParleyClientError("M_FORBIDDEN", "join", {
        detail: `identity not sent to ${host.host}: ${host.trust}`,
        human:
          host.trust === "refused"
            ? host.reason
            : `This meeting is hosted at ${host.host}, and you haven't agreed to send your identity there.`,
      });
    }
    return openId();
  };
}
