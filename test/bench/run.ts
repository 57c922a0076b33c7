// Benchmarks for the foundation, against a real Synapse + Parley started here.
// Prints one line per figure: BENCH <name> <value> <unit>. Baselines run in the same process,
// against the same homeserver, so the ratios compare like with like.
//   node test/bench/run.ts [--aliases 50] [--commands 20]
import { parseArgs } from "node:util";
import { FederationPolicy } from "../../appservice/src/calls/policy.ts";
import { startInstitutions } from "../../scripts/stack/institutions.ts";
import { startPostgres } from "../../scripts/stack/postgres.ts";
import { TestUser } from "../support/matrix.ts";
import { aliasBurst } from "./aliasBurst.ts";
import { benchJoinUnderAttack } from "./joinUnderAttack.ts";
import { bench, percentile, timed } from "./lib.ts";

const { values } = parseArgs({
  options: { aliases: { type: "string", default: "50" }, commands: { type: "string", default: "20" } },
});
const N_ALIASES = Number(values.aliases);
const N_COMMANDS = Number(values.commands);

// Institution B is A's twin with its store on PostgreSQL (a throwaway cluster): the alias path is
// measured on both, interleaved, for the store comparison.
const pg = await startPostgres();
const pgDatabase = await pg.createDatabase("parley_bench");
// Alias limits loose enough for the sequential joins below, with a cap the burst at the end meets.
const stack = await startInstitutions({
  count: 2,
  allow: () => [],
  janus: false,
  aliasRooms: () => ({ perMinute: 600, burst: 100, max: 200 }),
  store: (i) => (i === 1 ? { backend: "postgres", postgres: { host: pg.host, port: pg.port, user: pg.user, database: pgDatabase, passwordFile: pg.passwordFile } } : undefined),
});
try {
  const A = stack.institutions[0]!;
  const B = stack.institutions[1]!;
  const creds = await A.registerUser("bench");
  const u = new TestUser(A.synapse.clientUrl, creds.userId, creds.accessToken);
  const credsB = await B.registerUser("bench");
  const uB = new TestUser(B.synapse.clientUrl, credsB.userId, credsB.accessToken);
  const run = Date.now().toString(36);

  // Warm both paths once so the first sample pays no start-up cost.
  await u.join(A.alias(`warm-${run}`));
  await uB.join(B.alias(`warm-${run}`));
  await u.createRoom({ preset: "public_chat", name: "warm" });

  // Interleave alias joins and plain createRoom so drift in the homeserver hits both alike.
  const aliasMs: number[] = [];
  const aliasPgMs: number[] = [];
  const createMs: number[] = [];
  const acl = new FederationPolicy(A.serverName, []).serverAcl();
  for (let i = 0; i < N_ALIASES; i++) {
    aliasMs.push(await timed(() => u.join(A.alias(`bench-${run}-${i}`))));
    aliasPgMs.push(await timed(() => uB.join(B.alias(`bench-${run}-${i}`))));
    // The same room a meeting alias makes, created by the user directly (alias, state, power levels).
    createMs.push(
      await timed(() =>
        u.createRoom({
          room_alias_name: `plain-${run}-${i}`,
          name: `Plain ${i}`,
          preset: "public_chat",
          visibility: "private",
          initial_state: [
            { type: "m.room.history_visibility", state_key: "", content: { history_visibility: "shared" } },
            { type: "m.room.guest_access", state_key: "", content: { guest_access: "forbidden" } },
            { type: "m.room.server_acl", state_key: "", content: acl },
            { type: "org.parley.call", state_key: "", content: { version: 1 } },
            { type: "m.room.encryption", state_key: "", content: { algorithm: "m.megolm.v1.aes-sha2" } },
          ],
        }),
      ),
    );
  }
  const aliasP50 = percentile(aliasMs, 50);
  const createP50 = percentile(createMs, 50);
  bench("alias_to_room_ready_p50", aliasP50, "ms");
  bench("alias_to_room_ready_p95", percentile(aliasMs, 95), "ms");
  bench("baseline_create_room_p50", createP50, "ms");
  bench("alias_vs_create_room_p50_ratio", aliasP50 / createP50, "x");
  // The same path with the store on PostgreSQL (B: same Synapse version and config, own process).
  const aliasPgP50 = percentile(aliasPgMs, 50);
  bench("alias_to_room_ready_postgres_p50", aliasPgP50, "ms");
  bench("alias_to_room_ready_sqlite_p50", aliasP50, "ms");
  bench("store_postgres_vs_sqlite_p50_ratio", aliasPgP50 / aliasP50, "x");

  // !meet -> bot reply, observed through the user's own /sync.
  const roomId = await u.createRoom({ preset: "public_chat", name: "bench commands" });
  await u.invite(roomId, A.botUserId);
  for (let i = 0; i < 100; i++) {
    const m = await u.stateEvent(roomId, "m.room.member", A.botUserId);
    if (m?.membership === "join") break;
    await new Promise((r) => setTimeout(r, 100));
  }
  let since = await u.syncToken();
  const replyMs: number[] = [];
  for (let i = 0; i < N_COMMANDS; i++) {
    const t0 = performance.now();
    const eventId = await u.send(roomId, i % 2 ? "!meet end" : "!meet");
    const res = await u.syncUntil(roomId, since, (e) => e.sender === A.botUserId && e.type === "m.room.message" && e.event_id !== eventId);
    replyMs.push(performance.now() - t0);
    since = res.nextBatch;
  }
  bench("meet_command_reply_p50", percentile(replyMs, 50), "ms");
  bench("meet_command_reply_p95", percentile(replyMs, 95), "ms");
  console.log(`samples: ${N_ALIASES} aliases, ${N_ALIASES} createRoom, ${N_COMMANDS} commands`);
  await aliasBurst(A, u);
} finally {
  await stack.stop();
  await pg.stop();
}
// A call join while another client floods Parley (its own stack: it needs Janus).
await benchJoinUnderAttack();
