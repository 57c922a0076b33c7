import { describe, expect, it } from "vitest";
import {
  FederationPolicy,
  globMatches,
  hostOf,
  isIpLiteral,
  serverNameOf,
  splitPort,
} from "../../../appservice/src/calls/policy.ts";

describe("hostOf", () => {
  it.each([
    ["example.org", "example.org"],
    ["example.org:8448", "example.org"],
    ["matrix.example.org:443", "matrix.example.org"],
    ["1.2.3.4", "1.2.3.4"],
    ["1.2.3.4:8448", "1.2.3.4"],
    ["[::1]", "[::1]"],
    ["[::1]:8448", "[::1]"],
    ["[2001:db8::7]:443", "[2001:db8::7]"],
    ["localhost:8008", "localhost"],
    ["example.org:http", "example.org:http"],
  ])("hostOf(%j) = %j", (serverName, host) => {
    expect(hostOf(serverName)).toBe(host);
  });
});

describe("serverNameOf", () => {
  it("takes everything after the first colon", () => {
    expect(serverNameOf("@alice:example.org")).toBe("example.org");
    expect(serverNameOf("@alice:example.org:8448")).toBe("example.org:8448");
    expect(serverNameOf("@a:[::1]:8448")).toBe("[::1]:8448");
  });

  it.each(["alice:example.org", "@:example.org", "@alice:", "@alice", "", "#room:example.org"])(
    "refuses %j",
    (userId) => {
      expect(() => serverNameOf(userId)).toThrow(`not a user id: ${userId}`);
    },
  );
});

describe("isIpLiteral", () => {
  it("recognises IPv4 and bracketed IPv6 only", () => {
    expect(isIpLiteral("10.0.0.1")).toBe(true);
    expect(isIpLiteral("[::1]")).toBe(true);
    expect(isIpLiteral("example.org")).toBe(false);
    expect(isIpLiteral("1.2.3")).toBe(false);
    expect(isIpLiteral("1.2.3.4.example")).toBe(false);
  });
});

describe("globMatches", () => {
  it("matches a name exactly", () => {
    expect(globMatches("example.org", "example.org")).toBe(true);
    expect(globMatches("example.org", "example.org.evil")).toBe(false);
    expect(globMatches("example.org", "sub.example.org")).toBe(false);
  });

  it("takes dots literally", () => {
    expect(globMatches("example.org", "exampleXorg")).toBe(false);
    expect(globMatches("a.b", "a.b")).toBe(true);
    expect(globMatches("a.b", "aab")).toBe(false);
  });

  it("* matches any run of characters, including none and dots", () => {
    expect(globMatches("*.gov.example", "health.gov.example")).toBe(true);
    expect(globMatches("*.gov.example", "a.b.gov.example")).toBe(true);
    expect(globMatches("*.gov.example", "gov.example")).toBe(false);
    expect(globMatches("*.gov.example", "evilgov.example")).toBe(false);
    expect(globMatches("*", "anything.example")).toBe(true);
    expect(globMatches("matrix*", "matrix")).toBe(true);
  });

  it("? matches exactly one character", () => {
    expect(globMatches("hs?.example", "hs1.example")).toBe(true);
    expect(globMatches("hs?.example", "hs.example")).toBe(false);
    expect(globMatches("hs?.example", "hs12.example")).toBe(false);
  });

  it("is case-insensitive", () => {
    expect(globMatches("Example.ORG", "example.org")).toBe(true);
    expect(globMatches("*.Gov.Example", "HEALTH.GOV.EXAMPLE")).toBe(true);
  });

  it("treats regex characters as literals", () => {
    expect(globMatches("[::1]", "[::1]")).toBe(true);
    expect(globMatches("[::1]", ":")).toBe(false);
    expect(globMatches("a+b.example", "a+b.example")).toBe(true);
    expect(globMatches("a+b.example", "aab.example")).toBe(false);
  });
});

describe("FederationPolicy", () => {
  const policy = new FederationPolicy("example.org", ["partner.example", "*.gov.example"]);

  it("lists the own server name first, entries as written, without duplicates", () => {
    const p = new FederationPolicy("example.org:8448", ["partner.example:443", "example.org:8448", "example.org", "*.gov.example"]);
    expect(p.allowed).toEqual(["example.org:8448", "partner.example:443", "example.org", "*.gov.example"]);
    expect(p.describe()).toBe("example.org:8448, partner.example:443, example.org, *.gov.example");
  });

  it("always allows the own server, even with an empty allow list", () => {
    const own = new FederationPolicy("example.org", []);
    expect(own.allowsServer("example.org")).toBe(true);
    expect(own.allowsServer("example.org:8448")).toBe(true);
    expect(own.allowsServer("partner.example")).toBe(false);
  });

  it("allows listed servers and globs, ignoring ports", () => {
    expect(policy.allowsServer("partner.example")).toBe(true);
    expect(policy.allowsServer("partner.example:8448")).toBe(true);
    expect(policy.allowsServer("health.gov.example")).toBe(true);
    expect(policy.allowsServer("evil.example")).toBe(false);
    expect(policy.allowsServer("partner.example.evil")).toBe(false);
  });

  it("judges users by their server", () => {
    expect(policy.allowsUser("@alice:example.org")).toBe(true);
    expect(policy.allowsUser("@bob:partner.example:8448")).toBe(true);
    expect(policy.allowsUser("@carol:health.gov.example")).toBe(true);
    expect(policy.allowsUser("@mallory:evil.example")).toBe(false);
  });

  it.each(["", "alice", "alice:example.org", "@:example.org", "@alice:", "@alice", "!room:example.org"])(
    "refuses the garbage user id %j",
    (userId) => {
      expect(policy.allowsUser(userId)).toBe(false);
    },
  );

  it("refuses a user whose server only contains an allowed name", () => {
    expect(policy.allowsUser("@m:example.org.evil.example")).toBe(false);
    expect(policy.allowsUser("@m:evil.example:example.org")).toBe(false);
  });

  it("builds a server ACL with the own host first and no IP literals", () => {
    expect(policy.serverAcl()).toEqual({
      allow: ["example.org", "example.org:*", "partner.example", "partner.example:*", "*.gov.example", "*.gov.example:*"],
      deny: [],
      allow_ip_literals: false,
    });
  });

  it("allows IP literals in the ACL only when an allowed entry is one", () => {
    expect(new FederationPolicy("example.org", ["10.0.0.5"]).serverAcl()).toEqual({
      allow: ["example.org", "example.org:*", "10.0.0.5", "10.0.0.5:*"],
      deny: [],
      allow_ip_literals: true,
    });
    expect(new FederationPolicy("[::1]:8448", []).serverAcl()).toEqual({
      allow: ["[::1]", "[::1]:8448"],
      deny: [],
      allow_ip_literals: true,
    });
    expect(new FederationPolicy("localhost:8008", ["hs2.local"]).serverAcl().allow_ip_literals).toBe(false);
  });

  it("returns a fresh ACL each time", () => {
    const acl = policy.serverAcl();
    acl.allow.push("evil.example");
    expect(policy.serverAcl().allow).toEqual([
      "example.org", "example.org:*", "partner.example", "partner.example:*", "*.gov.example", "*.gov.example:*",
    ]);
  });
});

describe("FederationPolicy with ports", () => {
  it("an entry naming a port allows that port only, not the bare name nor another port", () => {
    const p = new FederationPolicy("own.example", ["partner.example:8448"]);
    expect(p.allowsServer("partner.example:8448")).toBe(true);
    expect(p.allowsServer("partner.example:8449")).toBe(false);
    expect(p.allowsServer("partner.example:84480")).toBe(false);
    expect(p.allowsServer("partner.example")).toBe(false);
    expect(p.allowsUser("@bob:partner.example:8448")).toBe(true);
    expect(p.allowsUser("@mallory:partner.example:9000")).toBe(false);
  });

  it("an entry without a port allows every port of its host", () => {
    const p = new FederationPolicy("own.example", ["partner.example"]);
    expect(p.allowsServer("partner.example")).toBe(true);
    expect(p.allowsServer("partner.example:9000")).toBe(true);
  });

  it("a port may be a glob, and IP literals (v4 and v6) take ports too", () => {
    const p = new FederationPolicy("own.example", ["*.gov.example:84??", "10.0.0.5:8448", "[2001:db8::7]:443"]);
    expect(p.allowsServer("health.gov.example:8448")).toBe(true);
    expect(p.allowsServer("health.gov.example:443")).toBe(false);
    expect(p.allowsServer("10.0.0.5:8448")).toBe(true);
    expect(p.allowsServer("10.0.0.5:8449")).toBe(false);
    expect(p.allowsServer("10.0.0.5")).toBe(false);
    expect(p.allowsServer("[2001:db8::7]:443")).toBe(true);
    expect(p.allowsServer("[2001:db8::7]:8448")).toBe(false);
  });

  it("the own server name with a port is that port only", () => {
    const p = new FederationPolicy("127.0.0.11:8481", []);
    expect(p.allowsUser("@alice:127.0.0.11:8481")).toBe(true);
    expect(p.allowsUser("@mallory:127.0.0.11:9999")).toBe(false);
  });

  it("the server ACL names each host alone (Synapse strips the port of a transaction's origin) and with its port or ':*' (it keeps the port of an event's sender)", () => {
    const p = new FederationPolicy("example.org", ["partner.example:8448", "*.gov.example", "10.0.0.5:8448"]);
    expect(p.serverAcl()).toEqual({
      allow: ["example.org", "example.org:*", "partner.example", "partner.example:8448", "*.gov.example", "*.gov.example:*", "10.0.0.5", "10.0.0.5:8448"],
      deny: [],
      allow_ip_literals: true,
    });
  });
});

describe("splitPort", () => {
  it.each([
    ["example.org", "example.org", undefined],
    ["example.org:8448", "example.org", "8448"],
    ["*.example:84*", "*.example", "84*"],
    ["[::1]", "[::1]", undefined],
    ["[::1]:8448", "[::1]", "8448"],
    ["example.org:http", "example.org:http", undefined],
  ])("splitPort(%j)", (name, host, port) => {
    expect(splitPort(name)).toEqual({ host, port });
  });
});
