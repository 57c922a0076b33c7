// The knock benchmark alone (knock.ts; `npm run bench:calls` runs it after the joins), for
// working on the knock path: node test/bench/knockOnly.ts [samples] inside scripts/isolated.sh.
// Its goal ratio uses a nominal 1000 ms local join (the federated join it measures is the real one).
import { launchChromium } from "../support/browser.ts";
import { benchKnock } from "./knock.ts";

const browser = await launchChromium();
try {
  await benchKnock(browser, Number(process.argv[2] ?? 5), 1000);
} finally {
  await browser.close();
}
