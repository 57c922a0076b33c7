// Federation policy: which servers may use this Parley. Matching follows m.room.server_acl
// (globs with * and ?, compared against the host without its port), so the ACL Parley puts in
// its rooms and the checks it makes itself can never disagree.

/** The server part of a user id: "@alice:example.org:8448" -> "example.org:8448". */
export function serverNameOf(userId: string): string {
  const i = userId.indexOf(":");
  if (!userId.startsWith("@") || i < 2 || i === userId.length - 1) throw new Error(`not a user id: ${userId}`);
  return userId.slice(i + 1);
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

export class FederationPolicy {
  /** Host globs, the own server first. */
  readonly allowed: readonly string[];

  constructor(ownServerName: string, allow: readonly string[]) {
    const own = hostOf(ownServerName);
    this.allowed = [own, ...allow.map(hostOf).filter((g) => g !== own)];
  }

  allowsServer(serverName: string): boolean {
    const host = hostOf(serverName);
    return this.allowed.some((glob) => globMatches(glob, host));
  }

  allowsUser(userId: string): boolean {
    try {
      return this.allowsServer(serverNameOf(userId));
    } catch {
      return false;
    }
  }

  /** The m.room.server_acl content for Parley's rooms. IP literals are allowed only when
   *  an allowed entry is one (test and private deployments named by address).
   *  The spec compares ACL entries with the host alone, but Synapse (1.163) compares them with
   *  the whole server name, port included; so each entry also appears as "<glob>:*", which
   *  matches "host:port" names on Synapse and nothing on servers that strip the port. */
  serverAcl(): ServerAclContent {
    const allow = this.allowed.flatMap((glob) => [glob, `${glob}:*`]);
    return { allow, deny: [], allow_ip_literals: this.allowed.some(isIpLiteral) };
  }

  describe(): string {
    return this.allowed.join(", ");
  }
}
