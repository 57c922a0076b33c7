import { parse, parseDocument } from "yaml";
import { z } from "zod";
import { describe, expect, it } from "vitest";
import { ConfigError, parseConfig } from "../../../appservice/src/config/load.ts";
import { sampleConfigYaml } from "../../../appservice/src/config/sample.ts";
import { configSchema, GENERATE } from "../../../appservice/src/config/schema.ts";

type AnySchema = z.ZodType;

/** Strips default/prefault/optional wrappers to reach an object schema, if there is one. */
function objectShape(schema: AnySchema): Record<string, AnySchema> | undefined {
  let s = schema as unknown as { def: { type: string; innerType?: AnySchema }; shape?: Record<string, AnySchema> };
  while (s.def.innerType) s = s.def.innerType as unknown as typeof s;
  return s.def.type === "object" ? s.shape : undefined;
}

interface SchemaKey {
  path: string;
  field: AnySchema;
}

function schemaKeys(shape: Record<string, AnySchema>, prefix = ""): SchemaKey[] {
  return Object.entries(shape).flatMap(([k, field]) => {
    const p = prefix ? `${prefix}.${k}` : k;
    const inner = objectShape(field);
    return [{ path: p, field }, ...(inner ? schemaKeys(inner, p) : [])];
  });
}

/** Keys of the sample text by indentation, each with the comment lines right above it. */
function sampleKeys(text: string): { path: string; comment: string | undefined }[] {
  const out: { path: string; comment: string | undefined }[] = [];
  const stack: { indent: number; key: string }[] = [];
  let comment: string[] = [];
  for (const line of text.split("\n")) {
    const c = /^(\s*)#(.*)$/.exec(line);
    if (c) {
      comment.push(c[2]!.trim());
      continue;
    }
    const k = /^(\s*)([A-Za-z][\w]*):/.exec(line);
    if (!k) {
      comment = [];
      continue;
    }
    const indent = k[1]!.length;
    while (stack.length && stack.at(-1)!.indent >= indent) stack.pop();
    stack.push({ indent, key: k[2]! });
    out.push({ path: stack.map((e) => e.key).join("."), comment: comment.length ? comment.join(" ") : undefined });
    comment = [];
  }
  return out;
}

const ALL_KEYS = schemaKeys(configSchema.shape);
/** Optional keys without a default: the sample leaves them out. */
const omittedKeys = ALL_KEYS.filter(({ field }) => {
  const r = field.safeParse(undefined);
  // An optional section (crypto) is shown, so that `parley -g` fills its secret.
  return r.success && r.data === undefined && !objectShape(field);
}).map((k) => k.path);


describe("sampleConfigYaml", () => {
  it("parses as YAML into the expected sections", () => {
    const data = parse(sampleConfigYaml()) as Record<string, unknown>;
    expect(Object.keys(data)).toEqual(["homeserver", "appservice", "meetings", "client", "federation", "sfu", "turn", "calls", "guests", "store", "crypto", "metrics", "health", "privacy", "logging"]);
  });

  it("has exactly the schema's keys, leaving out only optional keys without a default", () => {
    const keys = sampleKeys(sampleConfigYaml()).map((k) => k.path);
    const expected = ALL_KEYS.map((k) => k.path).filter((p) => !omittedKeys.includes(p));
    expect([...keys].sort()).toEqual([...expected].sort());
    // The walk of the text agrees with the YAML parser on the top level.
    expect(keys.filter((k) => !k.includes("."))).toEqual(Object.keys(parse(sampleConfigYaml()) as object));
    // Every required key is there: the sample is a complete config once secrets are filled.
    for (const required of ["homeserver.url", "homeserver.domain", "appservice.url", "meetings.publicUrl"]) {
      expect(keys).toContain(required);
    }
  });

  it("puts a comment with its description above every described key", () => {
    const comments = new Map(sampleKeys(sampleConfigYaml()).map((k) => [k.path, k.comment]));
    const described = ALL_KEYS.filter((k) => comments.has(k.path))
      .map((k) => ({ path: k.path, description: z.globalRegistry.get(k.field)?.description }))
      .filter((k): k is { path: string; description: string } => typeof k.description === "string");
    expect(described.length).toBeGreaterThanOrEqual(20);
    for (const { path, description } of described) {
      expect(comments.get(path), path).toBeDefined();
      expect(comments.get(path), path).toContain(description);
    }
  });

  it("lists the options of enums in the comment", () => {
    const comments = new Map(sampleKeys(sampleConfigYaml()).map((k) => [k.path, k.comment]));
    expect(comments.get("meetings.governance.access")).toContain("one of: open, institution, invited");
    expect(comments.get("logging.level")).toBe("one of: fatal, error, warn, info, debug, trace");
  });

  it("has a header comment mentioning parley -g", () => {
    const text = sampleConfigYaml();
    expect(parseDocument(text).errors).toEqual([]);
    const header = text.slice(0, text.indexOf("\n\n"));
    expect(header).toMatch(/^# Parley configuration\./);
    expect(header).toContain("`parley -g`");
  });

  it("is refused as it is, for every placeholder secret", () => {
    let err: unknown;
    try {
      parseConfig(parse(sampleConfigYaml()), "sample.yaml");
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).problems).toEqual([
      `appservice.asToken: placeholder secret '${GENERATE}' refused; run 'parley -g -c sample.yaml' to generate one`,
      `appservice.hsToken: placeholder secret '${GENERATE}' refused; run 'parley -g -c sample.yaml' to generate one`,
      `crypto.storeKey: placeholder secret '${GENERATE}' refused; run 'parley -g -c sample.yaml' to generate one`,
    ]);
  });

  it("passes parseConfig once the three 'generate' secrets are replaced", () => {
    const text = sampleConfigYaml();
    expect(text.match(/: generate$/gm)).toHaveLength(3);
    const tokens = ["0123456789abcdef".repeat(4), "fedcba9876543210".repeat(4), "00112233445566778899".repeat(4)];
    let i = 0;
    const filled = text.replace(/: generate$/gm, () => `: "${tokens[i++]}"`);
    const config = parseConfig(parse(filled));
    expect(config.appservice.asToken).toBe(tokens[0]);
    expect(config.appservice.hsToken).toBe(tokens[1]);
    expect(config.crypto?.storeKey).toBe(tokens[2]);
    expect(config.homeserver).toEqual({ url: "http://127.0.0.1:8008", domain: "example.org" });
    expect(config.meetings.publicUrl).toBe("https://meet.example.org");
    expect(config.appservice.url).toBe("http://127.0.0.1:9000");
  });
});
