// Parley itself on PostgreSQL: a real Synapse, the Parley process configured with
// store.backend = postgres (password in a file), a throwaway PostgreSQL cluster. The meeting
// room an alias makes is recorded in the database, survives a restart of Parley, the health
// check asks the database, and the password never reaches Parley's log.
import { readFile, writeFile } from "node:fs/promises";
import path from "node:path";
import { parse, stringify } from "yaml";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import type { ParleyConfigInput } from "../../appservice/src/config/schema.ts";
import type { DoctorReport } from "../../appservice/src/ops/doctor.ts";
import { PostgresStore } from "../../appservice/src/store/postgres.ts";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { startPostgres, type PostgresHandle } from "../../scripts/stack/postgres.ts";
import { parley } from "../support/cli.ts";
import { TestUser } from "../support/matrix.ts";

let pg: PostgresHandle;
let database: string;
let stack: Stack;
let A: Institution;
let alice: TestUser;

beforeAll(async () => {
  pg = await startPostgres();
  database = await pg.createDatabase("parley_a");
  stack = await startInstitutions({
    count: 1,
    allow: () => [],
    janus: false,
    store: () => ({ backend: "postgres", postgres: { host: pg.host, port: pg.port, user: pg.user, database, passwordFile: pg.passwordFile, poolSize: 4 } }),
  });
  A = stack.institutions[0]!;
  const u = await A.registerUser("alice");
  alice = new TestUser(A.synapse.clientUrl, u.userId, u.accessToken);
});

afterAll(async () => {
  await stack?.stop();
  await pg?.stop();
});

describe("Parley with its store on PostgreSQL", () => {
  it("records the meeting room an alias makes in the database, and finds it again after a restart", async () => {
    const alias = A.alias("pg-team");
    const roomId = await alice.join(alias);
    const store = await PostgresStore.open({ ...pg.connection(database), poolSize: 1 });
    try {
      expect(await store.getAlias(alias)).toMatchObject({ alias, roomId, state: "ready" });
      await A.parley.restart();
      expect(await alice.join(alias)).toBe(roomId);
      expect(await store.listAliases()).toHaveLength(1);
    } finally {
      await store.close();
    }
  });

  it("answers /health from the database, and never logs the password", async () => {
    const res = await fetch(`${A.parley.url}/health`);
    expect(res.status).toBe(200);
    expect(await res.json()).toMatchObject({ status: "ok", activeCalls: 0 });
    const log = await readFile(A.parley.logFile, "utf8");
    expect(log).toContain('"backend":"postgres"');
    expect(log).not.toContain(pg.password);
  });
});

describe("parley doctor on a PostgreSQL store", () => {
  it("reports the database writable at its schema version, and names a wrong password", async () => {
    const ok = await parley(["doctor", "-c", A.parley.configFile, "--json"]);
    const store = (JSON.parse(ok.stdout) as DoctorReport).findings.find((f) => f.check === "store");
    expect(store).toMatchObject({ status: "ok", message: expect.stringMatching(/^PostgreSQL takes writes \(schema version [1-9]\d*\)$/) });

    const wrong = path.join(A.dir, "wrong-pg-password");
    await writeFile(wrong, "not-the-password", { mode: 0o600 });
    const raw = parse(await readFile(A.parley.configFile, "utf8")) as ParleyConfigInput;
    raw.store!.postgres!.passwordFile = wrong;
    const file = path.join(A.dir, "wrong-pg.yaml");
    await writeFile(file, stringify(raw), { mode: 0o600 });
    const bad = await parley(["doctor", "-c", file, "--json"]);
    expect(bad.code).toBe(1);
    const finding = (JSON.parse(bad.stdout) as DoctorReport).findings.find((f) => f.check === "store");
    expect(finding).toMatchObject({ status: "error", message: expect.stringMatching(/^PostgreSQL store: .*password authentication failed/) });
    expect(bad.stdout).not.toContain("not-the-password");
  });
});
