// The two-institution call most browser tests start from: A hosts a meeting, Alice (A) joins it
// from A's web client, Bob (B) from B's, through federation. On a failed test the pages are
// screenshotted into the stack dir, which is kept.
import type { Browser, Page } from "playwright-core";
import { afterEach } from "vitest";
import { startInstitutions, type Institution, type Stack, type StackOptions } from "../../scripts/stack/institutions.ts";
import { joinThroughClient, launchChromium, signedInUser } from "./browser.ts";

export interface FederatedCall {
  stack: Stack;
  A: Institution;
  B: Institution;
  browser: Browser;
  alicePage: Page;
  bobPage: Page;
}

type OpenHook = (page: Page, institutions: { A: Institution; B: Institution }) => Promise<void>;

export async function startFederatedCall(o: {
  slug: string;
  stack?: Omit<StackOptions, "count" | "allow">;
  /** Runs on each new page before it opens the meeting link (e.g. to watch its requests). */
  beforeOpen?: { alice?: OpenHook; bob?: OpenHook };
}): Promise<FederatedCall> {
  const stack = await startInstitutions({ janus: true, ...o.stack, count: 2, allow: (i, hosts) => hosts.filter((_, j) => j !== i) });
  const [A, B] = stack.institutions as [Institution, Institution];
  const browser = await launchChromium();
  const [alice, bob] = await Promise.all([signedInUser(A, "alice", "Alice Aardvark"), signedInUser(B, "bob", "Bob Badger")]);
  const link = (inst: Institution) => `${inst.parley.url}/#/call/${encodeURIComponent(A.alias(o.slug))}`;
  const hook = (h: OpenHook | undefined) => (h ? { beforeOpen: (page: Page) => h(page, { A, B }) } : {});
  const alicePage = await joinThroughClient(browser, link(A), alice, hook(o.beforeOpen?.alice));
  // Bob uses his own institution's client and homeserver; the call is hosted by A.
  const bobPage = await joinThroughClient(browser, link(B), bob, hook(o.beforeOpen?.bob));
  return { stack, A, B, browser, alicePage, bobPage };
}

/** Registers an afterEach that notes failures; call the returned function from afterAll. */
export function tearDownOnFailureKeeping(): (call: FederatedCall | undefined) => Promise<{ failed: boolean }> {
  let failed = false;
  afterEach((ctx) => {
    if (ctx.task.result?.state === "fail") failed = true;
  });
  return async (call) => {
    if (call && failed) {
      await call.alicePage.screenshot({ path: `${call.stack.dir}/alice.png` }).catch(() => undefined);
      await call.bobPage.screenshot({ path: `${call.stack.dir}/bob.png` }).catch(() => undefined);
    }
    return { failed };
  };
}
