import { execFile } from "node:child_process";
import type { SrvRecord } from "node:dns";
import fs from "node:fs/promises";
import http from "node:http";
import https from "node:https";
import net, { type AddressInfo } from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import { pino } from "pino";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import {
  cachePeriodMs,
  DiscoveryError,
  nodeFederationHttp,
  orderSrv,
  parseServerName,
  ServerDiscovery,
  TransportError,
  WELL_KNOWN_DEFAULT_CACHE_MS,
  WELL_KNOWN_INVALID_CACHE_MS,
  WELL_KNOWN_MAX_CACHE_MS,
  WELL_KNOWN_MIN_CACHE_MS,
  type FederationHttp,
  type HttpAnswer,
  type ServerTarget,
  type SrvResolver,
} from "../../../appservice/src/matrix/serverDiscovery.ts";

const quiet = pino({ level: "silent" });
const MINUTE = 60_000;
const HOUR = 60 * MINUTE;

// ---------------------------------------------------------------------------------------------
// Fakes

type Route = HttpAnswer | Error | ((target: ServerTarget, path: string) => HttpAnswer | Error);

/** A transport answering from a table keyed by "https://host:port/path". */
function fakeHttp(routes: Record<string, Route> = {}) {
  const calls: { key: string; target: ServerTarget; path: string }[] = [];
  const http: FederationHttp = {
    async get(target, path) {
      const key = `${target.scheme}://${target.host.includes(":") ? `[${target.host}]` : target.host}:${target.port}${path}`;
      calls.push({ key, target, path });
      let route = routes[key];
      if (typeof route === "function") route = route(target, path);
      if (route === undefined) throw new TransportError("connect", `could not connect to ${target.host}:${target.port}: ECONNREFUSED`);
      if (route instanceof Error) throw route;
      return route;
    },
    close() {},
  };
  return { http, calls, routes };
}

const json = (body: unknown, headers: Record<string, string> = {}, status = 200): HttpAnswer => ({
  status,
  headers,
  body: JSON.stringify(body),
});

const dnsError = (code: string) => Object.assign(new Error(`querySrv ${code}`), { code });

function fakeResolver(table: Record<string, SrvRecord[] | Error> = {}) {
  const calls: string[] = [];
  const resolver: SrvResolver = {
    async resolveSrv(name: string) {
      calls.push(name);
      const r = table[name];
      if (r === undefined) throw dnsError("ENOTFOUND");
      if (r instanceof Error) throw r;
      return r;
    },
  };
  return { resolver, calls, table };
}

const srv = (name: string, port: number, priority = 10, weight = 5): SrvRecord => ({ name, port, priority, weight });

function setup(routes: Record<string, Route> = {}, srvTable: Record<string, SrvRecord[] | Error> = {}) {
  const h = fakeHttp(routes);
  const r = fakeResolver(srvTable);
  const clock = { t: 1_000_000 };
  const discovery = new ServerDiscovery({ http: h.http, resolver: r.resolver, now: () => clock.t, log: quiet, random: () => 0 });
  return { discovery, http: h, dns: r, clock };
}

const WK = (host: string) => `https://${host}:443/.well-known/matrix/server`;
const target = (host: string, port: number, hostHeader: string, tlsName = host): ServerTarget => ({
  scheme: "https",
  host,
  port,
  hostHeader,
  tlsName,
  pathPrefix: "",
});

// ---------------------------------------------------------------------------------------------

describe("parseServerName", () => {
  it.each([
    ["example.org", { host: "example.org", port: undefined, ip: false }],
    ["example.org:8448", { host: "example.org", port: 8448, ip: false }],
    ["localhost", { host: "localhost", port: undefined, ip: false }],
    ["1.2.3.4", { host: "1.2.3.4", port: undefined, ip: true }],
    ["127.0.0.11:35001", { host: "127.0.0.11", port: 35001, ip: true }],
    ["[::1]", { host: "::1", port: undefined, ip: true }],
    ["[2001:db8::7]:443", { host: "2001:db8::7", port: 443, ip: true }],
    ["a-b.c-d.example", { host: "a-b.c-d.example", port: undefined, ip: false }],
  ])("%j", (name, parsed) => {
    expect(parseServerName(name)).toEqual(parsed);
  });

  it.each([
    "",
    ":8448",
    "example.org:",
    "example.org:0",
    "example.org:65536",
    "example.org:http",
    "example.org:8448:1",
    "exa mple.org",
    "example.org/path",
    "user@example.org",
    "example..org",
    ".example.org",
    "example.org.",
    "999.1.1.1",
    "01.2.3.4",
    "[::1",
    "[::1]x",
    "[not:an:ip::]",
    "::1",
    "[1.2.3.4]",
    "a".repeat(64) + ".org",
    "\u00e9xample.org",
  ])("refuses %j", (name) => {
    expect(parseServerName(name)).toBeUndefined();
  });
});

describe("discovery: IP literals and explicit ports (no well-known, no SRV)", () => {
  it("IPv4 literal without port -> 8448, Host is the server name, certificate for the IP", async () => {
    const { discovery, http, dns } = setup();
    expect(await discovery.resolve("1.2.3.4")).toEqual({ targets: [target("1.2.3.4", 8448, "1.2.3.4")], via: "ip literal" });
    expect(http.calls).toEqual([]);
    expect(dns.calls).toEqual([]);
  });

  it("IPv4 literal with port", async () => {
    const { discovery, http, dns } = setup();
    const r = await discovery.resolve("127.0.0.12:35001");
    expect(r.targets).toEqual([target("127.0.0.12", 35001, "127.0.0.12:35001")]);
    expect(http.calls.length + dns.calls.length).toBe(0);
  });

  it("IPv6 literal with and without port: connect without brackets, Host with them", async () => {
    const { discovery } = setup();
    expect((await discovery.resolve("[::1]")).targets).toEqual([target("::1", 8448, "[::1]")]);
    expect((await discovery.resolve("[2001:db8::7]:443")).targets).toEqual([target("2001:db8::7", 443, "[2001:db8::7]:443")]);
  });

  it("hostname with explicit port -> that host and port, Host with the port, no well-known, no SRV", async () => {
    const { discovery, http, dns } = setup();
    expect(await discovery.resolve("matrix.example.org:8000")).toEqual({
      targets: [target("matrix.example.org", 8000, "matrix.example.org:8000")],
      via: "explicit port",
    });
    expect(http.calls).toEqual([]);
    expect(dns.calls).toEqual([]);
  });

  it("refuses a name that is not a server name", async () => {
    const { discovery } = setup();
    await expect(discovery.resolve("not a name")).rejects.toBeInstanceOf(DiscoveryError);
  });
});

describe("discovery: well-known delegation", () => {
  it("asks https://<hostname>/.well-known/matrix/server with Host and certificate for the hostname", async () => {
    const { discovery, http } = setup({ [WK("example.org")]: json({ "m.server": "1.2.3.4" }) });
    await discovery.resolve("example.org");
    expect(http.calls[0]!.target).toEqual(target("example.org", 443, "example.org"));
    expect(http.calls[0]!.path).toBe("/.well-known/matrix/server");
  });

  it("3.1 delegated IP literal without port -> 8448", async () => {
    const { discovery, dns } = setup({ [WK("example.org")]: json({ "m.server": "1.2.3.4" }) });
    expect(await discovery.resolve("example.org")).toEqual({
      targets: [target("1.2.3.4", 8448, "1.2.3.4")],
      via: "well-known -> ip literal",
    });
    expect(dns.calls).toEqual([]);
  });

  it("3.1 delegated IP literal with port, IPv6 too", async () => {
    const { discovery } = setup({
      [WK("a.example")]: json({ "m.server": "1.2.3.4:9000" }),
      [WK("b.example")]: json({ "m.server": "[2001:db8::1]:9001" }),
    });
    expect((await discovery.resolve("a.example")).targets).toEqual([target("1.2.3.4", 9000, "1.2.3.4:9000")]);
    expect((await discovery.resolve("b.example")).targets).toEqual([target("2001:db8::1", 9001, "[2001:db8::1]:9001")]);
  });

  it("3.2 delegated hostname with port -> that host:port, Host with port, certificate for the delegated name, no SRV", async () => {
    const { discovery, dns } = setup({ [WK("example.org")]: json({ "m.server": "matrix.example.org:443" }) });
    expect(await discovery.resolve("example.org")).toEqual({
      targets: [target("matrix.example.org", 443, "matrix.example.org:443")],
      via: "well-known -> explicit port",
    });
    expect(dns.calls).toEqual([]);
  });

  it("3.3 delegated hostname -> SRV _matrix-fed._tcp.<delegated>; Host and certificate name the delegated host", async () => {
    const { discovery, dns } = setup(
      { [WK("example.org")]: json({ "m.server": "matrix.example.org" }) },
      { "_matrix-fed._tcp.matrix.example.org": [srv("fed1.example.net.", 8449)] },
    );
    expect(await discovery.resolve("example.org")).toEqual({
      targets: [target("fed1.example.net", 8449, "matrix.example.org", "matrix.example.org")],
      via: "well-known -> SRV _matrix-fed._tcp",
    });
    expect(dns.calls).toEqual(["_matrix-fed._tcp.matrix.example.org"]);
  });

  it("3.4 delegated hostname, no _matrix-fed record -> deprecated _matrix._tcp.<delegated>", async () => {
    const { discovery, dns } = setup(
      { [WK("example.org")]: json({ "m.server": "matrix.example.org" }) },
      { "_matrix._tcp.matrix.example.org": [srv("old.example.net", 8450)] },
    );
    expect(await discovery.resolve("example.org")).toEqual({
      targets: [target("old.example.net", 8450, "matrix.example.org", "matrix.example.org")],
      via: "well-known -> SRV _matrix._tcp",
    });
    expect(dns.calls).toEqual(["_matrix-fed._tcp.matrix.example.org", "_matrix._tcp.matrix.example.org"]);
  });

  it("3.5 delegated hostname without SRV -> delegated:8448", async () => {
    const { discovery, dns } = setup(
      { [WK("example.org")]: json({ "m.server": "matrix.example.org" }) },
      { "_matrix._tcp.matrix.example.org": dnsError("ENODATA") },
    );
    expect(await discovery.resolve("example.org")).toEqual({
      targets: [target("matrix.example.org", 8448, "matrix.example.org")],
      via: "well-known -> port 8448",
    });
    // The server name's own SRV records are not consulted once a delegation exists.
    expect(dns.calls).toEqual(["_matrix-fed._tcp.matrix.example.org", "_matrix._tcp.matrix.example.org"]);
  });

  it("follows redirects (relative and absolute, https only)", async () => {
    const { discovery, http } = setup({
      [WK("example.org")]: { status: 301, headers: { location: "/moved" }, body: "" },
      "https://example.org:443/moved": { status: 302, headers: { location: "https://cdn.example.net:8443/wk" }, body: "" },
      "https://cdn.example.net:8443/wk": json({ "m.server": "1.2.3.4:1" }),
    });
    expect((await discovery.resolve("example.org")).targets).toEqual([target("1.2.3.4", 1, "1.2.3.4:1")]);
    expect(http.calls[2]!.target).toEqual(target("cdn.example.net", 8443, "cdn.example.net:8443"));
  });

  it.each([
    ["a redirect loop", { [WK("example.org")]: { status: 302, headers: { location: "/.well-known/matrix/server" }, body: "" } }],
    ["a redirect to http", { [WK("example.org")]: { status: 302, headers: { location: "http://example.org/x" }, body: "" } }],
    ["HTTP 404", { [WK("example.org")]: json({ errcode: "M_NOT_FOUND" }, {}, 404) }],
    ["HTTP 500", { [WK("example.org")]: json({}, {}, 500) }],
    ["a body that is not JSON", { [WK("example.org")]: { status: 200, headers: {}, body: "<html>" } }],
    ["JSON without m.server", { [WK("example.org")]: json({ "m.homeserver": "x" }) }],
    ["an m.server that is not a server name", { [WK("example.org")]: json({ "m.server": "https://matrix.example.org" }) }],
    ["an m.server that is not a string", { [WK("example.org")]: json({ "m.server": 8448 }) }],
    ["a JSON array", { [WK("example.org")]: json(["m.server"]) }],
    ["an answer too large", { [WK("example.org")]: new TransportError("too-large", "too large") }],
    ["a TLS failure", { [WK("example.org")]: new TransportError("tls", "TLS with example.org:443 failed") }],
    ["no connection", {}],
  ])("%s counts as no well-known: SRV on the server name, then 8448", async (_what, routes) => {
    const { discovery, dns } = setup(routes as Record<string, Route>);
    expect(await discovery.resolve("example.org")).toEqual({
      targets: [target("example.org", 8448, "example.org")],
      via: "port 8448",
    });
    expect(dns.calls).toEqual(["_matrix-fed._tcp.example.org", "_matrix._tcp.example.org"]);
  });

  it("too many redirects count as no well-known", async () => {
    const routes: Record<string, Route> = { [WK("example.org")]: { status: 302, headers: { location: "/r1" }, body: "" } };
    for (let i = 1; i < 10; i++) routes[`https://example.org:443/r${i}`] = { status: 302, headers: { location: `/r${i + 1}` }, body: "" };
    const { discovery, http } = setup(routes);
    expect((await discovery.resolve("example.org")).via).toBe("port 8448");
    expect(http.calls.length).toBe(6);
  });
});

describe("discovery: SRV on the server name (no valid well-known)", () => {
  it("4. _matrix-fed._tcp.<hostname>: connect to the target, Host and certificate for the hostname", async () => {
    const { discovery } = setup({}, { "_matrix-fed._tcp.example.org": [srv("matrix.example.org", 443)] });
    expect(await discovery.resolve("example.org")).toEqual({
      targets: [target("matrix.example.org", 443, "example.org", "example.org")],
      via: "SRV _matrix-fed._tcp",
    });
  });

  it("5. deprecated _matrix._tcp.<hostname>", async () => {
    const { discovery } = setup({}, { "_matrix._tcp.example.org": [srv("legacy.example.org", 8448)] });
    expect(await discovery.resolve("example.org")).toEqual({
      targets: [target("legacy.example.org", 8448, "example.org", "example.org")],
      via: "SRV _matrix._tcp",
    });
  });

  it("prefers _matrix-fed over _matrix", async () => {
    const { discovery, dns } = setup(
      {},
      { "_matrix-fed._tcp.example.org": [srv("new.example.org", 1)], "_matrix._tcp.example.org": [srv("old.example.org", 2)] },
    );
    expect((await discovery.resolve("example.org")).targets[0]!.host).toBe("new.example.org");
    expect(dns.calls).toEqual(["_matrix-fed._tcp.example.org"]);
  });

  it("orders several records by priority, then weight", async () => {
    const { discovery } = setup(
      {},
      { "_matrix-fed._tcp.example.org": [srv("c", 3, 20), srv("a", 1, 0), srv("b", 2, 10)] },
    );
    expect((await discovery.resolve("example.org")).targets.map((t) => t.host)).toEqual(["a", "b", "c"]);
  });

  it("a single record with target '.' means no service: a DiscoveryError", async () => {
    const { discovery } = setup({}, { "_matrix-fed._tcp.example.org": [srv(".", 0)] });
    await expect(discovery.resolve("example.org")).rejects.toThrow(/no federation service/);
  });

  it("a DNS failure other than 'no such record' is a DiscoveryError naming the lookup", async () => {
    const { discovery } = setup({}, { "_matrix-fed._tcp.example.org": dnsError("ESERVFAIL") });
    const err = await discovery.resolve("example.org").catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DiscoveryError);
    expect((err as Error).message).toBe("DNS lookup of _matrix-fed._tcp.example.org failed (ESERVFAIL)");
  });

  it("SRV answers are cached; a later DNS failure falls back to the cached answer", async () => {
    const { discovery, dns, clock } = setup({}, { "_matrix-fed._tcp.example.org": [srv("m.example.org", 443)] });
    await discovery.resolve("example.org");
    await discovery.resolve("example.org");
    expect(dns.calls).toEqual(["_matrix-fed._tcp.example.org"]);
    clock.t += 11 * MINUTE;
    dns.table["_matrix-fed._tcp.example.org"] = dnsError("ETIMEOUT");
    expect((await discovery.resolve("example.org")).targets[0]!.host).toBe("m.example.org");
    expect(dns.calls).toHaveLength(2);
  });

  it("6. nothing at all -> hostname:8448", async () => {
    const { discovery } = setup();
    expect(await discovery.resolve("example.org")).toEqual({ targets: [target("example.org", 8448, "example.org")], via: "port 8448" });
  });
});

describe("well-known cache", () => {
  const withHeaders = (headers: Record<string, string>) => setup({ [WK("example.org")]: json({ "m.server": "1.2.3.4" }, headers) });

  it("keeps a valid answer 24 h by default and shares one fetch between concurrent lookups", async () => {
    const { discovery, http, clock } = withHeaders({});
    await Promise.all([discovery.resolve("example.org"), discovery.resolve("example.org"), discovery.resolve("example.org")]);
    expect(http.calls).toHaveLength(1);
    clock.t += WELL_KNOWN_DEFAULT_CACHE_MS - 1;
    await discovery.resolve("example.org");
    expect(http.calls).toHaveLength(1);
    clock.t += 2;
    await discovery.resolve("example.org");
    expect(http.calls).toHaveLength(2);
  });

  it.each([
    ["max-age=3600", { "cache-control": "public, max-age=3600" }, HOUR],
    ["max-age above 48 h is cut to 48 h", { "cache-control": "max-age=999999999" }, WELL_KNOWN_MAX_CACHE_MS],
    ["max-age below 5 min is raised to 5 min", { "cache-control": "max-age=10" }, WELL_KNOWN_MIN_CACHE_MS],
    ["no-store is raised to 5 min", { "cache-control": "no-store" }, WELL_KNOWN_MIN_CACHE_MS],
  ])("%s", async (_what, headers, periodMs) => {
    const { discovery, http, clock } = withHeaders(headers);
    await discovery.resolve("example.org");
    clock.t += periodMs - 1;
    await discovery.resolve("example.org");
    expect(http.calls).toHaveLength(1);
    clock.t += 2;
    await discovery.resolve("example.org");
    expect(http.calls).toHaveLength(2);
  });

  it("invalid answers and failures are cached for an hour", async () => {
    const { discovery, http, clock } = setup({ [WK("example.org")]: json({}, {}, 404) });
    await discovery.resolve("example.org");
    clock.t += WELL_KNOWN_INVALID_CACHE_MS - 1;
    await discovery.resolve("example.org");
    expect(http.calls).toHaveLength(1);
    clock.t += 2;
    await discovery.resolve("example.org");
    expect(http.calls).toHaveLength(2);
  });

  it("a temporary failure when refreshing keeps the previous delegation for a while", async () => {
    const { discovery, http, clock } = setup({ [WK("example.org")]: json({ "m.server": "1.2.3.4" }, { "cache-control": "max-age=600" }) });
    await discovery.resolve("example.org");
    http.routes[WK("example.org")] = json({}, {}, 503);
    clock.t += 11 * MINUTE;
    expect((await discovery.resolve("example.org")).via).toBe("well-known -> ip literal");
    // An invalid (not temporary) answer ends the delegation.
    http.routes[WK("example.org")] = json({}, {}, 404);
    clock.t += 3 * MINUTE;
    expect((await discovery.resolve("example.org")).via).toBe("port 8448");
  });

  it("the previous delegation is not kept forever when the well-known stays down", async () => {
    const { discovery, http, clock } = setup({ [WK("example.org")]: json({ "m.server": "1.2.3.4" }, { "cache-control": "max-age=600" }) });
    await discovery.resolve("example.org");
    delete http.routes[WK("example.org")];
    clock.t += 11 * MINUTE;
    expect((await discovery.resolve("example.org")).via).toBe("well-known -> ip literal");
    for (let i = 0; i < 70 && (await discovery.resolve("example.org")).via !== "port 8448"; i++) clock.t += 3 * MINUTE;
    expect((await discovery.resolve("example.org")).via).toBe("port 8448");
  });
});

describe("cachePeriodMs and orderSrv", () => {
  it("reads max-age, no-store and Expires", () => {
    const now = Date.parse("2026-01-01T00:00:00Z");
    expect(cachePeriodMs({ "cache-control": "max-age=60" }, now)).toBe(60_000);
    expect(cachePeriodMs({ "cache-control": 'max-age="60"' }, now)).toBe(60_000);
    expect(cachePeriodMs({ "cache-control": "no-store, max-age=60" }, now)).toBe(0);
    expect(cachePeriodMs({ expires: "Thu, 01 Jan 2026 01:00:00 GMT" }, now)).toBe(HOUR);
    expect(cachePeriodMs({ expires: "0" }, now)).toBe(0);
    expect(cachePeriodMs({}, now)).toBeUndefined();
  });

  it("weights pick within a priority", () => {
    const records = [srv("light", 1, 10, 1), srv("heavy", 2, 10, 99), srv("backup", 3, 20, 50)];
    expect(orderSrv(records, () => 0.5).map((r) => r.name)).toEqual(["heavy", "light", "backup"]);
    expect(orderSrv(records, () => 0).map((r) => r.name)).toEqual(["light", "heavy", "backup"]);
  });
});

// ---------------------------------------------------------------------------------------------
// The real transport against local servers

describe("nodeFederationHttp", () => {
  const servers: (http.Server | https.Server)[] = [];
  let dir: string;
  let cert: string;
  let key: string;

  beforeAll(async () => {
    dir = await fs.mkdtemp(path.join(os.tmpdir(), "parley-fedhttp-"));
    await promisify(execFile)("openssl", [
      "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes", "-days", "1",
      "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1,DNS:fed.test",
      "-keyout", path.join(dir, "k.pem"), "-out", path.join(dir, "c.pem"),
    ]);
    [cert, key] = await Promise.all([fs.readFile(path.join(dir, "c.pem"), "utf8"), fs.readFile(path.join(dir, "k.pem"), "utf8")]);
  });

  afterEach(async () => {
    await Promise.all(servers.splice(0).map((s) => new Promise((r) => { s.closeAllConnections(); s.close(r); })));
  });

  afterAll(async () => {
    await fs.rm(dir, { recursive: true, force: true });
  });

  const seen: { host?: string; url?: string; servername?: string }[] = [];
  const handler: http.RequestListener = (req, res) => {
    seen.push({ host: req.headers.host, url: req.url, servername: (req.socket as { servername?: string }).servername });
    if (req.url?.startsWith("/big")) {
      res.writeHead(200);
      res.end("x".repeat(100_000));
    } else if (req.url?.startsWith("/slow")) {
      // never answers
    } else if (req.url?.startsWith("/stream")) {
      res.writeHead(200);
      for (let i = 0; i < 20; i++) res.write("y".repeat(10_000));
      res.end();
    } else {
      res.writeHead(200, { "content-type": "application/json", "cache-control": "max-age=5" });
      res.end(JSON.stringify({ ok: true }));
    }
  };

  async function listen(server: http.Server | https.Server): Promise<number> {
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    return (server.address() as AddressInfo).port;
  }

  // These servers listen on loopback, which a transport refuses unless allowed (addressGuard.test.ts).
  const LOOPBACK = { allowPrivateAddresses: true };

  const tgt = (port: number, over: Partial<ServerTarget> = {}): ServerTarget => ({
    scheme: "https",
    host: "127.0.0.1",
    port,
    hostHeader: `127.0.0.1:${port}`,
    tlsName: "127.0.0.1",
    pathPrefix: "",
    ...over,
  });

  it("GETs with the Host header and path prefix given, returns status, lower-case headers and body", async () => {
    const port = await listen(http.createServer(handler));
    const t = nodeFederationHttp(LOOPBACK);
    try {
      seen.length = 0;
      const a = await t.get(tgt(port, { scheme: "http", hostHeader: "example.org", pathPrefix: "/prefix" }), "/x?access_token=s3cret");
      expect(a).toMatchObject({ status: 200, body: '{"ok":true}' });
      expect(a.headers["cache-control"]).toBe("max-age=5");
      expect(seen[0]).toMatchObject({ host: "example.org", url: "/prefix/x?access_token=s3cret" });
    } finally {
      t.close();
    }
  });

  it("refuses a self-signed certificate unless it is trusted (ca) or checks are off", async () => {
    const port = await listen(https.createServer({ cert, key }, handler));
    const verifying = nodeFederationHttp(LOOPBACK);
    const trusting = nodeFederationHttp({ ...LOOPBACK, ca: cert });
    const lax = nodeFederationHttp({ ...LOOPBACK, tlsVerify: false });
    try {
      const err = await verifying.get(tgt(port), "/x?access_token=s3cret").catch((e: unknown) => e);
      expect(err).toBeInstanceOf(TransportError);
      expect((err as TransportError).kind).toBe("tls");
      expect((err as Error).message).toMatch(/^TLS with 127\.0\.0\.1:\d+ failed: self-signed certificate \(DEPTH_ZERO_SELF_SIGNED_CERT\)$/);
      expect((err as Error).message).not.toContain("s3cret");
      expect((await trusting.get(tgt(port), "/x")).status).toBe(200);
      expect((await lax.get(tgt(port), "/x")).status).toBe(200);
    } finally {
      verifying.close();
      trusting.close();
      lax.close();
    }
  });

  it("checks the certificate against tlsName (not the address connected to) and sends it as SNI", async () => {
    const port = await listen(https.createServer({ cert, key }, handler));
    const t = nodeFederationHttp({ ...LOOPBACK, ca: cert });
    try {
      seen.length = 0;
      expect((await t.get(tgt(port, { tlsName: "fed.test", hostHeader: "fed.test" }), "/x")).status).toBe(200);
      expect(seen[0]).toMatchObject({ host: "fed.test", servername: "fed.test" });
      const err = await t.get(tgt(port, { tlsName: "other.test", hostHeader: "other.test" }), "/x").catch((e: unknown) => e);
      expect((err as TransportError).kind).toBe("tls");
      expect((err as Error).message).toContain("ERR_TLS_CERT_ALTNAME_INVALID");
    } finally {
      t.close();
    }
  });

  it("bounds the body, declared or streamed", async () => {
    const port = await listen(http.createServer(handler));
    const t = nodeFederationHttp({ ...LOOPBACK, maxBodyBytes: 50_000 });
    try {
      for (const p of ["/big", "/stream"]) {
        const err = await t.get(tgt(port, { scheme: "http" }), p).catch((e: unknown) => e);
        expect((err as TransportError).kind).toBe("too-large");
        expect((err as Error).message).toBe(`127.0.0.1:${port} sent an answer larger than 50000 bytes`);
      }
    } finally {
      t.close();
    }
  });

  it("times out a server that never answers", async () => {
    const port = await listen(http.createServer(handler));
    const t = nodeFederationHttp({ ...LOOPBACK, timeoutMs: 300 });
    try {
      const started = performance.now();
      const err = await t.get(tgt(port, { scheme: "http" }), "/slow?access_token=s3cret").catch((e: unknown) => e);
      expect((err as TransportError).kind).toBe("timeout");
      expect((err as Error).message).toBe(`no answer from 127.0.0.1:${port} within 300 ms`);
      expect(performance.now() - started).toBeLessThan(2000);
    } finally {
      t.close();
    }
  });

  it("times out a TLS handshake that never completes (connect timeout)", async () => {
    // A TCP listener that accepts and then says nothing: the TLS handshake hangs.
    const sockets: net.Socket[] = [];
    const server = net.createServer((s) => sockets.push(s));
    await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
    const port = (server.address() as AddressInfo).port;
    const t = nodeFederationHttp({ ...LOOPBACK, connectTimeoutMs: 200, timeoutMs: 5000 });
    try {
      const err = await t.get(tgt(port), "/x").catch((e: unknown) => e);
      expect((err as TransportError).kind).toBe("timeout");
      expect((err as Error).message).toBe(`could not connect to 127.0.0.1:${port} within 200 ms`);
    } finally {
      t.close();
      sockets.forEach((s) => s.destroy());
      await new Promise((r) => server.close(r));
    }
  });

  it("reports a refused connection as a connect error", async () => {
    const port = await listen(http.createServer(handler));
    await new Promise((r) => servers.pop()!.close(r));
    const t = nodeFederationHttp(LOOPBACK);
    try {
      const err = await t.get(tgt(port), "/x").catch((e: unknown) => e);
      expect((err as TransportError).kind).toBe("connect");
      expect((err as Error).message).toContain(`could not connect to 127.0.0.1:${port}`);
      expect((err as Error).message).toContain("ECONNREFUSED");
    } finally {
      t.close();
    }
  });
});
