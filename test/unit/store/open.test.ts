// The store section of the config: which backend, a PostgreSQL connection without a password in
// it, the password read from a file or the environment when the store opens.
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, describe, expect, it } from "vitest";
import { loadConfig, parseConfig } from "../../../appservice/src/config/load.ts";
import { postgresOptions } from "../../../appservice/src/store/open.ts";

const base = {
  homeserver: { url: "http://127.0.0.1:8008", domain: "example.org" },
  appservice: { url: "http://127.0.0.1:9000", asToken: "a".repeat(64), hsToken: "b".repeat(64) },
  meetings: { publicUrl: "https://meet.example.org" },
};
const withStore = (store: unknown) => ({ ...base, store });

let dir: string | undefined;
afterEach(() => {
  if (dir) rmSync(dir, { recursive: true, force: true });
  dir = undefined;
});

describe("store config", () => {
  it("defaults to SQLite", () => {
    expect(parseConfig(base).store).toMatchObject({ backend: "sqlite", path: "parley.db" });
  });

  it("resolves the password file against the config file's folder and reads it when the store opens", () => {
    dir = mkdtempSync(path.join(tmpdir(), "parley-pgconf-"));
    writeFileSync(path.join(dir, "pg-password"), "s3cret-from-file\n", { mode: 0o600 });
    const file = path.join(dir, "parley.yaml");
    writeFileSync(
      file,
      [
        "homeserver: { url: 'http://127.0.0.1:8008', domain: example.org }",
        `appservice: { url: 'http://127.0.0.1:9000', asToken: ${"a".repeat(64)}, hsToken: ${"b".repeat(64)} }`,
        "meetings: { publicUrl: 'https://meet.example.org' }",
        "store: { backend: postgres, postgres: { host: 127.0.0.1, user: parley, database: parley, passwordFile: pg-password, poolSize: 3 } }",
      ].join("\n"),
    );
    const cfg = loadConfig(file).store.postgres!;
    expect(cfg.passwordFile).toBe(path.join(dir, "pg-password"));
    expect(postgresOptions(cfg)).toMatchObject({ host: "127.0.0.1", port: 5432, user: "parley", database: "parley", password: "s3cret-from-file", poolSize: 3 });
  });

  it("takes the password from the named variable, and says which is missing without the value", () => {
    const cfg = parseConfig(withStore({ backend: "postgres", postgres: { host: "db", passwordEnv: "PARLEY_PG_PASSWORD" } })).store.postgres!;
    expect(postgresOptions(cfg, { PARLEY_PG_PASSWORD: "from-env" }).password).toBe("from-env");
    expect(() => postgresOptions(cfg, {})).toThrow("store.postgres.passwordEnv: PARLEY_PG_PASSWORD is not set");
    const missing = parseConfig(withStore({ backend: "postgres", postgres: { host: "db", passwordFile: "/nonexistent/pw" } })).store.postgres!;
    expect(() => postgresOptions(missing)).toThrow("store.postgres.passwordFile: cannot read /nonexistent/pw: ENOENT");
  });
});
