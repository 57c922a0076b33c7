// The files of the top-level config/ folder, generated (parley --samples config): the sample
// config, a sample registration made from it, and the Janus config template (one node).
// A unit test checks that the committed files are what this writes.
import { parse, stringify } from "yaml";
import { buildRegistration } from "../matrix/registration.ts";
import { renderJanusConfig } from "../sfu/janusConfig.ts";
import { sampleConfigYaml } from "./sample.ts";
import { configSchema } from "./schema.ts";

/** The Janus template's values: the secrets are placeholders, the rest the values Parley expects. */
export const JANUS_TEMPLATE = {
  wsPort: 8188,
  adminWsPort: 7188,
  apiSecret: "<sfu.nodes[].apiSecret of this node in parley.yaml>",
  adminSecret: "<a random secret of its own, for the Admin API>",
  videoroomAdminKey: "<sfu.nodes[].adminKey of this node in parley.yaml>",
  rtpPortRange: [20000, 40000] as [number, number],
  certPem: "/etc/janus/dtls.pem",
  certKey: "/etc/janus/dtls.key",
  reclaimSessionTimeoutS: 30,
} as const;

function sampleRegistrationYaml(): string {
  // The sample config as the schema reads it, secrets named rather than generated.
  const config = configSchema.parse(parse(sampleConfigYaml()));
  config.appservice.asToken = "<appservice.asToken in parley.yaml>";
  config.appservice.hsToken = "<appservice.hsToken in parley.yaml>";
  return (
    "# Sample appservice registration, generated from config/parley.sample.yaml.\n" +
    "# Do not copy it: 'parley -g -c parley.yaml' writes the real one, with the config's secrets.\n" +
    stringify(buildRegistration(config))
  );
}

/** Relative path -> content of every file in config/. */
export function sampleFiles(): Record<string, string> {
  const janus = Object.entries(renderJanusConfig({ ...JANUS_TEMPLATE }));
  return {
    "parley.sample.yaml": sampleConfigYaml(),
    "registration.sample.yaml": sampleRegistrationYaml(),
    ...Object.fromEntries(janus.map(([name, text]) => [`janus/${name}`, text])),
  };
}
