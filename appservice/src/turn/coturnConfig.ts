// Parley generates the coturn (4.6, Debian's) configuration its TURN server runs with, as it does
// Janus's: shared-secret credentials only (Parley hands out short-lived ones), plain TURN over
// UDP and TCP on the given addresses, UDP relays only, and peers limited to the SFU's media
// addresses: the only peer a Parley call ever relays to is Janus, so nobody can use the
// institution's TURN server to reach anything else (its own LAN included). No CLI, no web admin,
// no STUN-only discovery extras (RFC 5780), no software version on the wire.
// No imports: no Matrix here.

export interface CoturnConfigInput {
  /** Addresses the TURN listeners bind (UDP and TCP). */
  listeningIps: string[];
  /** TURN listening port (UDP and TCP). */
  port: number;
  /** Address relayed media leaves from (what the SFU sees as the browser's relay candidate). */
  relayIp: string;
  /** Inclusive UDP port range of relay allocations. */
  relayPortRange: [number, number];
  /** realm: the institution's server name. */
  realm: string;
  /** static-auth-secret (the same secret Parley signs credentials with). */
  secret: string;
  /** The SFU's media addresses: the only peers relays may reach. Every other address is denied. */
  allowedPeerIps: string[];
  /** Allocations one username may hold at once (a device has two peer connections). */
  userQuota: number;
  /** Allocations at once on this server. */
  totalQuota: number;
  /** Bytes per second one allocation may relay (0: unlimited). */
  maxBytesPerSecond: number;
  /** Where coturn logs ("stdout" or a file). */
  logFile: string;
  pidFile: string;
  /** coturn opens its SQLite user database even when unused: keep it in the deployment's folder. */
  userDbFile: string;
}

const IPV4 = /^(25[0-5]|2[0-4]\d|1?\d?\d)(\.(25[0-5]|2[0-4]\d|1?\d?\d)){3}$/;
const IPV6 = /^[0-9A-Fa-f:.]+$/;

function ip(value: string, what: string): string {
  if (!IPV4.test(value) && !(value.includes(":") && IPV6.test(value))) throw new Error(`coturn config: ${what} must be an IP address: ${value}`);
  return value;
}

function port(value: number, what: string): string {
  if (!Number.isInteger(value) || value < 1 || value > 65535) throw new Error(`coturn config: bad ${what} ${value}`);
  return String(value);
}

function count(value: number, what: string): string {
  if (!Number.isInteger(value) || value < 0) throw new Error(`coturn config: ${what} must be a non-negative integer`);
  return String(value);
}

/** coturn's config is "key=value" lines: a value must not carry a line break or a comment. */
function plain(value: string, what: string): string {
  if (!value || /[\s#"]/.test(value) || [...value].some((c) => c.charCodeAt(0) < 0x20)) {
    throw new Error(`coturn config: ${what} must be non-empty, without spaces, quotes or '#'`);
  }
  return value;
}

const isLoopback = (a: string) => a.startsWith("127.") || a === "::1";

/** turnserver.conf contents. */
export function renderCoturnConfig(o: CoturnConfigInput): string {
  if (!o.listeningIps.length) throw new Error("coturn config: at least one listening address");
  if (!o.allowedPeerIps.length) throw new Error("coturn config: at least one allowed peer (the SFU's media address)");
  const [min, max] = o.relayPortRange;
  port(min, "relayPortRange start");
  port(max, "relayPortRange end");
  if (min > max) throw new Error("coturn config: relayPortRange start > end");
  if (o.secret.length < 32) throw new Error("coturn config: the shared secret must be at least 32 characters");
  const peers = o.allowedPeerIps.map((a) => ip(a, "allowedPeerIps"));
  const lines = [
    "# Written by Parley (appservice/src/turn/coturnConfig.ts).",
    ...o.listeningIps.map((a) => `listening-ip=${ip(a, "listeningIps")}`),
    `listening-port=${port(o.port, "port")}`,
    `relay-ip=${ip(o.relayIp, "relayIp")}`,
    `min-port=${min}`,
    `max-port=${max}`,
    `realm=${plain(o.realm, "realm")}`,
    // Credentials: only Parley's short-lived ones (HMAC of the username with this secret).
    "use-auth-secret",
    `static-auth-secret=${plain(o.secret, "secret")}`,
    "fingerprint",
    "stale-nonce=600",
    // Plain TURN only: media is DTLS-SRTP (and end-to-end encrypted) inside the relay anyway.
    "no-tls",
    "no-dtls",
    "no-rfc5780",
    "no-tcp-relay",
    "no-multicast-peers",
    // Relays reach the SFU and nothing else: everything denied, the SFU's addresses allowed back.
    "denied-peer-ip=0.0.0.0-255.255.255.255",
    "denied-peer-ip=::-ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
    ...peers.map((a) => `allowed-peer-ip=${a}`),
    // coturn refuses loopback peers before its allow list: only when the SFU itself is on loopback.
    ...(peers.some(isLoopback) ? ["allow-loopback-peers"] : []),
    `user-quota=${count(o.userQuota, "userQuota")}`,
    `total-quota=${count(o.totalQuota, "totalQuota")}`,
    `max-bps=${count(o.maxBytesPerSecond, "maxBytesPerSecond")}`,
    "no-cli",
    "no-software-attribute",
    "no-stun-backward-compatibility",
    `log-file=${plain(o.logFile, "logFile")}`,
    "simple-log",
    `pidfile=${plain(o.pidFile, "pidFile")}`,
    `userdb=${plain(o.userDbFile, "userDbFile")}`,
    "",
  ];
  return lines.join("\n");
}
