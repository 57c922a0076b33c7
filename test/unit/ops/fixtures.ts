import { parseConfig } from "../../../appservice/src/config/load.ts";
import type { ParleyConfig, ParleyConfigInput } from "../../../appservice/src/config/schema.ts";

const s = (c: string) => c.repeat(40);

/** A valid config; `more` replaces whole sections. */
export function testConfig(more: Partial<ParleyConfigInput> = {}): ParleyConfig {
  return parseConfig({
    homeserver: { url: "http://127.0.0.1:8008", domain: "example.org" },
    appservice: { url: "http://127.0.0.1:9000", asToken: s("a"), hsToken: s("b") },
    meetings: { publicUrl: "https://meet.example.org" },
    sfu: { nodes: [{ id: "janus-a", url: "ws://127.0.0.1:8188", apiSecret: s("c"), adminKey: s("d") }] },
    ...more,
  });
}
