// Opens the store the config chooses. The PostgreSQL password comes from a file or the
// environment at this moment only; it is handed to the driver and never logged.
import { readFileSync } from "node:fs";
import type { ParleyConfig } from "../config/schema.ts";
import { PostgresStore, type PostgresStoreOptions } from "./postgres.ts";
import { SqliteStore } from "./sqlite.ts";
import type { Store } from "./store.ts";

type StoreConfig = ParleyConfig["store"];

/** The driver options of a postgres store section, the password read from its file or variable. */
export function postgresOptions(cfg: NonNullable<StoreConfig["postgres"]>, env: NodeJS.ProcessEnv = process.env): PostgresStoreOptions {
  let password: string | undefined;
  if (cfg.passwordFile) {
    try {
      password = readFileSync(cfg.passwordFile, "utf8").replace(/\r?\n$/, "");
    } catch (err) {
      throw new Error(`store.postgres.passwordFile: cannot read ${cfg.passwordFile}: ${(err as NodeJS.ErrnoException).code ?? "error"}`, { cause: err });
    }
  } else if (cfg.passwordEnv) {
    password = env[cfg.passwordEnv];
    if (password === undefined) throw new Error(`store.postgres.passwordEnv: ${cfg.passwordEnv} is not set`);
  }
  return {
    connectionString: cfg.url,
    host: cfg.host,
    port: cfg.port,
    user: cfg.user,
    database: cfg.database,
    password,
    poolSize: cfg.poolSize,
    connectTimeoutMs: cfg.connectTimeoutSeconds * 1000,
  };
}

export async function openStore(cfg: StoreConfig): Promise<Store> {
  if (cfg.backend === "postgres") return PostgresStore.open(postgresOptions(cfg.postgres!));
  return new SqliteStore(cfg.path);
}
