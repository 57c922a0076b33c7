// Which addresses server discovery may connect to. A server name comes from the caller of the
// call API, so without this check Parley would open connections wherever a caller's DNS points:
// its own loopback services, the private network it sits in, cloud metadata endpoints. Only
// globally reachable unicast addresses pass; the rest (IANA's special-purpose registries) are
// refused unless the operator named the server explicitly (`federation.openidOverrides`) or
// allowed private addresses (`federation.allowPrivateAddresses`).
//
// The check runs on the address actually connected to: IP literals before connecting, host names
// inside the socket's DNS lookup (the `lookup` hook), so a name that resolves to a public address
// once and to 127.0.0.1 the next time (DNS rebinding) cannot slip past.
import dns, { type LookupAddress, type LookupOptions } from "node:dns";
import net from "node:net";

type Family = "ipv4" | "ipv6";

/** [label, family, network, prefix] — the first matching label is the one reported. */
const RANGES: readonly (readonly [string, Family, string, number])[] = [
  ["loopback", "ipv4", "127.0.0.0", 8],
  ["loopback", "ipv6", "::1", 128],
  ["unspecified", "ipv4", "0.0.0.0", 8],
  ["unspecified", "ipv6", "::", 128],
  ["broadcast", "ipv4", "255.255.255.255", 32],
  ["private", "ipv4", "10.0.0.0", 8],
  ["private", "ipv4", "172.16.0.0", 12],
  ["private", "ipv4", "192.168.0.0", 16],
  ["private", "ipv4", "100.64.0.0", 10], // shared address space (CGNAT)
  ["private", "ipv6", "fc00::", 7], // unique local
  ["private", "ipv6", "fec0::", 10], // site-local (deprecated)
  ["private", "ipv6", "64:ff9b:1::", 48], // local-use NAT64
  ["link-local", "ipv4", "169.254.0.0", 16],
  ["link-local", "ipv6", "fe80::", 10],
  ["multicast", "ipv4", "224.0.0.0", 4],
  ["multicast", "ipv6", "ff00::", 8],
  ["reserved", "ipv4", "192.0.0.0", 24], // IETF protocol assignments
  ["reserved", "ipv4", "192.0.2.0", 24], // documentation
  ["reserved", "ipv4", "198.51.100.0", 24],
  ["reserved", "ipv4", "203.0.113.0", 24],
  ["reserved", "ipv4", "192.88.99.0", 24], // 6to4 relay anycast (deprecated)
  ["reserved", "ipv4", "198.18.0.0", 15], // benchmarking
  ["reserved", "ipv4", "240.0.0.0", 4],
  ["reserved", "ipv6", "::", 96], // IPv4-compatible (deprecated)
  ["reserved", "ipv6", "::ffff:0:0:0", 96], // IPv4-translated (SIIT)
  ["reserved", "ipv6", "100::", 64], // discard
  ["reserved", "ipv6", "2001::", 23], // IETF protocol assignments (Teredo, ORCHID, ...)
  ["reserved", "ipv6", "2001:db8::", 32], // documentation
  ["reserved", "ipv6", "3fff::", 20], // documentation
  ["reserved", "ipv6", "2002::", 16], // 6to4: the embedded IPv4 address could be anything
  ["reserved", "ipv6", "5f00::", 16], // SRv6 SIDs
];

const LISTS: readonly { label: string; list: net.BlockList }[] = (() => {
  const byLabel = new Map<string, net.BlockList>();
  for (const [label, family, network, prefix] of RANGES) {
    let list = byLabel.get(label);
    if (!list) byLabel.set(label, (list = new net.BlockList()));
    list.addSubnet(network, prefix, family);
  }
  return [...byLabel].map(([label, list]) => ({ label, list }));
})();

/** The 32-bit IPv4 address inside the well-known NAT64 prefix 64:ff9b::/96, as dotted quad. */
function nat64Embedded(address: string): string | undefined {
  const m = /^64:ff9b::(?:([0-9a-f]{1,4}):([0-9a-f]{1,4})|(\d{1,3}(?:\.\d{1,3}){3}))$/i.exec(address);
  if (!m) return undefined;
  if (m[3]) return m[3];
  const hi = parseInt(m[1]!, 16);
  const lo = parseInt(m[2]!, 16);
  return [hi >> 8, hi & 255, lo >> 8, lo & 255].join(".");
}

/**
 * Why Parley must not connect to `address` on a caller's behalf ("loopback", "private",
 * "link-local", "multicast", "unspecified", "broadcast", "reserved"), or undefined when it is a
 * globally reachable unicast address. IPv4-mapped IPv6 addresses (::ffff:127.0.0.1) are judged
 * as the IPv4 address they carry; anything that is not an IP address is "invalid".
 */
export function blockedReason(address: string): string | undefined {
  const bare = address.replace(/^\[|\]$/g, "").replace(/%.*$/, "");
  const version = net.isIP(bare);
  if (version === 0) return "invalid";
  const family: Family = version === 4 ? "ipv4" : "ipv6";
  const embedded = family === "ipv6" ? nat64Embedded(bare) : undefined;
  if (embedded !== undefined) return blockedReason(embedded);
  // BlockList judges IPv4-mapped IPv6 addresses by the IPv4 rules (::ffff:7f00:1 is loopback).
  return LISTS.find(({ list }) => list.check(bare, family))?.label;
}

/** The error a refused address fails the connection with; its message names the address for logs. */
export class BlockedAddressError extends Error {
  readonly code = "ERR_PARLEY_BLOCKED_ADDRESS";
  readonly hostname: string;
  readonly addresses: readonly { address: string; reason: string }[];
  constructor(hostname: string, addresses: readonly { address: string; reason: string }[]) {
    super(
      `${hostname} resolves only to addresses Parley does not connect to: ` +
        addresses.map((a) => `${a.address} (${a.reason})`).join(", "),
    );
    this.name = "BlockedAddressError";
    this.hostname = hostname;
    this.addresses = addresses;
  }
}

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;
type LookupAll = (hostname: string, options: LookupOptions & { all: true }, cb: (err: NodeJS.ErrnoException | null, addresses: LookupAddress[]) => void) => void;

/**
 * A `lookup` for net/tls/http(s) connections that drops every address blockedReason() refuses,
 * failing with BlockedAddressError when none is left. Works for both call shapes Node uses
 * (one address, or `all: true` for happy eyeballs).
 */
export function guardedLookup(resolve: LookupAll = dns.lookup as unknown as LookupAll) {
  return (hostname: string, options: LookupOptions, callback: LookupCallback): void => {
    resolve(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, options.all ? [] : "", 0);
      const allowed = addresses.filter((a) => blockedReason(a.address) === undefined);
      if (allowed.length === 0) {
        const refused = addresses.map((a) => ({ address: a.address, reason: blockedReason(a.address)! }));
        return callback(new BlockedAddressError(hostname, refused) as NodeJS.ErrnoException, options.all ? [] : "", 0);
      }
      if (options.all) callback(null, allowed);
      else callback(null, allowed[0]!.address, allowed[0]!.family);
    });
  };
}
