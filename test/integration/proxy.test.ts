// The nginx sample (deploy/nginx/parley.conf and well-known.conf) run by a real nginx in front
// of a real Parley, with TLS: the web client, the call API and the signalling WebSocket go
// through; the appservice API does not; the .well-known entries answer. `parley doctor` checks
// the certificate of meetings.publicUrl behind it: trusted (with the test CA) and its expiry,
// or named as not trusted.
import { execFile } from "node:child_process";
import fs from "node:fs/promises";
import https from "node:https";
import path from "node:path";
import { parse, stringify } from "yaml";
import WebSocket from "ws";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { ParleyConfigInput } from "../../appservice/src/config/schema.ts";
import type { DoctorReport } from "../../appservice/src/ops/doctor.ts";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { freePort, waitForTcp } from "../../scripts/stack/ports.ts";
import { startProcess, type ManagedProcess } from "../../scripts/stack/proc.ts";
import { generateSelfSignedCert, type CertPaths } from "../../scripts/stack/tls.ts";
import { MAIN, ROOT } from "../support/cli.ts";

let stack: Stack;
let A: Institution;
let nginx: ManagedProcess;
let cert: CertPaths;
/** The certificate as PEM: the only CA the test's clients trust. */
let ca: string;
let origin: string;
let wellKnownOrigin: string;
let failed = false;

/** The sample, pointed at the test's Parley, addresses, ports and certificate; nothing else changed. */
async function nginxConfig(dir: string, port: number, wellKnownPort: number): Promise<string> {
  const parley = new URL(A.parley.url);
  let site = await fs.readFile(path.join(ROOT, "deploy/nginx/parley.conf"), "utf8");
  const replace = (from: string | RegExp, to: string) => {
    const next = site.replace(from, to);
    expect(next, `the sample still has ${String(from)}`).not.toBe(site);
    site = next;
  };
  replace("server 127.0.0.1:9000;", `server ${parley.host};`);
  replace(/ {4}listen 80;\n {4}listen \[::\]:80;\n/, `    listen ${A.ip}:${await freePort(A.ip)};\n`);
  replace(/ {4}listen 443 ssl http2;\n {4}listen \[::\]:443 ssl http2;\n/, `    listen ${A.ip}:${port} ssl http2;\n`);
  replace(/\/etc\/letsencrypt\/live\/meet\.example\.org\/fullchain\.pem/, cert.certPath);
  replace(/\/etc\/letsencrypt\/live\/meet\.example\.org\/privkey\.pem/, cert.keyPath);
  await fs.writeFile(path.join(dir, "parley.conf"), site);
  const main = `pid ${dir}/nginx.pid;
error_log ${dir}/error.log;
daemon off;
events {}
http {
  access_log ${dir}/access.log;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  include ${dir}/parley.conf;
  server {
    listen ${A.ip}:${wellKnownPort} ssl;
    ssl_certificate ${cert.certPath};
    ssl_certificate_key ${cert.keyPath};
    include ${path.join(ROOT, "deploy/nginx/well-known.conf")};
  }
}
`;
  const file = path.join(dir, "nginx.conf");
  await fs.writeFile(file, main);
  return file;
}

function get(url: string): Promise<{ status: number; headers: Record<string, unknown>; body: string }> {
  return new Promise((resolve, reject) => {
    https.get(url, { ca }, (res) => {
      let body = "";
      res.setEncoding("utf8");
      res.on("data", (c: string) => (body += c));
      res.on("end", () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body }));
    }).on("error", reject);
  });
}

beforeAll(async () => {
  stack = await startInstitutions({ count: 1, allow: () => [], janus: false });
  [A] = stack.institutions as [Institution];
  const dir = path.join(A.dir, "nginx");
  await fs.mkdir(dir);
  cert = await generateSelfSignedCert({ dir, ip: A.ip, name: "proxy" });
  ca = await fs.readFile(cert.certPath, "utf8");
  const port = await freePort(A.ip);
  const wellKnownPort = await freePort(A.ip);
  origin = `https://${A.ip}:${port}`;
  wellKnownOrigin = `https://${A.ip}:${wellKnownPort}`;
  const conf = await nginxConfig(dir, port, wellKnownPort);
  nginx = await startProcess({
    name: "nginx",
    command: "/usr/sbin/nginx",
    args: ["-c", conf, "-p", dir],
    dir,
    extraLogFiles: [path.join(dir, "error.log")],
    ready: ({ signal }) => waitForTcp(A.ip, port, 20_000, { signal, intervalMs: 25 }),
  });
});

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  await nginx?.stop();
  await stack?.stop({ keep: failed || undefined });
});

describe("the nginx sample in front of Parley", () => {
  it("serves the web client and the call API over TLS, and hides the appservice API", async () => {
    const page = await get(`${origin}/`);
    expect(page.status).toBe(200);
    expect(page.body).toContain("<html");
    expect(page.headers["strict-transport-security"]).toBe("max-age=63072000");
    const settings = await get(`${origin}/_parley/v1/client-config`);
    expect(settings.status).toBe(200);
    expect(JSON.parse(settings.body)).toMatchObject({ serverName: A.serverName });
    // Through Parley's own router: a Matrix-style error for a bad join.
    expect((await get(`${origin}/_parley/v1/calls/join`)).status).toBeGreaterThanOrEqual(400);
    expect((await get(`${origin}/_matrix/app/v1/ping`)).status).toBe(404);
    expect((await get(`${origin}/health`)).status).toBe(404);
  });

  it("upgrades the signalling WebSocket", async () => {
    const ws = new WebSocket(`${origin.replace("https", "wss")}/_parley/v1/signal`, { ca });
    await new Promise<void>((resolve, reject) => {
      ws.once("open", () => resolve());
      ws.once("error", reject);
    });
    ws.close();
  });

  it("answers the .well-known entries", async () => {
    const client = await get(`${wellKnownOrigin}/.well-known/matrix/client`);
    expect(JSON.parse(client.body)).toEqual({ "m.homeserver": { base_url: "https://matrix.example.org" } });
    expect(client.headers["access-control-allow-origin"]).toBe("*");
    const server = await get(`${wellKnownOrigin}/.well-known/matrix/server`);
    expect(JSON.parse(server.body)).toEqual({ "m.server": "matrix.example.org:443" });
  });

  it("doctor checks the certificate behind it: trusted with its CA, named when not", async () => {
    const raw = parse(await fs.readFile(A.parley.configFile, "utf8")) as ParleyConfigInput;
    raw.meetings = { ...raw.meetings!, publicUrl: origin };
    const file = path.join(A.dir, "behind-proxy.yaml");
    await fs.writeFile(file, stringify(raw), { mode: 0o600 });
    const run = (env: NodeJS.ProcessEnv) =>
      new Promise<DoctorReport>((resolve) => {
        execFile(process.execPath, [MAIN, "doctor", "-c", file, "--json"], { env: { ...process.env, ...env } }, (_err, stdout) => resolve(JSON.parse(stdout) as DoctorReport));
      });
    const trusted = await run({ NODE_EXTRA_CA_CERTS: cert.certPath });
    expect(trusted.findings.find((f) => f.check === "tls.meetings.publicUrl")).toMatchObject({
      status: "ok",
      message: expect.stringMatching(new RegExp(`^${origin}: certificate for ${A.ip.replace(/\./g, "\\.")} expires \\d{4}-\\d\\d-\\d\\d \\(29 days\\)$`)),
    });
    const untrusted = await run({});
    expect(untrusted.findings.find((f) => f.check === "tls.meetings.publicUrl")).toMatchObject({ status: "error", message: expect.stringContaining("certificate not trusted") });
    expect(untrusted.ok).toBe(false);
  });
});
