// The files of the top-level config/ folder, generated (parley --samples config): the sample
// config, a sample registration made from it, and the Janus config template (one node).
// A unit test checks that the committed files are what this writes.
import { parse, stringify } from "yaml";
import { buildRegistration } from "../matrix/registration.ts";
import { renderJanusConfig } from "../sfu/janusConfig.ts";
import { renderCoturnConfig } from "../turn/coturnConfig.ts";
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
  localIp: "<this node's media IP address>",
} as const;

/**
 * The coturn template: a TURN server on one public address, relaying only to the Janus nodes'
 * media addresses (documentation addresses here: put the real ones).
 */
export const COTURN_TEMPLATE = {
  listeningIps: ["192.0.2.10"],
  port: 3478,
  relayIp: "192.0.2.10",
  relayPortRange: [49152, 65535] as [number, number],
  realm: "<homeserver.domain-in-parley.yaml>",
  secret: "<the-secret-in-the-file-named-by-turn.secretFile-in-parley.yaml>",
  allowedPeerIps: ["192.0.2.20"],
  userQuota: 12,
  totalQuota: 2000,
  maxBytesPerSecond: 0,
  logFile: "stdout",
  pidFile: "/run/turnserver/turnserver.pid",
  userDbFile: "/var/lib/turn/turndb",
};

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
    "coturn/turnserver.conf": renderCoturnConfig(COTURN_TEMPLATE),
  };
}
