// Trust boundaries of the web client in a real browser, against the real stack:
// - a room whose org.parley.call was sent by a room admin (not a Parley bot) and names a hostile
//   call API (a listener on loopback that records every request): the client asks the user about
//   the host and sends nothing there unless the user says yes (and remembers the yes);
// - the call widget, embedded by a host page, ignores a forged widget-API message that a sibling
//   frame of the same origin as the host posts into it.
// Runs inside scripts/isolated.sh (npm test does that).
import http from "node:http";
import fs from "node:fs/promises";
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { parse, stringify } from "yaml";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { freePort } from "../../scripts/stack/ports.ts";
import { launchChromium, signedInUser } from "../support/browser.ts";
import { TestUser } from "../support/matrix.ts";

interface Seen {
  method: string;
  url: string;
  body: string;
  at: number;
}

/** An HTTP listener on a loopback address: records what reaches it, answers with `handle`. */
async function listener(ip: string, handle: (req: http.IncomingMessage, res: http.ServerResponse, body: string) => void) {
  const seen: Seen[] = [];
  const server = http.createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString()));
    req.on("end", () => {
      seen.push({ method: req.method ?? "", url: req.url ?? "", body, at: Date.now() });
      handle(req, res, body);
    });
  });
  const port = await freePort(ip);
  await new Promise<void>((resolve) => server.listen(port, ip, resolve));
  return { url: `http://${ip}:${port}`, host: `${ip}:${port}`, seen, close: () => new Promise<void>((r) => server.close(() => r())) };
}

/** The hostile call API: answers CORS so that a browser that does send a token is seen sending it. */
const hostileApi = () =>
  listener("127.0.0.60", (req, res) => {
    res.setHeader("Access-Control-Allow-Origin", "*");
    res.setHeader("Access-Control-Allow-Headers", "content-type");
    res.setHeader("Access-Control-Allow-Methods", "POST");
    if (req.method === "OPTIONS") return void res.writeHead(204).end();
    res.writeHead(403, { "content-type": "application/json" }).end(JSON.stringify({ errcode: "M_FORBIDDEN", error: "hostile test listener" }));
  });

/**
 * A Matrix client's page embedding the widget: it answers the widget's supported_api_versions and
 * records what the widget posts to it; the frame "sibling" (same origin as the host, so only the
 * `source` check can tell it apart) is where the forgery comes from.
 */
function hostPage(widgetUrl: string): string {
  return `<!doctype html><html><body>
<iframe name="widget" id="widget" src="${widgetUrl}" allow="camera; microphone"></iframe>
<iframe name="sibling" srcdoc="<p>sibling</p>"></iframe>
<script>
  window.__fromWidget = [];
  const frame = document.getElementById("widget");
  const widgetOrigin = new URL(frame.src).origin;
  addEventListener("message", (ev) => {
    if (ev.source !== frame.contentWindow) return;
    window.__fromWidget.push(ev.data);
    const m = ev.data;
    if (m && m.api === "fromWidget" && !m.response && m.action === "supported_api_versions") {
      frame.contentWindow.postMessage({ ...m, response: { supported_versions: ["0.0.1", "0.0.2"] } }, widgetOrigin);
    }
  });
</script></body></html>`;
}

let stack: Stack;
let A: Institution;
let browser: Browser;
let hostile: Awaited<ReturnType<typeof hostileApi>>;
let widgetHost: Awaited<ReturnType<typeof listener>>;
let failed = false;
const contexts: BrowserContext[] = [];

beforeAll(async () => {
  hostile = await hostileApi();
  let page = "";
  widgetHost = await listener("127.0.0.61", (_req, res) => res.writeHead(200, { "content-type": "text/html" }).end(page));
  stack = await startInstitutions({ count: 1, allow: () => [], janus: false, logLevel: process.env.PARLEY_E2E_LOG_LEVEL ?? "info" });
  [A] = stack.institutions as [Institution];
  // The widget may be framed only by configured hosts: this test's host page is one.
  const config = parse(await fs.readFile(A.parley.configFile, "utf8")) as Record<string, Record<string, unknown>>;
  config.client = { ...config.client, widgetHostOrigins: [widgetHost.url] };
  await fs.writeFile(A.parley.configFile, stringify(config), { mode: 0o600 });
  await A.parley.restart();
  const widgetUrl = `${A.parley.url}/widget.html?widgetId=w1&roomId=${encodeURIComponent("!room:x")}&userId=${encodeURIComponent("@me:x")}&parentUrl=${encodeURIComponent(`${widgetHost.url}/host.html`)}`;
  page = hostPage(widgetUrl);
  browser = await launchChromium();
}, 180_000);

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  for (const c of contexts) await c.close().catch(() => undefined);
  await browser?.close();
  await hostile?.close();
  await widgetHost?.close();
  await stack?.stop({ keep: failed || undefined });
});

async function newPage(context?: BrowserContext): Promise<Page> {
  const ctx = context ?? (await browser.newContext({ viewport: { width: 1280, height: 720 } }));
  if (!context) contexts.push(ctx);
  const page = await ctx.newPage();
  page.on("pageerror", (e) => console.error(`pageerror: ${e.message}`));
  return page;
}

describe("a room admin's org.parley.call", () => {
  it("never gets the user's token unasked: the user is asked about the host, and a yes is remembered", async () => {
    const alice = await signedInUser(A, "alice", "Alice Aardvark");
    const m = await A.registerUser("mallory");
    const mallory = new TestUser(A.synapse.clientUrl, m.userId, m.accessToken);
    // Mallory is the room's admin, not a Parley bot: her announcement names her own listener.
    const roomId = await mallory.createRoom({
      preset: "public_chat",
      name: "Hostile room",
      initial_state: [{ type: "org.parley.call", state_key: "", content: { version: 1, api: hostile.url } }],
    });
    const link = `${A.parley.url}/#/call/${encodeURIComponent(roomId)}`;

    const page = await newPage();
    await page.goto(link);
    await page.getByLabel("User").fill(alice.userId);
    await page.getByLabel("Password").fill(alice.password);
    await page.getByRole("button", { name: "Sign in", exact: true }).click();
    const question = page.locator("#prejoin-host");
    await expect.poll(() => question.innerText(), { timeout: 30_000 }).toBe(`This meeting is hosted at ${hostile.host}. Send your identity there?`);
    expect(await page.locator("#prejoin-join").isDisabled()).toBe(true);
    // Join cannot be pressed; the only way on is the yes.
    await page.locator("#prejoin-join").click({ force: true, timeout: 2000 }).catch(() => undefined);
    expect(hostile.seen).toEqual([]);

    // The yes sends the token there (the listener does see a browser that sends one).
    const saidYes = Date.now();
    await page.locator("#prejoin-trust-host").click();
    await page.locator("#prejoin-join").click();
    await expect.poll(() => hostile.seen.some((r) => r.method === "POST"), { timeout: 20_000 }).toBe(true);
    expect(hostile.seen.every((r) => r.at >= saidYes)).toBe(true);
    expect(hostile.seen.filter((r) => r.method === "POST")).toHaveLength(1);
    const post = hostile.seen.find((r) => r.method === "POST")!;
    expect(post.url).toBe("/_parley/v1/calls/join");
    expect(JSON.parse(post.body)).toMatchObject({ openid_token: { access_token: expect.any(String) }, room: roomId });

    // Remembered for this host: opened again, the meeting says where it is hosted and asks nothing.
    const again = await newPage(page.context());
    await again.goto(link);
    await expect.poll(() => again.locator("#prejoin-host").innerText(), { timeout: 30_000 }).toBe(`This meeting is hosted at ${hostile.host}.`);
    expect(await again.locator("#prejoin-trust-host").isVisible()).toBe(false);
    expect(await again.locator("#prejoin-join").isDisabled()).toBe(false);
  });
});

describe("the call widget", () => {
  it("drops a forged widget message from a sibling frame and still answers its host", async () => {
    const page = await newPage();
    page.on("console", (msg) => {
      if (msg.text().includes("dropped a message")) console.error(`widget: ${msg.text()}`);
    });
    await page.goto(`${widgetHost.url}/host.html`);
    type Msg = { api?: string; action?: string; requestId?: string; response?: { capabilities?: unknown; error?: unknown } };
    const fromWidget = () => page.evaluate(() => (window as unknown as { __fromWidget: unknown[] }).__fromWidget) as Promise<Msg[]>;
    // The widget API is listening once the widget asked its host for the API versions.
    await expect.poll(async () => (await fromWidget()).some((m) => m.action === "supported_api_versions"), { timeout: 30_000 }).toBe(true);

    const request = (requestId: string) => ({ api: "toWidget", widgetId: "w1", requestId, action: "capabilities", data: {} });
    // The sibling, same origin as the host, asks the widget to negotiate its capabilities...
    const sibling = page.frame({ name: "sibling" })!;
    await sibling.evaluate((req) => window.parent.frames[0]!.postMessage(req, "*"), request("forged-1"));
    // ...then the host itself does.
    await page.evaluate((req) => (document.getElementById("widget") as HTMLIFrameElement).contentWindow!.postMessage(req, "*"), request("host-1"));

    await expect.poll(async () => (await fromWidget()).some((m) => m.requestId === "host-1" && m.response), { timeout: 15_000 }).toBe(true);
    const replies = (await fromWidget()).filter((m) => m.api === "toWidget" && m.response);
    // Only the host's request was answered, and as the first negotiation (the forgery changed nothing).
    expect(replies.map((m) => m.requestId)).toEqual(["host-1"]);
    expect(replies[0]!.response).toMatchObject({ capabilities: expect.any(Array) });
  });
});
