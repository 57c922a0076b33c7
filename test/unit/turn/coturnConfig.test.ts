import { describe, expect, it } from "vitest";
import { renderCoturnConfig, type CoturnConfigInput } from "../../../appservice/src/turn/coturnConfig.ts";

const BASE: CoturnConfigInput = {
  listeningIps: ["192.0.2.10"],
  port: 3478,
  relayIp: "192.0.2.10",
  relayPortRange: [49152, 49999],
  realm: "example.org",
  secret: "s".repeat(64),
  allowedPeerIps: ["192.0.2.20"],
  userQuota: 12,
  totalQuota: 1000,
  maxBytesPerSecond: 0,
  logFile: "stdout",
  pidFile: "/run/parley/turnserver.pid",
  userDbFile: "/var/lib/parley/turndb",
};
const lines = (o: Partial<CoturnConfigInput> = {}) => renderCoturnConfig({ ...BASE, ...o }).split("\n");

describe("renderCoturnConfig", () => {
  it("shared-secret auth only, realm = server name, no CLI, no TLS listeners it has no certificate for", () => {
    const l = lines();
    expect(l).toEqual(expect.arrayContaining(["use-auth-secret", `static-auth-secret=${"s".repeat(64)}`, "realm=example.org", "no-cli", "no-software-attribute", "no-tls", "no-dtls"]));
    expect(l.some((x) => /^(user=|lt-cred-mech|web-admin|cli-password)/.test(x))).toBe(false);
  });

  it("relays reach the SFU's addresses and nothing else; no multicast, no TCP relays", () => {
    const l = lines();
    expect(l).toEqual(expect.arrayContaining(["denied-peer-ip=0.0.0.0-255.255.255.255", "allowed-peer-ip=192.0.2.20", "no-multicast-peers", "no-tcp-relay"]));
    expect(l).not.toContain("allow-loopback-peers");
    // Loopback peers only when the SFU itself is on loopback (a one-machine deployment, the tests).
    expect(lines({ allowedPeerIps: ["127.77.0.1"] })).toContain("allow-loopback-peers");
  });

  it("listens and relays only where told, on the given ports, with quotas", () => {
    const l = lines();
    expect(l.filter((x) => x.startsWith("listening-ip="))).toEqual(["listening-ip=192.0.2.10"]);
    expect(l).toEqual(expect.arrayContaining(["listening-port=3478", "relay-ip=192.0.2.10", "min-port=49152", "max-port=49999", "user-quota=12", "total-quota=1000"]));
  });

  it("refuses values that would break the file or the policy", () => {
    expect(() => renderCoturnConfig({ ...BASE, realm: "a b" })).toThrow(/realm/);
    expect(() => renderCoturnConfig({ ...BASE, realm: "a\nuser=x:y" })).toThrow(/realm/);
    expect(() => renderCoturnConfig({ ...BASE, secret: "short" })).toThrow(/at least 32/);
    expect(() => renderCoturnConfig({ ...BASE, allowedPeerIps: [] })).toThrow(/allowed peer/);
    expect(() => renderCoturnConfig({ ...BASE, allowedPeerIps: ["0.0.0.0/0"] })).toThrow(/IP address/);
    expect(() => renderCoturnConfig({ ...BASE, listeningIps: [] })).toThrow(/listening/);
    expect(() => renderCoturnConfig({ ...BASE, relayPortRange: [50000, 40000] })).toThrow(/start > end/);
    expect(() => renderCoturnConfig({ ...BASE, port: 70000 })).toThrow(/port/);
  });
});
