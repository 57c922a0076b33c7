// Federation policy: which servers may use this Parley. Matching follows m.room.server_acl
// (globs with * and ?, compared against the host), so the ACL Parley puts in its rooms and the
// checks it makes itself agree. An entry that names a port ("partner.example:8448") matches that
// port only; an entry without one matches the host on any port.

/** The server part of a user id: "@alice:example.org:8448" -> "example.org:8448". */
export function serverNameOf(userId: string): string {
  const i = userId.indexOf(":");
  if (!userId.startsWith("@") || i < 2 || i === userId.length - 1) throw new Error(`not a user id: ${userId}`);
  return userId.slice(i + 1);
}

/** The server part of a user id, or undefined when it is not one. */
export function serverOf(userId: string): string | undefined {
  try {
    return serverNameOf(userId);
  } catch {
    return undefined;
  }
}

/** A server name without its port: "[::1]:8448" -> "[::1]", "example.org:443" -> "example.org". */
export function hostOf(serverName: string): string {
  if (serverName.startsWith("[")) {
    const end = serverName.indexOf("]");
    return end === -1 ? serverName : serverName.slice(0, end + 1);
  }
  const i = serverName.lastIndexOf(":");
  return i !== -1 && /^\d+$/.test(serverName.slice(i + 1)) ? serverName.slice(0, i) : serverName;
}

export function isIpLiteral(host: string): boolean {
  return host.startsWith("[") || /^\d{1,3}(\.\d{1,3}){3}$/.test(host);
}

export function globMatches(glob: string, host: string): boolean {
  const re = glob.replace(/[.+^${}()|[\]\\]/g, "\\$&").replace(/\*/g, ".*").replace(/\?/g, ".");
  return new RegExp(`^${re}$`, "i").test(host);
}

export interface ServerAclContent {
  allow: string[];
  deny: string[];
  allow_ip_literals: boolean;
}

/** A server name or glob split at its port: "[::1]:84*" -> { host: "[::1]", port: "84*" }. */
export function splitPort(serverName: string): { host: string; port: string | undefined } {
  const host = hostOf(serverName);
  if (host === serverName) {
    // hostOf keeps non-numeric ports; a glob's port may be a glob.
    const i = serverName.startsWith("[") ? serverName.indexOf("]:") + 1 : serverName.lastIndexOf(":");
    if (i > 0 && /^[\d*?]+$/.test(serverName.slice(i + 1))) return { host: serverName.slice(0, i), port: serverName.slice(i + 1) };
    return { host, port: undefined };
  }
  return { host, port: serverName.slice(host.length + 1) };
}

interface AllowEntry {
  glob: string;
  host: string;
  /** undefined: any port. */
  port: string | undefined;
}

/** A set of server names and globs, matched like the allow-list (trusted servers, external ones). */
export class ServerSet {
  readonly #entries: readonly AllowEntry[];

  constructor(entries: readonly string[]) {
    this.#entries = entries.map((glob) => ({ glob, ...splitPort(glob) }));
  }

  get entries(): readonly AllowEntry[] {
    return this.#entries;
  }

  hasServer(serverName: string): boolean {
    const { host, port } = splitPort(serverName);
    return this.#entries.some(
      (e) => globMatches(e.host, host) && (e.port === undefined || (port !== undefined && globMatches(e.port, port))),
    );
  }

  hasUser(userId: string): boolean {
    try {
      return this.hasServer(serverNameOf(userId));
    } catch {
      return false;
    }
  }
}

export class FederationPolicy {
  /** Entries as configured, the own server name first. */
  readonly allowed: readonly string[];
  readonly #servers: ServerSet;

  constructor(ownServerName: string, allow: readonly string[]) {
    this.allowed = [...new Set([ownServerName, ...allow])];
    this.#servers = new ServerSet(this.allowed);
  }

  allowsServer(serverName: string): boolean {
    return this.#servers.hasServer(serverName);
  }

  allowsUser(userId: string): boolean {
    return this.#servers.hasUser(userId);
  }

  /** The m.room.server_acl content for Parley's rooms. IP literals are allowed only when
   *  an allowed entry is one (test and private deployments named by address).
   *  Synapse (1.163) checks ACLs twice with different names: the origin of an inbound
   *  transaction without its port (as the spec says), and an event sender's server name with it.
   *  So every entry appears as its host alone and with a port: "<host>:*" for an entry without
   *  a port, "<host>:<port>" for one with. A server name's port therefore cannot be fenced by the
   *  ACL (the host alone admits every port of it); Parley's own checks (allowsServer) compare it. */
  serverAcl(): ServerAclContent {
    const entries = this.#servers.entries;
    const allow = entries.flatMap((e) => [e.host, `${e.host}:${e.port ?? "*"}`]);
    return { allow: [...new Set(allow)], deny: [], allow_ip_literals: entries.some((e) => isIpLiteral(e.host)) };
  }

  describe(): string {
    return this.allowed.join(", ");
  }
}
