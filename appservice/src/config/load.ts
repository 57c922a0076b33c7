// Reads, validates and checks a config file. Every problem names its path in the file and what
// was expected; placeholder secrets are refused so that a sample never runs by accident.
import { readFileSync } from "node:fs";
import path from "node:path";
import { parseDocument } from "yaml";
import type { z } from "zod";
import { configSchema, GENERATE, type ParleyConfig } from "./schema.ts";

export class ConfigError extends Error {
  readonly problems: string[];
  constructor(file: string, problems: string[]) {
    super(`invalid config ${file}:\n${problems.map((p) => `  - ${p}`).join("\n")}`);
    this.name = "ConfigError";
    this.problems = problems;
  }
}

/** Values that mean "fill me in" in samples and docs; never accepted as a secret. */
const PLACEHOLDERS = new Set([GENERATE, "changeme", "change_me", "change-me", "secret", "token", "xxx", "todo", "placeholder"]);
export const SECRET_PATHS = [["appservice", "asToken"], ["appservice", "hsToken"], ["crypto", "storeKey"], ["privacy", "pseudonymKey"]] as const;

export function isPlaceholder(value: string): boolean {
  const v = value.trim().toLowerCase();
  return PLACEHOLDERS.has(v) || /^<.*>$/.test(v) || /^\$\{.*\}$/.test(v) || /^x+$/.test(v);
}

function describeIssue(issue: z.core.$ZodIssue): string {
  const where = issue.path.length ? issue.path.join(".") : "(top level)";
  if (issue.code === "invalid_type") {
    return `${where}: expected ${issue.expected}${issue.input === undefined ? " (missing)" : ""}`;
  }
  if (issue.code === "unrecognized_keys") {
    return `${where}: unknown key${issue.keys.length > 1 ? "s" : ""} ${issue.keys.map((k) => `'${k}'`).join(", ")}`;
  }
  return `${where}: ${issue.message}`;
}

/** Validates a parsed config object; `file` only labels errors. */
export function parseConfig(raw: unknown, file = "config"): ParleyConfig {
  const result = configSchema.safeParse(raw ?? {}, { reportInput: true });
  if (!result.success) throw new ConfigError(file, result.error.issues.map(describeIssue));
  const config = result.data;
  const problems: string[] = [];
  for (const [section, key] of SECRET_PATHS) {
    const value = (config[section] as Record<string, string> | undefined)?.[key];
    if (value === undefined) continue; // an optional section left out
    if (isPlaceholder(value)) {
      problems.push(`${section}.${key}: placeholder secret '${value}' refused; run 'parley -g -c ${file}' to generate one`);
    } else if (value.length < 32) {
      problems.push(`${section}.${key}: expected a random secret of at least 32 characters`);
    }
  }
  if (config.privacy.pseudonymizeRemoteUsers && config.privacy.pseudonymKey === undefined) {
    problems.push("privacy.pseudonymKey: required when privacy.pseudonymizeRemoteUsers is true (set it to 'generate' and run parley -g)");
  }
  config.sfu.nodes.forEach((node, i) => {
    for (const key of ["apiSecret", "adminKey"] as const) {
      if (isPlaceholder(node[key])) problems.push(`sfu.nodes.${i}.${key}: placeholder secret '${node[key]}' refused`);
      else if (node[key].length < 32) problems.push(`sfu.nodes.${i}.${key}: expected a random secret of at least 32 characters`);
    }
  });
  const ids = config.sfu.nodes.map((n) => n.id);
  if (new Set(ids).size !== ids.length) problems.push("sfu.nodes: node ids must be unique");
  if (!problems.length && config.appservice.asToken === config.appservice.hsToken) {
    problems.push("appservice.hsToken: must differ from appservice.asToken");
  }
  if (problems.length) throw new ConfigError(file, problems);
  return config;
}

/** Parses YAML text, reporting syntax errors with their line. */
export function parseYaml(text: string, file: string): unknown {
  const doc = parseDocument(text, { prettyErrors: true });
  if (doc.errors.length) throw new ConfigError(file, doc.errors.map((e) => `YAML: ${e.message}`));
  return doc.toJS();
}

/** Loads a config file; relative store paths are resolved against the file's folder. */
export function loadConfig(file: string): ParleyConfig {
  let text: string;
  try {
    text = readFileSync(file, "utf8");
  } catch (err) {
    throw new ConfigError(file, [`cannot read: ${(err as Error).message}`]);
  }
  const config = parseConfig(parseYaml(text, file), file);
  config.store.path = path.resolve(path.dirname(path.resolve(file)), config.store.path);
  const pg = config.store.postgres;
  if (pg?.passwordFile) pg.passwordFile = path.resolve(path.dirname(path.resolve(file)), pg.passwordFile);
  if (config.crypto) config.crypto.path = path.resolve(path.dirname(path.resolve(file)), config.crypto.path);
  if (config.turn) config.turn.secretFile = path.resolve(path.dirname(path.resolve(file)), config.turn.secretFile);
  return config;
}
