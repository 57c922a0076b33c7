// A throwaway PostgreSQL cluster for tests and benchmarks: Debian's postgresql (initdb and
// postgres from /usr/lib/postgresql/<version>/bin), a data folder in a temp dir, listening on
// 127.0.0.1 at a free port, password (scram) authentication with a password generated per run.
// PostgreSQL refuses to run as root: under root the server runs as the `postgres` OS user and
// the folder is handed to it.
import { execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { existsSync, readdirSync } from "node:fs";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import pg from "pg";
import { freePort, waitForTcp } from "./ports.ts";
import { startProcess, type ManagedProcess } from "./proc.ts";

export interface PostgresOptions {
  /** Working folder (data/, the log, the password file); default a new temp dir. */
  dir?: string | undefined;
  /** Default 127.0.0.1. */
  host?: string | undefined;
  /** Default $PARLEY_PG_BIN, else the newest /usr/lib/postgresql/<version>/bin. */
  binDir?: string | undefined;
  /** Default 60 s. */
  readyTimeoutMs?: number | undefined;
}

export interface PostgresHandle {
  host: string;
  port: number;
  /** The superuser the tests connect as. */
  user: string;
  password: string;
  /** A file holding the password (mode 0600), as an operator would configure it. */
  passwordFile: string;
  dir: string;
  logFile: string;
  process: ManagedProcess;
  /** Creates an empty database and returns its name. */
  createDatabase(name?: string): Promise<string>;
  /** Connection settings for one database (password included). */
  connection(database: string): { host: string; port: number; user: string; password: string; database: string };
  stop(): Promise<void>;
}

const USER = "parley";
const OS_USER = "postgres";

export function postgresBinDir(): string {
  const env = process.env.PARLEY_PG_BIN;
  if (env) return env;
  const root = "/usr/lib/postgresql";
  const versions = existsSync(root) ? readdirSync(root).filter((v) => /^\d+$/.test(v)).sort((a, b) => Number(b) - Number(a)) : [];
  for (const v of versions) {
    const bin = path.join(root, v, "bin");
    if (existsSync(path.join(bin, "initdb"))) return bin;
  }
  throw new Error("PostgreSQL not found under /usr/lib/postgresql (apt-get install postgresql, or set PARLEY_PG_BIN)");
}

/** Under root: the command and arguments that run `bin` as the postgres OS user (execs, no PAM session). */
function asServerUser(bin: string, args: string[]): [string, string[]] {
  if (process.getuid?.() !== 0) return [bin, args];
  return ["setpriv", ["--reuid", OS_USER, "--regid", OS_USER, "--init-groups", "--", bin, ...args]];
}

async function handOver(p: string): Promise<void> {
  if (process.getuid?.() !== 0) return;
  const uid = Number(execFileSync("id", ["-u", OS_USER], { encoding: "utf8" }).trim());
  const gid = Number(execFileSync("id", ["-g", OS_USER], { encoding: "utf8" }).trim());
  await fs.chown(p, uid, gid);
}

export async function startPostgres(opts: PostgresOptions = {}): Promise<PostgresHandle> {
  const bin = opts.binDir ?? postgresBinDir();
  const host = opts.host ?? "127.0.0.1";
  const dir = opts.dir ?? (await fs.mkdtemp(path.join(os.tmpdir(), "parley-pg-")));
  await fs.mkdir(dir, { recursive: true });
  await fs.chmod(dir, 0o700);
  await handOver(dir);
  const data = path.join(dir, "data");
  const password = randomBytes(18).toString("base64url");
  const passwordFile = path.join(dir, "password");
  await fs.writeFile(passwordFile, `${password}\n`, { mode: 0o600 });
  await handOver(passwordFile);

  const [initCmd, initArgs] = asServerUser(path.join(bin, "initdb"), [
    "-D", data, "-U", USER, `--pwfile=${passwordFile}`, "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync",
  ]);
  execFileSync(initCmd, initArgs, { stdio: ["ignore", "ignore", "pipe"] });

  const port = await freePort(host);
  const [cmd, args] = asServerUser(path.join(bin, "postgres"), [
    "-D", data, "-h", host, "-p", String(port), "-k", dir,
    // A test cluster: durability is not the point, speed is.
    "-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off",
  ]);
  const connection = (database: string) => ({ host, port, user: USER, password, database });
  const proc = await startProcess({
    name: "postgres",
    command: cmd,
    args,
    dir,
    readyTimeoutMs: opts.readyTimeoutMs ?? 60_000,
    ready: async ({ signal }) => {
      await waitForTcp(host, port, opts.readyTimeoutMs ?? 60_000, { signal });
      // The port opens before the server accepts sessions ("the database system is starting up").
      for (;;) {
        const c = new pg.Client(connection("postgres"));
        try {
          await c.connect();
          await c.query("SELECT 1");
          return;
        } catch (err) {
          if (signal.aborted) throw err;
          await new Promise((r) => setTimeout(r, 100));
        } finally {
          await c.end().catch(() => undefined);
        }
      }
    },
  });
  let n = 0;
  return {
    host, port, user: USER, password, passwordFile, dir,
    logFile: proc.logFile,
    process: proc,
    connection,
    async createDatabase(name = `parley_${process.pid}_${++n}`) {
      const c = new pg.Client(connection("postgres"));
      await c.connect();
      try {
        await c.query(`CREATE DATABASE ${pg.escapeIdentifier(name)}`);
      } finally {
        await c.end();
      }
      return name;
    },
    async stop() {
      await proc.stop();
      if (!opts.dir) await fs.rm(dir, { recursive: true, force: true });
    },
  };
}
