// The check logic and the report of `parley doctor`, without a deployment: verdicts from the
// homeserver's answers, Janus's info, the clock, and a real SQLite file for the store check.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import Database from "better-sqlite3";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { exitCode, formatHuman, formatJson, runChecks, type Check } from "../../../appservice/src/ops/doctor.ts";
import { deriveKey, seal } from "../../../appservice/src/crypto/sealedFile.ts";
import { clockFinding, cryptoFinding, endpoints, janusInfoFindings, pingFinding, storeFinding, tlsCheck, tlsTargets, turnCheck } from "../../../appservice/src/ops/doctorChecks.ts";
import { testConfig } from "./fixtures.ts";

const limits = { requestTimeoutMs: 1000, clockWarnMs: 5000, clockErrorMs: 60_000, certWarnDays: 21 };
const fixed = (id: string, status: "ok" | "warn" | "error" | "info" | "skip", fix?: string): Check => ({ id, run: async () => [{ check: id, status, message: `${id} says ${status}`, fix }] });

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), "parley-doctor-"));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

describe("the report", () => {
  it("runs every check, turns a throwing one into an error, and fails only on errors", async () => {
    const healthy = await runChecks([fixed("a", "ok"), fixed("b", "warn", "do b"), fixed("c", "info"), fixed("d", "skip")], []);
    expect(healthy.ok).toBe(true);
    expect(exitCode(healthy)).toBe(0);
    expect(healthy.counts).toEqual({ ok: 1, info: 1, warn: 1, error: 0, skip: 1 });

    const broken = await runChecks([{ id: "boom", run: () => Promise.reject(new Error("no route")) }, fixed("after", "ok")], []);
    expect(broken.findings.map((f) => [f.check, f.status])).toEqual([["boom", "error"], ["after", "ok"]]);
    expect(broken.findings[0]!.message).toContain("no route");
    expect(exitCode(broken)).toBe(1);
  });

  it("prints one line per finding, the fix under problems, then the endpoints; --json is the same data", async () => {
    const report = await runChecks([fixed("registration", "error", "run parley -g"), fixed("store", "ok")], [
      { kind: "janus", address: "ws://127.0.0.1:8188", why: "SFU node a" },
    ]);
    const text = formatHuman(report);
    expect(text).toBe([
      "ERROR  registration  registration says error",
      "                     fix: run parley -g",
      "ok     store         store says ok",
      "",
      "External endpoints this deployment contacts:",
      "  janus  ws://127.0.0.1:8188  (SFU node a)",
      "",
      "1 error, 0 warnings.",
      "",
    ].join("\n"));
    expect(JSON.parse(formatJson(report))).toEqual(report);
  });
});

describe("the checks' verdicts", () => {
  it("clock: the Date header's distance, warning and error from their thresholds", () => {
    const server = "Sun, 29 Nov 2026 12:00:00 GMT";
    const at = Date.parse(server);
    expect(clockFinding(server, at + 900, limits).status).toBe("ok");
    expect(clockFinding(server, at + 5000, limits)).toMatchObject({ status: "warn", message: "this machine's clock is 5 s ahead of the homeserver's" });
    expect(clockFinding(server, at - 60_000, limits)).toMatchObject({ status: "error", message: "this machine's clock is 60 s behind the homeserver's" });
    expect(clockFinding(null, at, limits).status).toBe("warn");
  });

  it("registration: each answer of the appservice ping names its cause", () => {
    const config = testConfig();
    expect(pingFinding(200, { duration_ms: 12 }, config).status).toBe("ok");
    expect(pingFinding(502, { errcode: "M_BAD_STATUS", status: 403 }, config)).toMatchObject({ status: "error", message: expect.stringContaining("hs_token") });
    expect(pingFinding(401, { errcode: "M_UNKNOWN_TOKEN" }, config).message).toContain("asToken");
    expect(pingFinding(403, { errcode: "M_FORBIDDEN" }, config).message).toContain("appservice.id 'parley'");
    expect(pingFinding(502, { errcode: "M_CONNECTION_FAILED" }, config)).toMatchObject({ status: "error", message: expect.stringContaining("cannot reach Parley at appservice.url http://127.0.0.1:9000") });
    expect(pingFinding(404, { errcode: "M_UNRECOGNIZED" }, config).status).toBe("warn");
  });

  it("janus: Parley's generated config passes; no api_secret, no VideoRoom or extra modules do not", () => {
    const generated = { api_secret: true, plugins: { "janus.plugin.videoroom": {} }, transports: { "janus.transport.websockets": {} }, "reclaim-session-timeout": 30 };
    expect(janusInfoFindings("janus.a", generated)).toEqual([]);
    const stock = { api_secret: false, plugins: { "janus.plugin.echotest": {} }, transports: { "janus.transport.websockets": {}, "janus.transport.http": {} }, "reclaim-session-timeout": 0 };
    expect(janusInfoFindings("janus.a", stock).map((f) => [f.status, f.message])).toEqual([
      ["error", "Janus has no api_secret: anyone who reaches its API can create sessions"],
      ["error", "Janus has no VideoRoom plugin loaded"],
      ["warn", "Janus loads modules Parley's config disables: janus.plugin.echotest, janus.transport.http"],
      ["warn", "reclaim_session_timeout is 0: a dropped connection to Parley ends every call on this node"],
    ]);
  });

  it("turn: without a probe it is skipped as not configured", async () => {
    const [f] = await turnCheck(undefined).run();
    expect(f).toMatchObject({ check: "turn", status: "skip", message: expect.stringMatching(/^not configured/) });
  });

  it("tls: loopback http is 'not TLS' info, public http that browsers use is a warning", async () => {
    const config = testConfig({ meetings: { publicUrl: "http://meet.example.org" } });
    expect(tlsTargets(config).map((t) => t.what)).toEqual(["meetings.publicUrl", "homeserver.url", "appservice.url"]);
    const findings = await tlsCheck(config, limits).run();
    expect(findings.map((f) => [f.check, f.status, f.message])).toEqual([
      ["tls.meetings.publicUrl", "warn", "http://meet.example.org: not TLS, but browsers use it (media and E2EE need a secure context)"],
      ["tls.homeserver.url", "info", "http://127.0.0.1:8008: not TLS"],
      ["tls.appservice.url", "info", "http://127.0.0.1:9000: not TLS"],
    ]);
  });
});

describe("store", () => {
  it("a writable SQLite file takes the probe write, which leaves nothing behind", async () => {
    const file = path.join(dir, "parley.db");
    new Database(file).exec("PRAGMA user_version = 4").close();
    expect(await storeFinding(file)).toMatchObject({ status: "ok", message: `${file} takes writes (schema version 4)` });
    const db = new Database(file);
    expect(db.prepare("SELECT name FROM sqlite_master").all()).toEqual([]);
    db.close();
  });

  it("a missing file in a writable folder is info; a folder that does not exist is an error", async () => {
    expect((await storeFinding(path.join(dir, "new.db"))).status).toBe("info");
    expect(await storeFinding(path.join(dir, "nope", "new.db"))).toMatchObject({ status: "error", message: expect.stringContaining("ENOENT") });
  });

  it("a file that is not a database is an error", async () => {
    const file = path.join(dir, "parley.db");
    writeFileSync(file, "not sqlite at all, just some text that is long enough to be a header");
    chmodSync(file, 0o600);
    expect(await storeFinding(file)).toMatchObject({ status: "error", message: expect.stringContaining("not writable") });
  });
});

describe("endpoints", () => {
  it("lists the homeserver, Parley, each Janus node, ICE servers and every partner server once", () => {
    const config = testConfig({
      homeserver: { url: "http://127.0.0.1:8008", publicUrl: "https://matrix.example.org", domain: "example.org" },
      federation: { allow: ["partner.example", "*.gov.example"], openidOverrides: { "partner.example": "https://matrix.partner.example:8448" } },
      calls: { iceServers: [{ urls: ["turns:turn.example.org:5349"] }] },
    });
    expect(endpoints(config, undefined).map((e) => `${e.kind} ${e.address}`)).toEqual([
      "homeserver http://127.0.0.1:8008",
      "homeserver https://matrix.example.org",
      "appservice http://127.0.0.1:9000",
      "client https://meet.example.org",
      "janus ws://127.0.0.1:8188",
      "turn turns:turn.example.org:5349",
      "federation partner.example",
      "federation *.gov.example",
    ]);
    const partner = endpoints(config, undefined).find((e) => e.address === "partner.example")!;
    expect(partner.why).toContain("OpenID checks at https://matrix.partner.example:8448");
    const probe = { endpoints: () => [{ kind: "turn" as const, address: "turn:127.0.0.1:3478", why: "own TURN" }], check: async () => [] };
    expect(endpoints(config, probe).map((e) => e.address)).toContain("turn:127.0.0.1:3478");
  });
});

describe("crypto", () => {
  it("the bot's file opens with the key; another key is an error; no file yet is info", async () => {
    const file = path.join(dir, "parley-crypto.bin");
    const key = "k".repeat(40);
    expect((await cryptoFinding({ path: file, storeKey: key })).status).toBe("info");
    writeFileSync(file, seal(Buffer.from("device"), deriveKey(key, "olm-snapshot")));
    expect(await cryptoFinding({ path: file, storeKey: key })).toMatchObject({ status: "ok" });
    expect(await cryptoFinding({ path: file, storeKey: "z".repeat(40) })).toMatchObject({ status: "error", message: expect.stringContaining("does not open with the configured key") });
    expect((await cryptoFinding(undefined)).status).toBe("info");
  });
});
