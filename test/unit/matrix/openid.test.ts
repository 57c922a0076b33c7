import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { Writable } from "node:stream";
import { pino } from "pino";
import { describe, expect, it } from "vitest";
import { failure } from "../../support/errors.ts";
import { FederationPolicy } from "../../../appservice/src/calls/policy.ts";
import { INVALID_TOKEN_MESSAGE, OpenIdVerifier, openIdTokenHash, USERINFO_PATH } from "../../../appservice/src/matrix/openid.ts";
import { SqliteStore } from "../../../appservice/src/store/sqlite.ts";
import {
  TransportError,
  type FederationHttp,
  type HttpAnswer,
  type ServerTarget,
  type SrvResolver,
} from "../../../appservice/src/matrix/serverDiscovery.ts";

const TOKEN = "OpenIdTok3n_secret-ABCDEF";

type Answer = HttpAnswer | Error;

/** A transport answering from `answer(target, path)`; records every request. */
function fakeHttp(answer: (target: ServerTarget, path: string) => Answer) {
  const calls: { target: ServerTarget; path: string }[] = [];
  let closed = false;
  const http: FederationHttp = {
    async get(target, path) {
      calls.push({ target, path });
      const a = answer(target, path);
      if (a instanceof Error) throw a;
      return a;
    },
    close() {
      closed = true;
    },
  };
  return { http, calls, closed: () => closed };
}

const ok = (sub: string): HttpAnswer => ({ status: 200, headers: {}, body: JSON.stringify({ sub }) });
const status = (code: number, body: unknown = {}): HttpAnswer => ({ status: code, headers: {}, body: JSON.stringify(body) });

const noSrv: SrvResolver = {
  async resolveSrv() {
    throw Object.assign(new Error("querySrv ENOTFOUND"), { code: "ENOTFOUND" });
  },
};

/** A pino logger writing into `lines`. */
function capture() {
  const lines: string[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      lines.push(chunk.toString("utf8"));
      cb();
    },
  });
  return { log: pino({ level: "trace" }, stream), lines };
}

function verifier(answer: (target: ServerTarget, path: string) => Answer, extra: ConstructorParameters<typeof OpenIdVerifier>[0] = {}) {
  const h = fakeHttp(answer);
  const c = capture();
  const v = new OpenIdVerifier({ http: h.http, resolver: noSrv, log: c.log, ...extra });
  return { v, calls: h.calls, lines: c.lines, closed: h.closed };
}


describe("OpenIdVerifier.verify: success", () => {
  it("asks the server named (IP literal) for userinfo with the token and returns the user id", async () => {
    const { v, calls } = verifier(() => ok("@bob:127.0.0.12:35001"));
    expect(await v.verify(TOKEN, "127.0.0.12:35001")).toEqual({ userId: "@bob:127.0.0.12:35001" });
    expect(calls).toHaveLength(1);
    expect(calls[0]!.target).toEqual({
      scheme: "https",
      host: "127.0.0.12",
      port: 35001,
      hostHeader: "127.0.0.12:35001",
      tlsName: "127.0.0.12",
      pathPrefix: "",
    });
    expect(calls[0]!.path).toBe(`${USERINFO_PATH}?access_token=${TOKEN}`);
  });

  it("URL-encodes the token", async () => {
    const { v, calls } = verifier(() => ok("@a:example.org"));
    await v.verify("a+b/c=d&e", "example.org");
    expect(calls.at(-1)!.path).toBe(`${USERINFO_PATH}?access_token=a%2Bb%2Fc%3Dd%26e`);
  });

  it("discovers through the well-known document", async () => {
    const { v, calls } = verifier((t, p) =>
      p === "/.well-known/matrix/server" ? { status: 200, headers: {}, body: '{"m.server":"matrix.example.org:443"}' } : ok("@alice:example.org"),
    );
    expect(await v.verify(TOKEN, "example.org")).toEqual({ userId: "@alice:example.org" });
    expect(calls.map((c) => `${c.target.host}:${c.target.port} ${c.target.hostHeader}`)).toEqual([
      "example.org:443 example.org",
      "matrix.example.org:443 matrix.example.org:443",
    ]);
  });

  it("an override bypasses discovery (https and http, with a path prefix)", async () => {
    const { v, calls } = verifier(() => ok("@carol:partner.example"), {
      overrides: { "partner.example": "https://10.1.2.3:8443/", "other.example": "http://127.0.0.1:8008/fed/" },
    });
    await v.verify(TOKEN, "partner.example");
    expect(calls).toHaveLength(1);
    expect(calls[0]!.target).toEqual({
      scheme: "https",
      host: "10.1.2.3",
      port: 8443,
      hostHeader: "10.1.2.3:8443",
      tlsName: "10.1.2.3",
      pathPrefix: "",
      configured: true,
    });
    await v.verify(TOKEN, "other.example").catch(() => undefined);
    expect(calls[1]!.target).toMatchObject({ scheme: "http", host: "127.0.0.1", port: 8008, pathPrefix: "/fed" });
    expect(calls[1]!.path.startsWith(USERINFO_PATH)).toBe(true);
  });

  it("override keys are looked up as data: a server called 'constructor' is discovered, not Object.prototype's", async () => {
    const { v, calls } = verifier(() => ok("@x:constructor"), { overrides: {} });
    await v.verify(TOKEN, "constructor");
    expect(calls[0]!.target.host).toBe("constructor");
  });

  it("tries the next SRV target when one cannot be reached", async () => {
    const resolver: SrvResolver = {
      async resolveSrv(name) {
        if (name === "_matrix-fed._tcp.example.org") {
          return [
            { name: "down.example.org", port: 1, priority: 1, weight: 0 },
            { name: "up.example.org", port: 2, priority: 2, weight: 0 },
          ];
        }
        throw Object.assign(new Error("x"), { code: "ENOTFOUND" });
      },
    };
    const { v, calls } = verifier(
      (t) => (t.host === "up.example.org" ? ok("@a:example.org") : new TransportError("connect", `could not connect to ${t.host}:${t.port}: ECONNREFUSED`)),
      { resolver },
    );
    expect(await v.verify(TOKEN, "example.org")).toEqual({ userId: "@a:example.org" });
    expect(calls.map((c) => c.target.host)).toEqual(["example.org", "down.example.org", "up.example.org"]);
    expect(calls.at(-1)!.target).toMatchObject({ hostHeader: "example.org", tlsName: "example.org" });
  });
});

describe("OpenIdVerifier.verify: errors", () => {
  it.each([[""], [undefined], [null]])("a missing token (%j) is M_MISSING_TOKEN, before any request", async (token) => {
    const { v, calls } = verifier(() => ok("@a:example.org"));
    const err = await failure(v.verify(token as unknown as string, "example.org"));
    expect(err.errcode).toBe("M_MISSING_TOKEN");
    expect(err.status).toBe(401);
    expect(calls).toHaveLength(0);
  });

  it.each(["", "not a server", "example.org:99999", "https://example.org", "@bob:example.org", "[::1", "example.org/x"])(
    "a claimed server name that is not one (%j) is M_INVALID_PARAM, before any request",
    async (name) => {
      const { v, calls } = verifier(() => ok("@a:example.org"));
      const err = await failure(v.verify(TOKEN, name));
      expect(err.errcode).toBe("M_INVALID_PARAM");
      expect(err.status).toBe(400);
      expect(calls).toHaveLength(0);
    },
  );

  it.each(["tok en", "tok\nen", "x".repeat(3000), "töken"])("a token no homeserver issues is M_UNKNOWN_TOKEN without a request", async (token) => {
    const { v, calls } = verifier(() => ok("@a:example.org"));
    const err = await failure(v.verify(token, "example.org"));
    expect(err.errcode).toBe("M_UNKNOWN_TOKEN");
    expect(calls).toHaveLength(0);
  });

  it.each([
    ["401 M_UNKNOWN_TOKEN (Synapse)", status(401, { errcode: "M_UNKNOWN_TOKEN", error: "Access Token unknown or expired" })],
    ["401 without a body", { status: 401, headers: {}, body: "" }],
    ["403", status(403, { errcode: "M_FORBIDDEN" })],
    ["400 with errcode M_UNKNOWN_TOKEN", status(400, { errcode: "M_UNKNOWN_TOKEN" })],
  ])("%s is M_UNKNOWN_TOKEN", async (_what, answer) => {
    const { v } = verifier(() => answer);
    const err = await failure(v.verify(TOKEN, "127.0.0.1:1"));
    expect(err.errcode).toBe("M_UNKNOWN_TOKEN");
    expect(err.status).toBe(401);
    expect(err.message).toBe(INVALID_TOKEN_MESSAGE);
    expect(INVALID_TOKEN_MESSAGE).toBe("OpenID token is not valid (expired or forged)");
  });

  it.each([
    ["HTTP 500", status(500), /^hs\.example answered the OpenID check with HTTP 500$/],
    ["HTTP 502", { status: 502, headers: {}, body: "<html>bad gateway</html>" }, /HTTP 502/],
    ["HTTP 429", status(429, { errcode: "M_LIMIT_EXCEEDED" }), /HTTP 429/],
    ["HTTP 404", status(404, { errcode: "M_UNRECOGNIZED" }), /HTTP 404 \(no OpenID userinfo endpoint there\)/],
    ["a body that is not JSON", { status: 200, headers: {}, body: "hello" }, /invalid body/],
    ["no sub", status(200, { user: "@a:hs.example" }), /invalid body/],
    ["a sub that is not a user id", status(200, { sub: "a:hs.example" }), /invalid body/],
    ["a sub without a server", status(200, { sub: "@alice" }), /invalid body/],
    ["a sub that is not a string", status(200, { sub: 7 }), /invalid body/],
  ])("%s is M_UNAVAILABLE naming the server", async (_what, answer, message) => {
    const { v } = verifier(() => answer, { overrides: { "hs.example": "https://hs.example:8448" } });
    const err = await failure(v.verify(TOKEN, "hs.example"));
    expect(err.errcode).toBe("M_UNAVAILABLE");
    expect(err.status).toBe(503);
    expect(err.message).toMatch(message);
    expect(err.message).toContain("hs.example");
  });

  it.each([
    ["connect", new TransportError("connect", "could not connect to 127.0.0.9:8448: connect ECONNREFUSED 127.0.0.9:8448"), /ECONNREFUSED/],
    ["tls", new TransportError("tls", "TLS with 127.0.0.9:8448 failed: self-signed certificate (DEPTH_ZERO_SELF_SIGNED_CERT)"), /TLS .*self-signed/],
    ["timeout", new TransportError("timeout", "no answer from 127.0.0.9:8448 within 5000 ms"), /within 5000 ms/],
    ["too-large", new TransportError("too-large", "127.0.0.9:8448 sent an answer larger than 65536 bytes"), /larger than/],
  ])("a %s failure is M_UNAVAILABLE naming the server; the reason is logged, not told", async (_kind, error, message) => {
    const { v, lines } = verifier(() => error);
    const err = await failure(v.verify(TOKEN, "127.0.0.9"));
    expect(err.errcode).toBe("M_UNAVAILABLE");
    expect(err.message).toBe("cannot check the OpenID token with 127.0.0.9");
    expect(lines.join("")).toMatch(message);
  });

  it("a blocked address is M_FORBIDDEN with a generic message; the address is logged, not told", async () => {
    const blocked = new TransportError("blocked", "internal.example resolves only to addresses Parley does not connect to: 10.1.2.3 (private)");
    const { v, lines } = verifier(() => blocked);
    const err = await failure(v.verify(TOKEN, "internal.example:8448"));
    expect(err.errcode).toBe("M_FORBIDDEN");
    expect(err.message).toBe("this Parley does not check OpenID tokens with internal.example:8448");
    expect(lines.join("")).toContain("10.1.2.3 (private)");
  });

  it("a discovery failure (DNS) is M_UNAVAILABLE naming the server; the lookup is logged, not told", async () => {
    const resolver: SrvResolver = {
      async resolveSrv() {
        throw Object.assign(new Error("querySrv ESERVFAIL"), { code: "ESERVFAIL" });
      },
    };
    const { v, lines } = verifier(() => status(404), { resolver });
    const err = await failure(v.verify(TOKEN, "example.org"));
    expect(err.errcode).toBe("M_UNAVAILABLE");
    expect(err.message).toBe("cannot check the OpenID token with example.org");
    expect(lines.join("")).toContain("DNS lookup of _matrix-fed._tcp.example.org failed (ESERVFAIL)");
  });

  it("a server vouching for another server's user is M_FORBIDDEN", async () => {
    const { v } = verifier(() => ok("@admin:victim.example"));
    const err = await failure(v.verify(TOKEN, "127.0.0.12:35001"));
    expect(err.errcode).toBe("M_FORBIDDEN");
    expect(err.status).toBe(403);
    expect(err.message).toBe("127.0.0.12:35001 vouched for @admin:victim.example, who is not one of its users");
  });

  it.each([
    ["a different port", "@bob:127.0.0.12:35002"],
    ["no port", "@bob:127.0.0.12"],
    ["another case", "@bob:EXAMPLE.org"],
    ["a suffix", "@bob:example.org.evil"],
  ])("the server part must equal the claimed name exactly (%s)", async (_what, sub) => {
    const claimed = sub.includes("127.0.0.12") ? "127.0.0.12:35001" : "example.org";
    const { v } = verifier(() => ok(sub), { overrides: { "example.org": "https://example.org" } });
    expect((await failure(v.verify(TOKEN, claimed))).errcode).toBe("M_FORBIDDEN");
  });

  it("with a policy, a server it does not allow is M_FORBIDDEN before any request", async () => {
    const policy = new FederationPolicy("own.example", ["partner.example"]);
    const { v, calls } = verifier(() => ok("@a:evil.example"), { policy });
    const err = await failure(v.verify(TOKEN, "evil.example"));
    expect(err.errcode).toBe("M_FORBIDDEN");
    expect(err.message).toBe("evil.example is not a server this Parley federates with");
    expect(calls).toHaveLength(0);
    const allowed = verifier(() => ok("@a:partner.example:8448"), { policy });
    expect(await allowed.v.verify(TOKEN, "partner.example:8448")).toEqual({ userId: "@a:partner.example:8448" });
  });
});

describe("the token stays secret", () => {
  it("never appears in an error message or a log line, whatever happens", async () => {
    const answers: Answer[] = [
      ok("@a:127.0.0.5"),
      ok("@a:other.example"),
      status(401, { errcode: "M_UNKNOWN_TOKEN" }),
      status(500),
      { status: 200, headers: {}, body: `{"sub": 5, "echo": "${TOKEN}"}` },
      new TransportError("connect", "could not connect to 127.0.0.5:8448: ECONNREFUSED"),
      new TransportError("tls", "TLS with 127.0.0.5:8448 failed: x (CERT_HAS_EXPIRED)"),
    ];
    const c = capture();
    for (const a of answers) {
      const v = new OpenIdVerifier({ http: fakeHttp(() => a).http, resolver: noSrv, log: c.log });
      const outcome = await v.verify(TOKEN, "127.0.0.5").then(
        (r) => JSON.stringify(r),
        (e: unknown) => `${(e as Error).message} ${JSON.stringify(e)}`,
      );
      expect(outcome).not.toContain(TOKEN);
    }
    expect(c.lines.length).toBeGreaterThan(5);
    for (const line of c.lines) {
      expect(line).not.toContain(TOKEN);
      expect(line).not.toContain("access_token");
    }
  });
});

describe("construction", () => {
  it("fromConfig takes overrides, TLS settings and the allow-list; caFile is read once", async () => {
    const dir = await fs.mkdtemp(path.join(os.tmpdir(), "parley-openid-"));
    try {
      const caFile = path.join(dir, "ca.pem");
      await fs.writeFile(caFile, "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n");
      const h = fakeHttp(() => ok("@a:partner.example"));
      const v = OpenIdVerifier.fromConfig(
        { federation: { allow: [], openidOverrides: { "partner.example": "https://10.0.0.1:8448" }, tlsVerify: true, caFile, allowPrivateAddresses: false, openidTokenLifetimeSeconds: 3600 } },
        new FederationPolicy("own.example", ["partner.example"]),
        { http: h.http, log: pino({ level: "silent" }) },
      );
      expect(await v.verify(TOKEN, "partner.example")).toEqual({ userId: "@a:partner.example" });
      expect(h.calls[0]!.target.host).toBe("10.0.0.1");
      expect((await failure(v.verify(TOKEN, "stranger.example"))).errcode).toBe("M_FORBIDDEN");
      v.close();

      expect(() => new OpenIdVerifier({ caFile: path.join(dir, "missing.pem"), log: pino({ level: "silent" }) })).toThrow(
        /^federation\.caFile: cannot read .*missing\.pem/,
      );
      await fs.writeFile(path.join(dir, "junk.pem"), "junk");
      expect(() => new OpenIdVerifier({ caFile: path.join(dir, "junk.pem"), log: pino({ level: "silent" }) })).toThrow(
        /holds no PEM certificate/,
      );
    } finally {
      await fs.rm(dir, { recursive: true, force: true });
    }
  });

  it.each([
    ["not a URL", /expected an absolute URL/],
    ["ftp://x.example", /https:\/\/ \(or http:\/\/\) URL/],
    ["https://x.example/?q=1", /no query/],
  ])("refuses an override base %j, naming the config path", (base, message) => {
    expect(() => new OpenIdVerifier({ overrides: { "a.example": base }, log: pino({ level: "silent" }) })).toThrow(
      new RegExp(`federation\\.openidOverrides\\["a\\.example"\\]: .*${message.source}`),
    );
  });

  it("close() closes the transport", () => {
    const { v, closed } = verifier(() => ok("@a:b"));
    v.close();
    expect(closed()).toBe(true);
  });

  it("warns when certificate checks are off", () => {
    const c = capture();
    new OpenIdVerifier({ tlsVerify: false, log: c.log }).close();
    expect(c.lines.join("")).toContain("federation.tlsVerify is false");
  });
});

describe("one use per token (the ledger)", () => {
  const HOUR = 3600_000;
  function ledgered(answer: (target: ServerTarget, path: string) => Answer | Promise<Answer>, now = () => 1_000_000) {
    const store = new SqliteStore(":memory:");
    const calls: string[] = [];
    const http: FederationHttp = {
      async get(_target, path) {
        calls.push(path);
        const a = await answer(_target, path);
        if (a instanceof Error) throw a;
        return a;
      },
      close() {},
    };
    const v = new OpenIdVerifier({ http, resolver: noSrv, log: pino({ level: "silent" }), ledger: store, tokenLifetimeMs: HOUR, now });
    return { v, store, calls };
  }

  it("a token verifies once; the second use is M_UNKNOWN_TOKEN with the generic message, without asking its server", async () => {
    const { v, calls } = ledgered(() => ok("@bob:127.0.0.12:35001"));
    expect(await v.verify(TOKEN, "127.0.0.12:35001")).toEqual({ userId: "@bob:127.0.0.12:35001" });
    const err = await failure(v.verify(TOKEN, "127.0.0.12:35001"));
    expect(err.errcode).toBe("M_UNKNOWN_TOKEN");
    expect(err.status).toBe(401);
    expect(err.message).toBe(INVALID_TOKEN_MESSAGE);
    expect(calls).toHaveLength(1);
  });

  it("two concurrent checks of one token: exactly one passes, and its server is asked once", async () => {
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const { v, calls } = ledgered(async () => {
      await gate;
      return ok("@bob:127.0.0.12:35001");
    });
    const both = Promise.allSettled([v.verify(TOKEN, "127.0.0.12:35001"), v.verify(TOKEN, "127.0.0.12:35001")]);
    release();
    const outcomes = await both;
    expect(outcomes.map((o) => o.status).sort()).toEqual(["fulfilled", "rejected"]);
    expect((outcomes.find((o) => o.status === "rejected") as PromiseRejectedResult).reason.errcode).toBe("M_UNKNOWN_TOKEN");
    expect(calls).toHaveLength(1);
  });

  it("stores a hash until the token's lifetime is over, never the token", async () => {
    const { v, store } = ledgered(() => ok("@bob:127.0.0.12:35001"));
    await v.verify(TOKEN, "127.0.0.12:35001");
    const rows = store.db.prepare("SELECT * FROM openid_token_used").all();
    expect(rows).toEqual([{ token_hash: openIdTokenHash("127.0.0.12:35001", TOKEN), expires_at: 1_000_000 + HOUR }]);
    expect(JSON.stringify(rows)).not.toContain(TOKEN);
  });

  it("once the lifetime is over the row is pruned (the homeserver refuses the token by then)", async () => {
    let now = 1_000_000;
    const { v, store } = ledgered(() => ok("@bob:127.0.0.12:35001"), () => now);
    await v.verify(TOKEN, "127.0.0.12:35001");
    now += HOUR - 1;
    expect((await failure(v.verify(TOKEN, "127.0.0.12:35001"))).errcode).toBe("M_UNKNOWN_TOKEN");
    now += 1;
    await v.verify("another-token", "127.0.0.12:35001");
    expect(await store.openIdTokenCount()).toBe(1);
  });

  it.each([
    ["refused by its server (forged)", () => status(401, { errcode: "M_UNKNOWN_TOKEN" }), "M_UNKNOWN_TOKEN"],
    ["unreachable", () => new TransportError("connect", "connect ECONNREFUSED"), "M_UNAVAILABLE"],
    ["vouching for another server's user", () => ok("@admin:victim.example"), "M_FORBIDDEN"],
  ] as const)("a token %s leaves no row behind and may be tried again", async (_what, answer, errcode) => {
    const { v, store, calls } = ledgered(answer);
    for (let i = 0; i < 50; i++) expect((await failure(v.verify(`forged-${i % 2}`, "127.0.0.12:35001"))).errcode).toBe(errcode);
    expect(await store.openIdTokenCount()).toBe(0);
    expect(calls).toHaveLength(50);
  });

  it("the same token claimed for another server is another entry (a server vouches only for its own tokens)", async () => {
    const { v } = ledgered((target) => ok(`@bob:${target.hostHeader}`));
    await v.verify(TOKEN, "127.0.0.12:35001");
    await v.verify(TOKEN, "127.0.0.13:35001");
  });
});
