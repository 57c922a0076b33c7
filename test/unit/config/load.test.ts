import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { ConfigError, isPlaceholder, loadConfig, parseConfig, parseYaml } from "../../../appservice/src/config/load.ts";

/** meetings.media with nothing given (docs/large-meetings.md). */
const MEDIA_DEFAULTS = {
  lastN: 9, layerKbps: [150, 500, 1500], keyframeIntervalMs: 1000, speakerHoldMs: 1500, speakerGapMs: 600, speakersPushIntervalMs: 300,
  audioActivePackets: 5, audioLevelAverage: 25, opusDtx: true,
  largeCall: { from: 10, publisherBitrate: 700_000, liftedBitrate: 2_500_000 },
};

const AS = "a".repeat(64);
const HS = "b".repeat(64);

/** A minimal valid config: only the keys without defaults. */
function minimal(): Record<string, Record<string, unknown>> {
  return {
    homeserver: { url: "http://127.0.0.1:8008", domain: "example.org" },
    appservice: { url: "http://127.0.0.1:9000", asToken: AS, hsToken: HS },
    meetings: { publicUrl: "https://meet.example.org" },
  };
}

function with_(section: string, patch: Record<string, unknown>): Record<string, Record<string, unknown>> {
  const raw = minimal();
  raw[section] = { ...raw[section], ...patch };
  return raw;
}

function problemsOf(raw: unknown): string[] {
  try {
    parseConfig(raw, "test.yaml");
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    return (err as ConfigError).problems;
  }
  throw new Error("parseConfig accepted the config");
}

describe("parseConfig", () => {
  it("applies every default to a minimal config", () => {
    expect(parseConfig(minimal())).toEqual({
      homeserver: { url: "http://127.0.0.1:8008", domain: "example.org" },
      appservice: {
        id: "parley",
        bindAddress: "127.0.0.1",
        port: 9000,
        url: "http://127.0.0.1:9000",
        asToken: AS,
        hsToken: HS,
        botLocalpart: "parley",
        userPrefix: "_parley_",
      },
      meetings: {
        aliasPrefix: "meet-",
        publicUrl: "https://meet.example.org",
        encrypted: true,
        aliasRooms: { perMinute: 30, burst: 10, max: 10_000 },
        governance: {
          access: "open", hosts: "first_local_joiner", hostUsers: [], cohostLevel: 50, trustedServers: [], externalServers: [],
          reactionsPerMinute: 30, reactionBurst: 5,
        },
        lookupRateLimit: { perMinute: 120, burst: 30 },
        media: MEDIA_DEFAULTS,
      },
      client: { widgetHostOrigins: [], callBotLocalparts: [], insecureLoopbackCallApis: false },
      federation: { allow: [], openidOverrides: {}, tlsVerify: true, allowPrivateAddresses: false, openidTokenLifetimeSeconds: 3600 },
      sfu: { nodes: [], deadNodeSeconds: 5, warmSessions: 2 },
      calls: {
        sessionTtlSeconds: 600,
        resumeGraceSeconds: 30,
        iceServers: [],
        joinRateLimit: { perMinute: 60, burst: 20 },
        e2ee: { required: true, keys: "participant", provisionedRooms: [] },
        idleEndSeconds: 300,
        limits: { sessionsPerCall: 100, sessionsPerUserPerCall: 10, socketsPerAddress: 64, helloTimeoutSeconds: 10, standbySeconds: 300, prejoinSubscriptionsPerCall: 20, invitedJoinWaitMs: 3000, lobbyGrantsPerCall: 20, iceCandidatesBeforeMedia: 100, messagesPerSecond: 50, messageBurst: 200 },
      },
      guests: {
        mode: "off",
        deactivateAfterSeconds: 600,
        lobbyWaitSeconds: 1800,
        maxLifetimeSeconds: 86_400,
        maxLive: 200,
        createRateLimit: { perMinute: 10, burst: 5 },
        proxy: { requestsPerMinute: 600, burst: 200, concurrent: 8, maxBodyBytes: 512 * 1024, syncTimeoutSeconds: 30 },
      },
      store: { backend: "sqlite", path: "parley.db" },
      metrics: { enabled: true, bindAddress: "127.0.0.1", port: 9001 },
      health: { cacheMs: 2000, intervalMs: 5000, probeTimeoutMs: 2000 },
      privacy: { retentionDays: 183, pseudonymizeRemoteUsers: false, auditQueueMax: 10_000, auditBatchSize: 200, auditFlushMs: 500 },
      logging: { level: "info" },
    });
  });

  it("keeps values that are given instead of the defaults", () => {
    const config = parseConfig({
      ...with_("meetings", { governance: { access: "invited", cohostLevel: 60 }, encrypted: false, aliasPrefix: "call-", aliasRooms: { burst: 3 } }),
      federation: { allow: ["partner.example", "*.gov.example"] },
      logging: { level: "debug" },
    });
    expect(config.meetings).toEqual({
      aliasPrefix: "call-",
      publicUrl: "https://meet.example.org",
      encrypted: false,
      aliasRooms: { perMinute: 30, burst: 3, max: 10_000 },
      governance: {
        access: "invited", hosts: "first_local_joiner", hostUsers: [], cohostLevel: 60, trustedServers: [], externalServers: [],
        reactionsPerMinute: 30, reactionBurst: 5,
      },
      lookupRateLimit: { perMinute: 120, burst: 30 },
      media: MEDIA_DEFAULTS,
    });
    expect(config.federation.allow).toEqual(["partner.example", "*.gov.example"]);
    expect(config.logging.level).toBe("debug");
  });

  it("takes the large-meeting media settings within their limits (meetings.media)", () => {
    const config = parseConfig(with_("meetings", { media: { lastN: 4, largeCall: { from: 20 } } }));
    expect(config.meetings.media).toEqual({ ...MEDIA_DEFAULTS, lastN: 4, largeCall: { ...MEDIA_DEFAULTS.largeCall, from: 20 } });
    expect(problemsOf(with_("meetings", { media: { lastN: 51 } }))[0]).toMatch(/^meetings\.media\.lastN: /);
    expect(problemsOf(with_("meetings", { media: { layerKbps: [1, 2] } }))[0]).toMatch(/^meetings\.media\.layerKbps/);
    expect(problemsOf(with_("meetings", { media: { largeCall: { publisherBitrate: 1000 } } }))[0]).toMatch(/^meetings\.media\.largeCall\.publisherBitrate: /);
  });

  it("names the path and the expected type of a wrong type", () => {
    expect(problemsOf(with_("appservice", { port: "9000" }))).toEqual(["appservice.port: expected number"]);
    expect(problemsOf(with_("homeserver", { domain: 3 }))).toEqual(["homeserver.domain: expected string"]);
    expect(problemsOf(with_("meetings", { encrypted: "yes" }))).toEqual(["meetings.encrypted: expected boolean"]);
    expect(problemsOf(with_("meetings", { aliasRooms: { burst: 0 } }))[0]).toMatch(/^meetings\.aliasRooms\.burst: /);
  });

  it("says a required key is missing", () => {
    const raw = minimal();
    delete raw.homeserver!.domain;
    expect(problemsOf(raw)).toEqual(["homeserver.domain: expected string (missing)"]);
  });

  it("reports a missing section and every missing key at once", () => {
    expect(problemsOf({ homeserver: {} })).toEqual([
      "homeserver.url: expected string (missing)",
      "homeserver.domain: expected string (missing)",
      "appservice: expected object (missing)",
      "meetings: expected object (missing)",
    ]);
  });

  it("refuses a document that is not a mapping", () => {
    expect(problemsOf("just a string")).toEqual(["(top level): expected object"]);
    expect(problemsOf([1, 2])).toEqual(["(top level): expected object"]);
  });

  it("says what a URL should look like", () => {
    expect(problemsOf(with_("homeserver", { url: "localhost 8008" }))).toEqual([
      "homeserver.url: expected an absolute URL such as https://example.org",
    ]);
    expect(problemsOf(with_("meetings", { publicUrl: "meet.example.org" }))).toEqual([
      "meetings.publicUrl: expected an absolute URL such as https://example.org",
    ]);
  });

  it("names an unknown key that is alone in a section", () => {
    expect(problemsOf(with_("meetings", { joinrule: "invite" }))).toEqual(["meetings: unknown key 'joinrule'"]);
  });

  it("bounds how long a Janus node may be down before its calls move (sfu.deadNodeSeconds)", () => {
    expect(parseConfig({ ...minimal(), sfu: { deadNodeSeconds: 0.5 } }).sfu.deadNodeSeconds).toBe(0.5);
    expect(problemsOf({ ...minimal(), sfu: { deadNodeSeconds: 0.4 } })).toEqual(["sfu.deadNodeSeconds: Too small: expected number to be >=0.5"]);
    expect(problemsOf({ ...minimal(), sfu: { deadNodeSeconds: 301 } })).toEqual(["sfu.deadNodeSeconds: Too big: expected number to be <=300"]);
  });

  it("bounds how long a standby signalling socket waits for its hello (calls.limits.standbySeconds)", () => {
    const limits = (standbySeconds: number) => ({ ...minimal(), calls: { limits: { standbySeconds } } });
    expect(parseConfig(limits(1)).calls.limits.standbySeconds).toBe(1);
    expect(parseConfig(limits(3600)).calls.limits.standbySeconds).toBe(3600);
    expect(problemsOf(limits(3601))).toEqual(["calls.limits.standbySeconds: Too big: expected number to be <=3600"]);
    expect(problemsOf(limits(0))).toEqual(["calls.limits.standbySeconds: Too small: expected number to be >=1"]);
  });

  it("bounds the grants knockers may hold in one call's lobby (calls.limits.lobbyGrantsPerCall; 0 turns them off)", () => {
    const limits = (lobbyGrantsPerCall: number) => ({ ...minimal(), calls: { limits: { lobbyGrantsPerCall } } });
    expect(parseConfig(limits(0)).calls.limits.lobbyGrantsPerCall).toBe(0);
    expect(parseConfig(limits(10_000)).calls.limits.lobbyGrantsPerCall).toBe(10_000);
    expect(problemsOf(limits(10_001))).toEqual(["calls.limits.lobbyGrantsPerCall: Too big: expected number to be <=10000"]);
    expect(problemsOf(limits(-1))).toEqual(["calls.limits.lobbyGrantsPerCall: Too small: expected number to be >=0"]);
  });

  it("bounds the Janus sessions kept open ahead per node (sfu.warmSessions)", () => {
    expect(parseConfig({ ...minimal(), sfu: { warmSessions: 0 } }).sfu.warmSessions).toBe(0);
    expect(parseConfig({ ...minimal(), sfu: { warmSessions: 64 } }).sfu.warmSessions).toBe(64);
    expect(problemsOf({ ...minimal(), sfu: { warmSessions: 65 } })).toEqual(["sfu.warmSessions: Too big: expected number to be <=64"]);
    expect(problemsOf({ ...minimal(), sfu: { warmSessions: -1 } })).toEqual(["sfu.warmSessions: Too small: expected number to be >=0"]);
    expect(problemsOf({ ...minimal(), sfu: { warmSessions: 1.5 } })).toHaveLength(1);
  });

  it("names an unknown top-level section", () => {
    expect(problemsOf({ ...minimal(), federaton: { allow: [] } })).toEqual(["(top level): unknown key 'federaton'"]);
  });

  it("lists the allowed values of an enum", () => {
    expect(problemsOf(with_("meetings", { governance: { access: "public" } }))).toEqual([
      'meetings.governance.access: Invalid option: expected one of "open"|"institution"|"invited"',
    ]);
    expect(
      problemsOf({ ...minimal(), sfu: { nodes: [{ id: "a", url: "ws://127.0.0.1:8188", apiSecret: "generate", adminKey: "short" }] } }),
    ).toEqual(["sfu.nodes.0.apiSecret: placeholder secret 'generate' refused", "sfu.nodes.0.adminKey: expected a random secret of at least 32 characters"]);
    expect(problemsOf({ ...minimal(), logging: { level: "loud" } })).toEqual([
      'logging.level: Invalid option: expected one of "fatal"|"error"|"warn"|"info"|"debug"|"trace"',
    ]);
  });

  it("refuses a port out of range and bad localparts and server globs", () => {
    expect(problemsOf(with_("appservice", { port: 70000 }))).toEqual(["appservice.port: Too big: expected number to be <=65535"]);
    expect(problemsOf(with_("appservice", { botLocalpart: "Parley" }))).toEqual([
      "appservice.botLocalpart: lower-case Matrix localpart characters only (a-z 0-9 . _ = - /)",
    ]);
    expect(problemsOf({ ...minimal(), federation: { allow: ["ok.example", "bad name"] } })).toEqual([
      "federation.allow.1: a server name or glob such as example.org or *.gov.example",
    ]);
  });

  it("bounds how long used OpenID tokens are remembered (60 s .. 1 day)", () => {
    expect(problemsOf({ ...minimal(), federation: { openidTokenLifetimeSeconds: 59 } })).toEqual([
      "federation.openidTokenLifetimeSeconds: Too small: expected number to be >=60",
    ]);
    expect(problemsOf({ ...minimal(), federation: { openidTokenLifetimeSeconds: 86_401 } })).toEqual([
      "federation.openidTokenLifetimeSeconds: Too big: expected number to be <=86400",
    ]);
    const ok = parseConfig({ ...minimal(), federation: { openidTokenLifetimeSeconds: 60, allowPrivateAddresses: true } }, "parley.yaml");
    expect(ok.federation).toMatchObject({ openidTokenLifetimeSeconds: 60, allowPrivateAddresses: true });
  });

  it.each(["generate", "CHANGE_ME", "<token>", "${AS_TOKEN}", "xxxxxxxx", " changeme "])(
    "refuses the placeholder secret %j",
    (placeholder) => {
      expect(problemsOf(with_("appservice", { asToken: placeholder }))).toEqual([
        `appservice.asToken: placeholder secret '${placeholder}' refused; run 'parley -g -c test.yaml' to generate one`,
      ]);
    },
  );

  it("bounds the health check's cache, interval and probe timeout (health)", () => {
    expect(problemsOf({ ...minimal(), health: { cacheMs: 99, intervalMs: 499, probeTimeoutMs: 30_001 } })).toEqual([
      "health.cacheMs: Too small: expected number to be >=100",
      "health.intervalMs: Too small: expected number to be >=500",
      "health.probeTimeoutMs: Too big: expected number to be <=30000",
    ]);
    const ok = parseConfig({ ...minimal(), health: { cacheMs: 100, intervalMs: 500, probeTimeoutMs: 30_000 } }, "parley.yaml");
    expect(ok.health).toEqual({ cacheMs: 100, intervalMs: 500, probeTimeoutMs: 30_000 });
  });

  it("pseudonymising remote users needs a generated pseudonym key", () => {
    expect(problemsOf({ ...minimal(), privacy: { pseudonymizeRemoteUsers: true } })).toEqual([
      "privacy.pseudonymKey: required when privacy.pseudonymizeRemoteUsers is true (set it to 'generate' and run parley -g)",
    ]);
    expect(problemsOf({ ...minimal(), privacy: { pseudonymizeRemoteUsers: true, pseudonymKey: "generate" } })).toEqual([
      "privacy.pseudonymKey: placeholder secret 'generate' refused; run 'parley -g -c test.yaml' to generate one",
    ]);
    expect(parseConfig({ ...minimal(), privacy: { pseudonymizeRemoteUsers: true, pseudonymKey: "p".repeat(32) } }).privacy.pseudonymizeRemoteUsers).toBe(true);
    expect(problemsOf({ ...minimal(), privacy: { retentionDays: 0 } })).toEqual(["privacy.retentionDays: Too small: expected number to be >=1"]);
  });

  it("reports both placeholder secrets", () => {
    expect(problemsOf(with_("appservice", { asToken: "<as token>", hsToken: "generate" }))).toEqual([
      "appservice.asToken: placeholder secret '<as token>' refused; run 'parley -g -c test.yaml' to generate one",
      "appservice.hsToken: placeholder secret 'generate' refused; run 'parley -g -c test.yaml' to generate one",
    ]);
  });

  it("refuses a secret shorter than 32 characters and accepts 32", () => {
    expect(problemsOf(with_("appservice", { hsToken: "s3cr3t-but-short" }))).toEqual([
      "appservice.hsToken: expected a random secret of at least 32 characters",
    ]);
    expect(problemsOf(with_("appservice", { hsToken: "h".repeat(31) }))).toEqual([
      "appservice.hsToken: expected a random secret of at least 32 characters",
    ]);
    expect(parseConfig(with_("appservice", { hsToken: "h".repeat(32) })).appservice.hsToken).toBe("h".repeat(32));
  });

  it("refuses an empty secret", () => {
    expect(problemsOf(with_("appservice", { asToken: "" }))).toEqual([
      "appservice.asToken: Too small: expected string to have >=1 characters",
    ]);
  });

  it("refuses identical as and hs tokens", () => {
    expect(problemsOf(with_("appservice", { hsToken: AS }))).toEqual(["appservice.hsToken: must differ from appservice.asToken"]);
  });

  it("puts the file name and every problem in the error message", () => {
    expect(() => parseConfig(with_("appservice", { asToken: "generate", port: "x" }), "/etc/parley.yaml")).toThrow(
      "invalid config /etc/parley.yaml:\n  - appservice.port: expected number",
    );
  });
});

describe("isPlaceholder", () => {
  it("recognises placeholders and nothing else", () => {
    for (const p of ["generate", "GENERATE", "CHANGE_ME", "change-me", "secret", "TODO", "<token>", "${X}", "xxx"]) {
      expect(isPlaceholder(p), p).toBe(true);
    }
    for (const s of ["9f2c", "generated-secret-value", "x1", "<token"]) {
      expect(isPlaceholder(s), s).toBe(false);
    }
  });
});

describe("parseYaml", () => {
  it("reports a syntax error with its line", () => {
    let err: unknown;
    try {
      parseYaml("homeserver:\n  url: [unclosed\n  domain: x\n", "bad.yaml");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    const { problems, message } = err as ConfigError;
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/^YAML: .* at line 3, column 3/);
    expect(message.startsWith("invalid config bad.yaml:\n  - YAML: ")).toBe(true);
  });

  it("returns plain data", () => {
    expect(parseYaml("a:\n  b: [1, two]\n", "x.yaml")).toEqual({ a: { b: [1, "two"] } });
  });
});

describe("loadConfig", () => {
  let dir: string | undefined;
  afterEach(() => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    dir = undefined;
  });

  function writeConfig(extra: string): string {
    dir = mkdtempSync(path.join(tmpdir(), "parley-load-"));
    const file = path.join(dir, "conf", "parley.yaml");
    const text = [
      "homeserver:",
      "  url: http://127.0.0.1:8008",
      "  domain: example.org",
      "appservice:",
      "  url: http://127.0.0.1:9000",
      `  asToken: ${AS}`,
      `  hsToken: ${HS}`,
      "meetings:",
      "  publicUrl: https://meet.example.org",
      extra,
    ].join("\n");
    mkdirSync(path.dirname(file));
    writeFileSync(file, text);
    return file;
  }

  it("resolves the default store path next to the config file", () => {
    const file = writeConfig("");
    expect(loadConfig(file).store.path).toBe(path.join(dir!, "conf", "parley.db"));
  });

  it("resolves a relative store path against the config file's folder, not the cwd", () => {
    const file = writeConfig("store:\n  path: ../data/meetings.db\n");
    expect(loadConfig(file).store.path).toBe(path.join(dir!, "data", "meetings.db"));
  });

  it("keeps an absolute store path", () => {
    const file = writeConfig("store:\n  path: /var/lib/parley/parley.db\n");
    expect(loadConfig(file).store.path).toBe("/var/lib/parley/parley.db");
  });

  it("labels problems with the file name", () => {
    const file = writeConfig("logging:\n  level: loud\n");
    expect(() => loadConfig(file)).toThrow(`invalid config ${file}:\n  - logging.level: Invalid option`);
  });

  it("reports YAML syntax errors of the file", () => {
    const file = writeConfig("store: [oops\n");
    expect(() => loadConfig(file)).toThrow(/YAML: /);
  });

  it("reports a file that cannot be read", () => {
    dir = mkdtempSync(path.join(tmpdir(), "parley-load-"));
    const file = path.join(dir, "absent.yaml");
    expect(() => loadConfig(file)).toThrow(new RegExp(`^invalid config ${file}:\\n  - cannot read: ENOENT`));
  });
});

describe("the turn section", () => {
  const turn = (patch: Record<string, unknown> = {}) => ({ ...minimal(), turn: { urls: ["turn:turn.example.org:3478?transport=udp"], secretFile: "turn-secret", ...patch } });

  it("is optional; given, it defaults to 12 h credentials and direct media allowed", () => {
    expect(parseConfig(minimal()).turn).toBeUndefined();
    expect(parseConfig(turn()).turn).toEqual({ urls: ["turn:turn.example.org:3478?transport=udp"], secretFile: "turn-secret", ttlSeconds: 43_200, relayOnly: false });
  });

  it("takes TURN URLs only (no STUN, no http), at least one, and a bounded credential lifetime", () => {
    expect(problemsOf(turn({ urls: ["stun:stun.example.org:3478"] }))[0]).toMatch(/^turn\.urls\.0: a TURN URL/);
    expect(problemsOf(turn({ urls: ["https://turn.example.org"] }))[0]).toMatch(/^turn\.urls\.0: a TURN URL/);
    expect(problemsOf(turn({ urls: [] }))[0]).toMatch(/^turn\.urls: /);
    expect(problemsOf(turn({ ttlSeconds: 59 }))[0]).toMatch(/^turn\.ttlSeconds: /);
    expect(problemsOf(turn({ ttlSeconds: 86_401 }))[0]).toMatch(/^turn\.ttlSeconds: /);
    expect(parseConfig(turn({ urls: ["turns:turn.example.org:5349?transport=tcp"], ttlSeconds: 86_400 })).turn?.ttlSeconds).toBe(86_400);
  });

  it("resolves a relative secretFile against the config file's folder", () => {
    const dir = mkdtempSync(path.join(tmpdir(), "parley-load-"));
    try {
      const file = path.join(dir, "parley.yaml");
      writeFileSync(file, JSON.stringify(turn()));
      expect(loadConfig(file).turn?.secretFile).toBe(path.join(dir, "turn-secret"));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe("store section", () => {
  const withStore = (store: unknown) => ({ ...minimal(), store });

  it("postgres needs a url or a host", () => {
    expect(problemsOf(withStore({ backend: "postgres" }))).toEqual([
      "store.postgres: backend postgres needs postgres.url, or postgres.host (with user and database)",
    ]);
    expect(problemsOf(withStore({ backend: "postgres", postgres: { poolSize: 5 } }))).toHaveLength(1);
    expect(parseConfig(withStore({ backend: "postgres", postgres: { url: "postgres://parley@db.example.org:5432/parley" } })).store.postgres).toMatchObject({
      poolSize: 10,
      connectTimeoutSeconds: 10,
    });
  });

  it("refuses a password in the url, and both a password file and a variable", () => {
    expect(problemsOf(withStore({ backend: "postgres", postgres: { url: "postgres://parley:hunter2@db/parley" } }))[0]).toMatch(/^store\.postgres\.url: .*without a password/);
    expect(problemsOf(withStore({ backend: "postgres", postgres: { url: "postgres://parley@db/parley?password=hunter2" } }))).toEqual([
      "store.postgres.url: no password in url: use passwordFile or passwordEnv",
    ]);
    expect(problemsOf(withStore({ backend: "postgres", postgres: { host: "db", passwordFile: "/p", passwordEnv: "PW" } }))).toEqual([
      "store.postgres: give passwordFile or passwordEnv, not both",
    ]);
  });

  it("limits the pool size", () => {
    expect(problemsOf(withStore({ backend: "postgres", postgres: { host: "db", poolSize: 201 } }))[0]).toMatch(/^store\.postgres\.poolSize: /);
    expect(problemsOf(withStore({ backend: "postgres", postgres: { host: "db", poolSize: 0 } }))[0]).toMatch(/^store\.postgres\.poolSize: /);
  });
});
