// The operator's subcommands beside running Parley (main.ts dispatches on the first argument):
//   parley doctor -c CONFIG [--json]                check a deployment (docs/deployment.md)
//   parley backup -c CONFIG --to DIR                the store and the bot's crypto file
//   parley restore -c CONFIG --from DIR             into the config's (absent) paths
//   parley janus-config -c CONFIG --out DIR [...]   Janus's config files for one sfu node
import { parseArgs } from "node:util";
import { ConfigError, loadConfig } from "../config/load.ts";
import type { ParleyConfig } from "../config/schema.ts";
import { configureLogging } from "../log.ts";
import { BackupError, backup, restore, type BackupPaths } from "../ops/backup.ts";
import { exitCode, formatHuman, formatJson, runChecks, type Check } from "../ops/doctor.ts";
import { turnProbe } from "../turn/probe.ts";
import { cryptoFinding, DEFAULT_LIMITS, postgresStoreFinding, endpoints, homeserverChecks, janusCheck, storeFinding, tlsCheck, turnCheck, type TurnProbe } from "../ops/doctorChecks.ts";
import { JanusFilesError, janusFiles, writeJanusFiles } from "../ops/janusFiles.ts";

export const SUBCOMMAND_USAGE = `  parley doctor -c CONFIG [--json]     check the deployment; exit 1 on any error
  parley backup -c CONFIG --to DIR     back up the store and the bot's crypto file
  parley restore -c CONFIG --from DIR  restore them (Parley stopped, files absent)
  parley janus-config -c CONFIG --out DIR [--node ID] [--admin-port N]
         [--rtp-ports MIN-MAX] [--cert PEM --key KEY] [--ice-enforce LIST] [--force]
                                       write Janus's config files for one sfu node`;

type Options = NonNullable<NonNullable<Parameters<typeof parseArgs>[0]>["options"]>;

function parse(argv: string[], options: Options) {
  return parseArgs({ args: argv, options: { config: { type: "string", short: "c" }, ...options }, strict: true }).values as Record<string, string | boolean | undefined>;
}

export async function doctor(config: ParleyConfig, file: string, opts: { json: boolean }): Promise<number> {
  const turn: TurnProbe | undefined = config.turn ? turnProbe(config.turn) : undefined;
  const checks: Check[] = [
    { id: "config", run: async () => [{ check: "config", status: "ok", message: `${file} is valid` }] },
    ...homeserverChecks(config, DEFAULT_LIMITS),
    ...config.sfu.nodes.map((n) => janusCheck(n, DEFAULT_LIMITS)),
    ...(config.sfu.nodes.length ? [] : [{ id: "janus", run: async () => [{ check: "janus", status: "error" as const, message: "no sfu.nodes: calls cannot start", fix: "add a Janus node to sfu.nodes and write its config with 'parley janus-config'" }] }]),
    turnCheck(turn),
    tlsCheck(config, DEFAULT_LIMITS),
    { id: "store", run: async () => [config.store.backend === "postgres" ? await postgresStoreFinding(config.store.postgres!) : await storeFinding(config.store.path)] },
    { id: "crypto", run: async () => [await cryptoFinding(config.crypto)] },
  ];
  const report = await runChecks(checks, endpoints(config, turn));
  process.stdout.write(opts.json ? formatJson(report) : formatHuman(report));
  return exitCode(report);
}

function backupPaths(config: ParleyConfig): BackupPaths {
  return { store: config.store.path, crypto: config.crypto ? { file: config.crypto.path, storeKey: config.crypto.storeKey } : undefined };
}

function range(text: string | undefined): [number, number] | undefined {
  if (text === undefined) return undefined;
  const m = /^(\d+)-(\d+)$/.exec(text);
  if (!m) throw new JanusFilesError(`--rtp-ports ${text}: expected MIN-MAX such as 20000-29999`);
  return [Number(m[1]), Number(m[2])];
}

const COMMANDS: Record<string, { options: Options; run(config: ParleyConfig, file: string, a: Record<string, string | boolean | undefined>): Promise<number> }> = {
  doctor: {
    options: { json: { type: "boolean" } },
    run: (config, file, a) => doctor(config, file, { json: a["json"] === true }),
  },
  backup: {
    options: { to: { type: "string" } },
    async run(config, _file, a) {
      if (typeof a["to"] !== "string") throw new BackupError("--to DIR is required");
      const done = await backup(backupPaths(config), a["to"]);
      console.log(`backed up ${done.files.join(", ")} (schema version ${done.schemaVersion}) into ${a["to"]}; keep the config file too: its secrets open the crypto file`);
      return 0;
    },
  },
  restore: {
    options: { from: { type: "string" } },
    async run(config, _file, a) {
      if (typeof a["from"] !== "string") throw new BackupError("--from DIR is required");
      const done = restore(backupPaths(config), a["from"]);
      console.log(`restored ${done.files.join(", ")} (schema version ${done.schemaVersion}); start Parley: it runs any newer migrations`);
      for (const s of done.skipped) console.log(`not restored: ${s}`);
      return 0;
    },
  },
  "janus-config": {
    options: {
      out: { type: "string" }, node: { type: "string" }, "admin-port": { type: "string" }, "rtp-ports": { type: "string" },
      cert: { type: "string" }, key: { type: "string" }, "ice-enforce": { type: "string" }, force: { type: "boolean" },
    },
    async run(config, _file, a) {
      if (typeof a["out"] !== "string") throw new JanusFilesError("--out DIR is required");
      if ((a["cert"] === undefined) !== (a["key"] === undefined)) throw new JanusFilesError("--cert and --key go together");
      const adminPort = a["admin-port"] === undefined ? undefined : Number(a["admin-port"]);
      const files = janusFiles(config, {
        node: a["node"] as string | undefined,
        adminPort,
        rtpPortRange: range(a["rtp-ports"] as string | undefined),
        certPem: a["cert"] as string | undefined,
        certKey: a["key"] as string | undefined,
        iceEnforceList: a["ice-enforce"] as string | undefined,
      });
      const written = writeJanusFiles(a["out"], files, a["force"] === true);
      console.log(`wrote ${written.join(", ")}; start Janus with --configs-folder=${a["out"]} (deploy/systemd/parley-janus.service)`);
      return 0;
    },
  },
};

export function isSubcommand(name: string | undefined): boolean {
  return name !== undefined && Object.hasOwn(COMMANDS, name);
}

/** Runs `parley <name> ...`; exit status 0 success, 1 failure (a doctor error), 2 usage. */
export async function runSubcommand(name: string, argv: string[]): Promise<number> {
  const command = COMMANDS[name]!;
  let a;
  try {
    a = parse(argv, command.options);
  } catch (err) {
    console.error(`${(err as Error).message}\nusage:\n${SUBCOMMAND_USAGE}`);
    return 2;
  }
  if (typeof a["config"] !== "string") {
    console.error(`parley ${name}: a config file is required (-c)`);
    return 2;
  }
  // Library loggers (the Janus transport) must not mix with the report, least of all --json.
  configureLogging("silent");
  let config: ParleyConfig;
  try {
    config = loadConfig(a["config"]);
  } catch (err) {
    if (!(err instanceof ConfigError) || name !== "doctor") {
      console.error(err instanceof ConfigError ? err.message : String(err));
      return 1;
    }
    const report = await runChecks([{ id: "config", run: async () => err.problems.map((p) => ({ check: "config", status: "error" as const, message: p, fix: `edit ${String(a["config"])}; 'parley --validate -c CONFIG' checks it alone` })) }], []);
    process.stdout.write(a["json"] === true ? formatJson(report) : formatHuman(report));
    return exitCode(report);
  }
  try {
    return await command.run(config, a["config"], a);
  } catch (err) {
    if (err instanceof BackupError || err instanceof JanusFilesError) {
      console.error(`parley ${name}: ${err.message}`);
      return 1;
    }
    throw err;
  }
}
