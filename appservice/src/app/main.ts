#!/usr/bin/env node
// The CLI, in the bridge dialect:
//   parley -c config.yaml                         run
//   parley -g -c config.yaml [-f registration.yaml]  generate the registration (fills 'generate' secrets)
//   parley -e -c config.yaml                      write an example config
//   parley --validate -c config.yaml              check a config and exit
//   parley --samples DIR                          write the sample files of config/ into DIR
//   parley doctor | backup | restore | janus-config  operator subcommands (commands.ts)
//   parley export --user @x:hs -c config.yaml     what Parley holds about a user, as JSON
//   parley erase --user @x:hs -c config.yaml      remove it (docs/personal-data.md)
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { enableCompileCache } from "node:module";
import path from "node:path";
import { parseArgs } from "node:util";
import { parseDocument } from "yaml";
import { ConfigError, loadConfig, parseConfig, SECRET_PATHS } from "../config/load.ts";
import { sampleConfigYaml } from "../config/sample.ts";
import { GENERATE } from "../config/schema.ts";
import { isSubcommand, runSubcommand, SUBCOMMAND_USAGE } from "./commands.ts";

const USAGE = `usage: parley -c CONFIG [-g [-f REGISTRATION]] [-e] [--validate] | --samples DIR
       parley export|erase --user USER_ID -c CONFIG
  -c, --config FILE           config file (YAML)
  -g, --generate-registration write the appservice registration for the homeserver, filling
                              secrets set to '${GENERATE}' in the config with fresh random ones
  -f, --registration FILE     where -g writes the registration (default: registration.yaml)
  -e, --example-config        write an example config to the -c path (refuses to overwrite)
      --validate              validate the config and exit
      --samples DIR           write the sample config, registration and Janus config template
                              (the repository's config/ folder) into DIR
      --user USER_ID          export: write everything Parley holds about the user as JSON;
                              erase: remove it (a guest's account is deactivated too)
  -h, --help                  this text

operator subcommands (docs/deployment.md):
${SUBCOMMAND_USAGE}`;

function writeAtomic(file: string, text: string): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, text, { mode: 0o600 });
  renameSync(tmp, file);
}

/** Replaces 'generate' secrets in the config file in place, keeping its comments. */
function fillGeneratedSecrets(file: string): number {
  const doc = parseDocument(readFileSync(file, "utf8"));
  let filled = 0;
  for (const keyPath of SECRET_PATHS) {
    if (doc.getIn(keyPath) === GENERATE) {
      doc.setIn(keyPath, randomBytes(32).toString("hex"));
      filled++;
    }
  }
  if (filled) writeAtomic(file, doc.toString({ lineWidth: 100 }));
  return filled;
}

export async function main(argv: string[]): Promise<number> {
  if (isSubcommand(argv[0])) return runSubcommand(argv[0]!, argv.slice(1));
  let parsed;
  try {
    parsed = parseArgs({
      args: argv,
      options: {
        config: { type: "string", short: "c" },
        "generate-registration": { type: "boolean", short: "g" },
        registration: { type: "string", short: "f", default: "registration.yaml" },
        "example-config": { type: "boolean", short: "e" },
        validate: { type: "boolean" },
        samples: { type: "string" },
        user: { type: "string" },
        help: { type: "boolean", short: "h" },
      },
      strict: true,
      allowPositionals: true,
    });
  } catch (err) {
    console.error(`${(err as Error).message}\n${USAGE}`);
    return 2;
  }
  const args = parsed.values;
  const command = parsed.positionals[0];
  if (parsed.positionals.length > 1 || (command !== undefined && command !== "export" && command !== "erase")) {
    console.error(`unknown command '${parsed.positionals.join(" ")}'\n${USAGE}`);
    return 2;
  }
  if (args.help) {
    console.log(USAGE);
    return 0;
  }
  if (args.samples !== undefined) {
    // Loaded here, like registration.ts and start.ts below: they bring matrix-appservice-bridge,
    // whose deprecation warnings would land on the stderr of every subcommand.
    const { sampleFiles } = await import("../config/samples.ts");
    for (const [name, text] of Object.entries(sampleFiles())) {
      const file = path.join(args.samples, name);
      mkdirSync(path.dirname(file), { recursive: true });
      writeFileSync(file, text);
    }
    console.log(`wrote the sample files into ${args.samples}`);
    return 0;
  }
  if (!args.config) {
    console.error(`a config file is required (-c)\n${USAGE}`);
    return 2;
  }
  const file = args.config;
  if (command) {
    const { checkUserId, eraseCommand, exportCommand } = await import("./personalData.ts");
    const userId = checkUserId(args.user);
    if (!userId) {
      console.error(`${command} needs --user with a Matrix user id (@name:server)\n${USAGE}`);
      return 2;
    }
    try {
      const config = loadConfig(file);
      if (command === "export") {
        console.log(await exportCommand(config, userId));
      } else {
        const erased = await eraseCommand(config, userId);
        console.log(`erased ${userId}: ${erased.rows} record${erased.rows === 1 ? "" : "s"} removed or rewritten${erased.guestDeactivated ? "; guest account deactivated" : ""}`);
      }
      return 0;
    } catch (err) {
      console.error(err instanceof ConfigError ? err.message : `parley ${command}: ${(err as Error).message}`);
      return 1;
    }
  }
  try {
    if (args["example-config"]) {
      if (existsSync(file)) throw new ConfigError(file, ["exists already; not overwriting"]);
      writeAtomic(file, sampleConfigYaml());
      console.log(`wrote example config to ${file}; edit it, then run 'parley -g -c ${file}'`);
      return 0;
    }
    if (args["generate-registration"]) {
      const filled = existsSync(file) ? fillGeneratedSecrets(file) : 0;
      const config = loadConfig(file);
      const { registrationYaml } = await import("../matrix/registration.ts");
      writeAtomic(args.registration, registrationYaml(config));
      console.log(`wrote ${args.registration}${filled ? ` (generated ${filled} secret${filled > 1 ? "s" : ""} in ${file})` : ""}`);
      console.log("add it to the homeserver's app_service_config_files and restart the homeserver");
      return 0;
    }
    const config = loadConfig(file);
    if (args.validate) {
      console.log(`${file}: valid`);
      return 0;
    }
    // Loaded here, not at the top: the subcommands (doctor, backup) need none of the service.
    const { start } = await import("./start.ts");
    const parley = await start(config);
    const shutdown = (signal: string) => {
      console.error(`${signal}: stopping`);
      void parley.stop().then(() => process.exit(0));
    };
    process.once("SIGTERM", () => shutdown("SIGTERM"));
    process.once("SIGINT", () => shutdown("SIGINT"));
    return -1; // keep running
  } catch (err) {
    console.error(err instanceof ConfigError ? err.message : `parley: ${(err as Error).stack ?? String(err)}`);
    return 1;
  }
}

// Exported for tests; parseConfig re-exported so callers need one import.
export { parseConfig };

if (import.meta.main) {
  // V8's code cache for the modules loaded from here on (the service's, loaded in main): a
  // restart loads them in about 0.8 s rather than 1.2 s on a slow machine. Node keeps it in
  // $NODE_COMPILE_CACHE, else in the system's temporary directory, and checks it against each
  // file's content; NODE_DISABLE_COMPILE_CACHE=1 turns it off, and a directory it cannot write
  // only loses the gain (docs/deployment.md).
  enableCompileCache();
  const code = await main(process.argv.slice(2));
  if (code >= 0) process.exit(code);
}
