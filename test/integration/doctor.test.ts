// `parley doctor` run as an operator runs it (the CLI, a child process) against a real Synapse,
// Parley, Janus and coturn: a healthy stack passes and lists its endpoints; a Janus that is down,
// a TURN secret that is not coturn's, a registration whose hs_token differs from Parley's, and a
// store on a read-only filesystem
// (systemd's ProtectSystem= without ReadWritePaths= does that) each fail, named. The Janus
// config `parley janus-config` writes is run by a real Janus and passes the doctor's Janus check.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import Database from "better-sqlite3";
import { parse, stringify } from "yaml";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { ParleyConfigInput } from "../../appservice/src/config/schema.ts";
import type { DoctorReport } from "../../appservice/src/ops/doctor.ts";
import { parley } from "../support/cli.ts";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { startJanus, type JanusHandle } from "../../scripts/stack/janus.ts";
import { freePort } from "../../scripts/stack/ports.ts";


let stack: Stack;
let A: Institution;
let failed = false;
const extraJanus: JanusHandle[] = [];

/** Runs `parley ARGS` and returns its exit status and output (a non-zero status is not a throw). */

async function doctor(configFile: string): Promise<{ code: number; report: DoctorReport }> {
  const { code, stdout, stderr } = await parley(["doctor", "-c", configFile, "--json"]);
  expect(stderr).toBe("");
  return { code, report: JSON.parse(stdout) as DoctorReport };
}

const statuses = (report: DoctorReport) => Object.fromEntries(report.findings.map((f) => [f.check, f.status]));
const errors = (report: DoctorReport) => report.findings.filter((f) => f.status === "error");

/** A copy of the stack's config with `change` applied, in its own file. */
async function configVariant(name: string, change: (raw: ParleyConfigInput) => void): Promise<string> {
  const raw = parse(await fs.readFile(A.parley.configFile, "utf8")) as ParleyConfigInput;
  change(raw);
  const file = path.join(A.dir, `${name}.yaml`);
  await fs.writeFile(file, stringify(raw), { mode: 0o600 });
  return file;
}

beforeAll(async () => {
  stack = await startInstitutions({ count: 1, allow: () => ["partner.example", "*.gov.example"] });
  [A] = stack.institutions as [Institution];
});

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  await Promise.all(extraJanus.map((j) => j.stop()));
  await stack?.stop({ keep: failed || undefined });
});

describe("parley doctor", () => {
  it("passes on a healthy stack and lists every endpoint it contacts", async () => {
    const { code, report } = await doctor(A.parley.configFile);
    expect(errors(report)).toEqual([]);
    expect(code).toBe(0);
    expect(statuses(report)).toMatchObject({
      config: "ok", homeserver: "ok", clock: "ok", registration: "ok", bot: "ok", [`janus.janus-a`]: "ok",
      "tls.meetings.publicUrl": "info", "tls.homeserver.publicUrl": "info", store: "ok", crypto: "ok",
    });
    // The stack's coturn over UDP (allocated, released) and TCP (listed, not probed).
    const turn = report.findings.filter((f) => f.check === "turn");
    expect(turn.map((f) => f.status)).toEqual(["ok", "info"]);
    expect(turn[0]!.message).toMatch(/\?transport=udp: a relay allocated with fresh credentials \(127\.[\d.]+:\d+\)$/);
    expect(report.endpoints.map((e) => `${e.kind} ${e.address}`)).toEqual([
      `homeserver ${A.synapse.clientUrl}`,
      `appservice ${A.parley.config.appservice.url}`,
      `client ${A.parley.config.meetings.publicUrl}`,
      `janus ${A.janus!.wsUrl}`,
      ...A.coturn!.urls.map((u) => `turn ${u}`),
      "federation partner.example",
      "federation *.gov.example",
    ]);

    // The human output: the same verdicts, then the endpoints.
    const human = await parley(["doctor", "-c", A.parley.configFile]);
    expect(human.code).toBe(0);
    expect(human.stdout).toMatch(/^ok +registration +the homeserver reached Parley/m);
    expect(human.stdout).toContain(`External endpoints this deployment contacts:\n  homeserver  ${A.synapse.clientUrl}`);
  });

  it("runs a real Janus on the files 'parley janus-config' writes, and checks it", async () => {
    const port = await freePort("127.0.0.1");
    const secret = () => randomBytes(32).toString("hex");
    const file = await configVariant("janus-b", (raw) => {
      raw.sfu = { nodes: [{ id: "janus-b", url: `ws://127.0.0.1:${port}`, apiSecret: secret(), adminKey: secret() }] };
    });
    const out = path.join(A.dir, "janus-b", "etc");
    const written = await parley(["janus-config", "-c", file, "--out", out, "--admin-port", String(await freePort("127.0.0.1")), "--rtp-ports", "23000-23099"]);
    expect(written).toMatchObject({ code: 0, stderr: "" });
    const names = (await fs.readdir(out)).sort();
    expect(names).toEqual(["janus.jcfg", "janus.plugin.videoroom.jcfg", "janus.transport.websockets.jcfg"]);
    // Refuses to overwrite them without --force (they hold the node's secrets).
    expect((await parley(["janus-config", "-c", file, "--out", out])).code).toBe(1);
    const configFiles = Object.fromEntries(await Promise.all(names.map(async (n) => [n, await fs.readFile(path.join(out, n), "utf8")] as const)));
    extraJanus.push(await startJanus({ dir: path.join(A.dir, "janus-b"), wsUrl: `ws://127.0.0.1:${port}`, configFiles }));

    const { report } = await doctor(file);
    expect(report.findings.filter((f) => f.check === "janus.janus-b")).toEqual([
      { check: "janus.janus-b", status: "ok", message: `Janus 1.1.2 at ws://127.0.0.1:${port}: api_secret accepted, VideoRoom admin_key accepted` },
    ]);

    // The same node with another api_secret than its Janus has: named.
    const wrong = await configVariant("janus-b-wrong", (raw) => {
      raw.sfu = { nodes: [{ id: "janus-b", url: `ws://127.0.0.1:${port}`, apiSecret: secret(), adminKey: secret() }] };
    });
    const bad = await doctor(wrong);
    expect(bad.code).toBe(1);
    expect(errors(bad.report)).toEqual([expect.objectContaining({ check: "janus.janus-b", message: expect.stringContaining("apiSecret differs") })]);
  });

  it("names a store on a read-only filesystem", async () => {
    // A bind mount inside the test's own mount namespace (scripts/isolated.sh): root is refused too.
    expect(process.env["PARLEY_ISOLATED"], "run under scripts/isolated.sh").toBe("1");
    const roDir = path.join(A.dir, "ro-store");
    await fs.mkdir(roDir);
    const src = new Database(A.parley.config.store.path);
    await src.backup(path.join(roDir, "parley.db"));
    src.close();
    const file = await configVariant("ro-store", (raw) => {
      raw.store = { path: path.join(roDir, "parley.db") };
    });
    execFileSync("mount", ["--bind", roDir, roDir]);
    try {
      execFileSync("mount", ["-o", "remount,bind,ro", roDir]);
      const { code, report } = await doctor(file);
      expect(code).toBe(1);
      expect(errors(report)).toEqual([expect.objectContaining({ check: "store", message: expect.stringContaining(`${roDir}: EROFS`) })]);
    } finally {
      execFileSync("umount", [roDir]);
    }
  });

  it("names a registration whose hs_token is not the running Parley's", async () => {
    // The operator changed appservice.hsToken and restarted Parley, but not the homeserver's registration.
    const original = await fs.readFile(A.parley.configFile, "utf8");
    const raw = parse(original) as ParleyConfigInput;
    raw.appservice.hsToken = randomBytes(32).toString("hex");
    await fs.writeFile(A.parley.configFile, stringify(raw));
    try {
      await A.parley.restart();
      const { code, report } = await doctor(A.parley.configFile);
      expect(code).toBe(1);
      expect(errors(report)).toEqual([expect.objectContaining({ check: "registration", message: expect.stringContaining("hs_token") })]);
      expect(errors(report)[0]!.fix).toContain("parley -g");
    } finally {
      await fs.writeFile(A.parley.configFile, original);
      await A.parley.restart();
    }
    const after = await doctor(A.parley.configFile);
    expect(errors(after.report)).toEqual([]);
    expect(after.code).toBe(0);
  });

  it("names a TURN server whose secret is not the one Parley signs credentials with", async () => {
    const wrongSecret = path.join(A.dir, "wrong-turn-secret");
    await fs.writeFile(wrongSecret, randomBytes(32).toString("hex"), { mode: 0o600 });
    const file = await configVariant("wrong-turn-secret", (raw) => {
      raw.turn!.secretFile = wrongSecret;
    });
    const { code, report } = await doctor(file);
    expect(code).toBe(1);
    expect(errors(report)).toEqual([expect.objectContaining({ check: "turn", message: expect.stringMatching(/transport=udp: refused Parley's credentials \(401 .*static-auth-secret/) })]);
    expect(errors(report)[0]!.fix).toContain("static-auth-secret");
  });

  it("names a Janus that is down", async () => {
    await A.janus!.stop();
    const { code, report } = await doctor(A.parley.configFile);
    expect(code).toBe(1);
    expect(errors(report)).toEqual([expect.objectContaining({ check: "janus.janus-a", message: expect.stringContaining(`Janus not reachable at ${A.janus!.wsUrl}`) })]);
    expect(errors(report)[0]!.fix).toContain("start Janus");
  });
});
