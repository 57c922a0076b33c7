// The web client's doors against real Parleys: the headers of its pages (no framing, no referrer,
// HSTS when users reach Parley over https; the widget framed only by the configured hosts) and
// what client-config tells a browser (never the internal homeserver URL; whose call APIs get a
// user's identity without asking). Parley A is the stack's (http); a second Parley, started in
// process on the same homeserver, is configured as an https deployment behind a proxy would be.
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { start, type Parley } from "../../appservice/src/app/start.ts";
import type { ParleyConfig } from "../../appservice/src/config/schema.ts";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { freePort } from "../../scripts/stack/ports.ts";

let stack: Stack;
let A: Institution;
let https: Parley;
let dir: string;

beforeAll(async () => {
  stack = await startInstitutions({ count: 1, allow: () => [], janus: false });
  [A] = stack.institutions as [Institution];
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "parley-doors-client-"));
  const a = A.parley.config;
  const config: ParleyConfig = {
    ...a,
    // The internal URL only: no publicUrl, so browsers are told none.
    homeserver: { url: a.homeserver.url, domain: a.homeserver.domain },
    appservice: { ...a.appservice, port: await freePort(A.ip) },
    meetings: { ...a.meetings, publicUrl: "https://meet.example.test" },
    client: { widgetHostOrigins: ["https://app.element.test", "https://chat.example.test"], callBotLocalparts: ["meet"], insecureLoopbackCallApis: false },
    federation: { ...a.federation, allow: ["partner.example"] },
    sfu: { ...a.sfu, nodes: [] },
    store: { backend: "sqlite", path: path.join(dir, "parley.db") },
    crypto: undefined,
    metrics: { ...a.metrics, enabled: false }, // the stack's Parley holds its metrics port
  };
  https = await start(config);
});

afterAll(async () => {
  await https?.stop();
  await stack?.stop();
  if (dir) await fs.rm(dir, { recursive: true, force: true });
});

const get = (base: string, p: string) => fetch(`${base}${p}`, { redirect: "manual" });

describe("the client page's headers", () => {
  it("the app may not be framed and sends no referrer; no HSTS over http", async () => {
    for (const p of ["/", "/index.html"]) {
      const res = await get(A.parley.url, p);
      expect(res.status).toBe(200);
      expect(res.headers.get("content-security-policy")).toContain("frame-ancestors 'none'");
      expect(res.headers.get("x-frame-options")).toBe("DENY");
      expect(res.headers.get("referrer-policy")).toBe("no-referrer");
      expect(res.headers.get("strict-transport-security")).toBeNull();
    }
  });

  it("the widget may be framed only by the configured hosts (none configured: by nobody)", async () => {
    const none = await get(A.parley.url, "/widget.html");
    expect(none.headers.get("content-security-policy")).toContain("frame-ancestors 'none'");
    const some = await get(https.url, "/widget.html");
    expect(some.status).toBe(200);
    const csp = some.headers.get("content-security-policy")!;
    expect(csp).toContain("frame-ancestors https://app.element.test https://chat.example.test");
    expect(csp).not.toContain("frame-ancestors 'none'");
    expect(some.headers.get("x-frame-options")).toBeNull();
    expect(some.headers.get("referrer-policy")).toBe("no-referrer");
  });

  it("HSTS when the public URL is https", async () => {
    for (const p of ["/", "/widget.html", "/_parley/v1/client-config"]) {
      const res = await get(https.url, p);
      expect(res.headers.get("strict-transport-security"), p).toBe("max-age=31536000");
    }
  });
});

describe("client-config", () => {
  it("names the public homeserver URL, and whose call APIs are trusted", async () => {
    const res = await get(A.parley.url, "/_parley/v1/client-config");
    expect(res.headers.get("referrer-policy")).toBe("no-referrer");
    expect(await res.json()).toEqual({
      homeserverUrl: A.parley.config.homeserver.publicUrl,
      serverName: A.serverName,
      aliasPrefix: "meet-",
      callTrust: { servers: [A.serverName], botLocalparts: ["parley"], insecureLoopback: true },
    });
  });

  it("never reveals the internal homeserver URL: without a public one it names none", async () => {
    const text = await (await get(https.url, "/_parley/v1/client-config")).text();
    expect(text).not.toContain(A.parley.config.homeserver.url);
    expect(JSON.parse(text)).toEqual({
      serverName: A.serverName,
      aliasPrefix: "meet-",
      callTrust: { servers: [A.serverName, "partner.example"], botLocalparts: ["parley", "meet"], insecureLoopback: false },
    });
  });
});
