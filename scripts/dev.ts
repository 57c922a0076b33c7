// The local deployment behind scripts/dev.sh: K institutions that allow each other, a demo user
// on each (fresh random password, shown once here), and the URL to open; what dies is started again.
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { parseArgs } from "node:util";
import { startInstitutions } from "./stack/institutions.ts";
import { stackComponents, supervise } from "./stack/supervise.ts";

const { values } = parseArgs({ options: { institutions: { type: "string", default: "2" } } });
const count = Number(values.institutions);
if (![1, 2, 3].includes(count)) {
  console.error("--institutions must be 1, 2 or 3");
  process.exit(2);
}

const dir = path.resolve(import.meta.dirname, "../.parley/dev");
await fs.rm(dir, { recursive: true, force: true });
await fs.mkdir(dir, { recursive: true, mode: 0o700 });
console.log(`starting ${count} institution(s) on loopback; data and logs in ${dir}`);
const stack = await startInstitutions({ count, dir, allow: (i, hosts) => hosts.filter((_, j) => j !== i) });

const names = ["alice", "bob", "carol"];
const lines: string[] = [];
for (const inst of stack.institutions) {
  const password = randomBytes(9).toString("base64url");
  const user = await inst.registerUser(names[inst.index]!, { password });
  lines.push(
    `Institution ${inst.name.toUpperCase()} (${inst.serverName})`,
    `  web client   ${inst.parley.url}/`,
    `  homeserver   ${inst.synapse.clientUrl}`,
    ...(inst.coturn ? [`  TURN         ${inst.coturn.urls.join(" ")} (coturn, short-lived credentials per call)`] : []),
    `  demo user    ${user.userId}  password ${password}`,
    `  a meeting    ${inst.parley.url}/#/call/${encodeURIComponent(inst.alias("demo"))}`,
  );
}
const first = stack.institutions[0]!;
console.log(["", ...lines, "", `Open ${first.parley.url}/ and sign in as the demo user above.`, "Ctrl-C stops everything."].join("\n"));
// A component that dies (Synapse, Janus, coturn, Parley) is started again, as systemd does in production.
const supervisor = supervise(stackComponents(stack), { log: (line) => console.log(line) });

let stopping = false;
const shutdown = async () => {
  if (stopping) return;
  stopping = true;
  console.log("\nstopping…");
  // Watching ends first: the stack's own stop must not look like deaths to restart.
  await supervisor.stop();
  await stack.stop({ keep: true });
  process.exit(0);
};
process.on("SIGINT", () => void shutdown());
process.on("SIGTERM", () => void shutdown());
setInterval(() => undefined, 1 << 30);
