// Meeting links as a new user meets them, in a real browser against two institutions (two
// Synapses, two Parleys; no media, so no Janus):
// - a user of B opens A's meeting link on A's Parley: the sign-in says which meeting and which
//   institution it leads to; the user types their full B Matrix ID, the client finds B's
//   homeserver by server discovery (https://<B's server name>/.well-known/matrix/client, served
//   by B's Synapse with its self-signed certificate, which this browser is told to trust) and
//   signs in there, and the meeting opens (pre-join) across federation;
// - a meeting on a server that cannot be reached is named in the error;
// - a mistyped meeting name on A asks before it creates anything, and creates the room on yes.
// Runs inside scripts/isolated.sh (npm test does that).
import type { Browser, BrowserContext, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { launchChromium, signedInUser } from "../support/browser.ts";
import { TestUser } from "../support/matrix.ts";

let stack: Stack;
let A: Institution, B: Institution;
let browser: Browser;
let failed = false;
const pages: Page[] = [];
const contexts: BrowserContext[] = [];

beforeAll(async () => {
  stack = await startInstitutions({
    count: 2,
    allow: (i, hosts) => hosts.filter((_, j) => j !== i),
    janus: false,
    logLevel: process.env.PARLEY_E2E_LOG_LEVEL ?? "info",
  });
  [A, B] = stack.institutions as [Institution, Institution];
  browser = await launchChromium({ trustCertificates: stack.institutions.map((i) => i.synapse.certPath) });
}, 180_000);

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  if (failed) await Promise.all(pages.map((p, i) => p.screenshot({ path: `${stack.dir}/links-${i}.png` }).catch(() => undefined)));
  for (const c of contexts) await c.close().catch(() => undefined);
  await browser?.close();
  await stack?.stop({ keep: failed || undefined });
});

async function newPage(): Promise<Page> {
  const context = await browser.newContext({ viewport: { width: 1280, height: 720 } });
  contexts.push(context);
  const page = await context.newPage();
  pages.push(page);
  page.on("pageerror", (e) => console.error(`pageerror: ${e.message}`));
  return page;
}

async function signIn(page: Page, user: string, password: string): Promise<void> {
  await page.getByLabel("User").fill(user);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in", exact: true }).click();
}

/** Rooms of A's Synapse whose name, canonical alias or id contain `term` (the admin API: asking the directory would make Parley create the room). */
async function roomsMatching(admin: { accessToken: string }, term: string): Promise<number> {
  const res = await fetch(`${A.synapse.clientUrl}/_synapse/admin/v1/rooms?search_term=${encodeURIComponent(term)}`, {
    headers: { authorization: `Bearer ${admin.accessToken}` },
  });
  if (!res.ok) throw new Error(`admin rooms: HTTP ${res.status}: ${await res.text()}`);
  return ((await res.json()) as { total_rooms: number }).total_rooms;
}

describe("a meeting link from another institution", () => {
  let bobPage: Page;

  it("signs a user of B in at B's homeserver from their full Matrix ID and opens A's meeting", async () => {
    const alias = A.alias("team");
    const a = await A.registerUser("organiser");
    await new TestUser(A.synapse.clientUrl, a.userId, a.accessToken).join(alias); // A's meeting exists
    const bob = await signedInUser(B, "bob", "Bob Badger");

    bobPage = await newPage();
    await bobPage.goto(`${A.parley.url}/#/call/${encodeURIComponent(alias)}`);
    expect(await bobPage.locator("#login-title").innerText()).toBe(`Sign in to join ${alias}, hosted by ${A.serverName}`);
    await expect.poll(() => bobPage.locator("#login-homeserver").inputValue()).toBe(A.synapse.clientUrl);

    await signIn(bobPage, bob.userId, bob.password);
    await bobPage.locator("#prejoin-join").waitFor({ timeout: 30_000 });
    expect(await bobPage.locator("#prejoin-hosted-by").innerText()).toBe(`Hosted by ${A.serverName}`);
    const session = await bobPage.evaluate(() => JSON.parse(localStorage.getItem("parley.session.v1") ?? "{}") as { userId?: string; homeserverUrl?: string });
    expect(session).toMatchObject({ userId: bob.userId, homeserverUrl: B.synapse.clientUrl });
  });

  it("names the server of a meeting that cannot be reached", async () => {
    const nowhere = "#meet-x:127.0.0.99:8448";
    await bobPage.goto(`${A.parley.url}/#/call/${encodeURIComponent(nowhere)}`);
    const error = bobPage.locator(".meeting .error[role=alert]");
    await error.waitFor({ timeout: 60_000 });
    expect(await error.innerText()).toBe(
      "127.0.0.99:8448 could not be reached, so the meeting can't be opened. Try again later; if it keeps happening, your homeserver may not be allowed to talk to 127.0.0.99:8448.",
    );
  });
});

describe("a mistyped meeting name", () => {
  it("asks before it creates a meeting, and creates nothing until the user says yes", async () => {
    const admin = await A.registerUser("admin", { admin: true });
    const alice = await signedInUser(A, "alice", "Alice Aardvark");
    const alias = A.alias("tema");
    const page = await newPage();
    await page.goto(`${A.parley.url}/`);
    await signIn(page, "alice", alice.password); // a bare user name: A's own homeserver
    await page.locator("#open-target").fill("tema");
    await page.locator("#open-target").press("Enter");

    await page.locator("#meeting-new").waitFor({ timeout: 30_000 });
    expect(await page.locator("#meeting-new").innerText()).toBe(`This is a new meeting: ${alias}. Create it?`);
    // Nothing was made: no room on A's Synapse, no alias in Parley's store.
    expect(await roomsMatching(admin, "meet-tema")).toBe(0);
    expect(await A.parleyStore().getAlias(alias)).toBeUndefined();

    await page.locator("#meeting-create").click();
    await page.locator("#prejoin-join").waitFor({ timeout: 30_000 });
    expect(await A.parleyStore().getAlias(alias)).toMatchObject({ state: "ready", roomId: expect.stringMatching(/^!/) });
    // The admin search does see such a room once it exists (so the 0 above meant something).
    await expect.poll(() => roomsMatching(admin, "meet-tema"), { timeout: 15_000 }).toBe(1);
  });
});
