// The sample config, generated from the schema: each key with its description as a comment,
// its default (or first example) as the value. Nothing here repeats what the schema says.
import { Document, isMap, isPair, isScalar, type Pair, type YAMLMap } from "yaml";
import { z } from "zod";
import { configSchema } from "./schema.ts";

interface JsonSchema {
  type?: string;
  description?: string;
  default?: unknown;
  examples?: unknown[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  enum?: unknown[];
}

function sampleValue(schema: JsonSchema): unknown {
  if (schema.properties) {
    // Optional keys without a default stay out of the sample; the reference (schema) lists them.
    const shown = Object.entries(schema.properties).filter(
      ([k, v]) => schema.required?.includes(k) || v.default !== undefined || v.properties,
    );
    return Object.fromEntries(shown.map(([k, v]) => [k, sampleValue(v)]));
  }
  if (schema.default !== undefined) return schema.default;
  if (schema.examples?.length) return schema.examples[0];
  if (schema.enum?.length) return schema.enum[0];
  return schema.type === "array" ? [] : null;
}

function comment(schema: JsonSchema): string | undefined {
  const parts = [schema.description, schema.enum ? `one of: ${schema.enum.join(", ")}` : undefined].filter(Boolean);
  return parts.length ? parts.map((p) => ` ${p}`).join("\n") : undefined;
}

function annotate(map: YAMLMap, schema: JsonSchema): void {
  for (const item of map.items) {
    if (!isPair(item) || !isScalar(item.key)) continue;
    const child = schema.properties?.[String(item.key.value)];
    if (!child) continue;
    const text = comment(child);
    if (text) (item.key as { commentBefore?: string }).commentBefore = text;
    if (isMap((item as Pair).value)) annotate((item as Pair).value as YAMLMap, child);
  }
}

export function sampleConfigYaml(): string {
  const schema = z.toJSONSchema(configSchema, { io: "input", unrepresentable: "any" }) as JsonSchema;
  const doc = new Document(sampleValue(schema));
  doc.commentBefore =
    " Parley configuration. Generated from the schema (appservice/src/config/schema.ts).\n" +
    " Secrets set to 'generate' are filled with fresh random values by `parley -g`.";
  if (isMap(doc.contents)) annotate(doc.contents, schema);
  return doc.toString({ lineWidth: 100 });
}
