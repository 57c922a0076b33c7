// Which addresses discovery may connect to, and the transport refusing the others before any
// connection is made (IP literals up front, host names in the socket's DNS lookup).
import net, { type AddressInfo } from "node:net";
import http from "node:http";
import type { LookupAddress } from "node:dns";
import { afterEach, describe, expect, it } from "vitest";
import { BlockedAddressError, blockedReason, guardedLookup } from "../../../appservice/src/matrix/addressGuard.ts";
import { nodeFederationHttp, TransportError, type ServerTarget } from "../../../appservice/src/matrix/serverDiscovery.ts";

describe("blockedReason", () => {
  it.each([
    ["127.0.0.1", "loopback"],
    ["127.255.0.9", "loopback"],
    ["::1", "loopback"],
    ["[::1]", "loopback"],
    ["::ffff:127.0.0.1", "loopback"],
    ["::ffff:7f00:1", "loopback"],
    ["64:ff9b::7f00:1", "loopback"],
    ["0.0.0.0", "unspecified"],
    ["::", "unspecified"],
    ["255.255.255.255", "broadcast"],
    ["10.99.0.1", "private"],
    ["172.16.0.1", "private"],
    ["172.31.255.255", "private"],
    ["192.168.1.1", "private"],
    ["100.64.0.1", "private"],
    ["100.127.255.254", "private"],
    ["::ffff:10.0.0.1", "private"],
    ["::ffff:a00:1", "private"],
    ["fd12:3456::1", "private"],
    ["fc00::1", "private"],
    ["169.254.169.254", "link-local"],
    ["::ffff:169.254.169.254", "link-local"],
    ["fe80::1", "link-local"],
    ["fe80::1%eth0", "link-local"],
    ["224.0.0.251", "multicast"],
    ["239.1.2.3", "multicast"],
    ["ff02::1", "multicast"],
    ["192.0.2.1", "reserved"],
    ["198.18.0.1", "reserved"],
    ["240.0.0.1", "reserved"],
    ["2001:db8::1", "reserved"],
    ["::7f00:1", "reserved"],
    ["2002:7f00:1::1", "reserved"],
    ["not an address", "invalid"],
  ])("%s is %s", (address, reason) => {
    expect(blockedReason(address)).toBe(reason);
  });

  it.each(["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "192.169.0.1", "::ffff:8.8.8.8", "64:ff9b::808:808", "2606:4700:4700::1111", "2a00:1450::1"])(
    "%s is public",
    (address) => {
      expect(blockedReason(address)).toBeUndefined();
    },
  );
});

/** A resolver answering `addresses` for any name. */
const resolver = (addresses: LookupAddress[]) => (_h: string, _o: unknown, cb: (err: NodeJS.ErrnoException | null, a: LookupAddress[]) => void) =>
  cb(null, addresses);

function lookup(addresses: LookupAddress[], all: boolean) {
  return new Promise<{ err: Error | null; result: unknown }>((resolve) =>
    guardedLookup(resolver(addresses))("h.example", { all }, (err, address, family) => resolve({ err, result: all ? address : [address, family] })),
  );
}

describe("guardedLookup", () => {
  const pub = { address: "203.0.114.7", family: 4 };
  const loop = { address: "127.0.0.1", family: 4 };
  const ula = { address: "fd00::1", family: 6 };

  it("drops refused addresses and keeps the public ones, in both call shapes", async () => {
    expect(await lookup([loop, pub, ula], true)).toEqual({ err: null, result: [pub] });
    expect(await lookup([loop, pub], false)).toEqual({ err: null, result: [pub.address, 4] });
  });

  it("fails with BlockedAddressError naming the addresses when none is left", async () => {
    const { err } = await lookup([loop, ula], true);
    expect(err).toBeInstanceOf(BlockedAddressError);
    expect(err!.message).toBe("h.example resolves only to addresses Parley does not connect to: 127.0.0.1 (loopback), fd00::1 (private)");
  });
});

describe("nodeFederationHttp and non-public addresses", () => {
  const cleanup: (() => void)[] = [];
  afterEach(() => cleanup.splice(0).forEach((f) => f()));

  /** An HTTP listener on loopback that counts the connections it accepts. */
  async function listener() {
    const server = http.createServer((_req, res) => res.end("{}"));
    let connections = 0;
    server.on("connection", () => connections++);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    cleanup.push(() => server.close());
    return { port: (server.address() as AddressInfo).port, connections: () => connections };
  }

  const target = (host: string, port: number, over: Partial<ServerTarget> = {}): ServerTarget => ({
    scheme: "http", host, port, hostHeader: `${host}:${port}`, tlsName: host, pathPrefix: "", ...over,
  });

  async function get(t: ReturnType<typeof nodeFederationHttp>, tgt: ServerTarget) {
    cleanup.push(() => t.close());
    return t.get(tgt, "/x").catch((e: unknown) => e as TransportError);
  }

  it("refuses an IP literal on loopback without connecting", async () => {
    const l = await listener();
    const err = await get(nodeFederationHttp(), target("127.0.0.1", l.port));
    expect(err).toBeInstanceOf(TransportError);
    expect((err as TransportError).kind).toBe("blocked");
    expect((err as TransportError).message).toBe(`127.0.0.1:${l.port} is not a public address (loopback); Parley does not connect there`);
    expect(l.connections()).toBe(0);
  });

  it("refuses a host name that resolves to loopback (checked in the socket's lookup), without connecting", async () => {
    const l = await listener();
    const err = await get(nodeFederationHttp(), target("localhost", l.port));
    expect((err as TransportError).kind).toBe("blocked");
    expect((err as TransportError).message).toMatch(/^localhost resolves only to addresses Parley does not connect to: 127\.0\.0\.1 \(loopback\)/);
    expect(l.connections()).toBe(0);
  });

  it("connects to a configured target, or to anything when private addresses are allowed", async () => {
    const l = await listener();
    expect(await get(nodeFederationHttp(), target("localhost", l.port, { configured: true }))).toMatchObject({ status: 200 });
    expect(await get(nodeFederationHttp({ allowPrivateAddresses: true }), target("localhost", l.port))).toMatchObject({ status: 200 });
    expect(l.connections()).toBe(2);
  });

  it("never reuses a socket opened for a configured target for an unconfigured one", async () => {
    const l = await listener();
    const t = nodeFederationHttp();
    expect(await get(t, target("127.0.0.1", l.port, { configured: true }))).toMatchObject({ status: 200 });
    expect(((await get(t, target("localhost", l.port))) as TransportError).kind).toBe("blocked");
    expect(l.connections()).toBe(1);
  });
});

it("Node's BlockList judges IPv4-mapped IPv6 addresses by IPv4 rules (what blockedReason relies on)", () => {
  const list = new net.BlockList();
  list.addSubnet("127.0.0.0", 8, "ipv4");
  expect(list.check("::ffff:127.0.0.1", "ipv6")).toBe(true);
});
