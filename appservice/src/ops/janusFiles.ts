// `parley janus-config`: the Janus config files of one node of Parley's config, so that the
// operator runs Janus with exactly what Parley expects (API on loopback with the node's
// api_secret and admin_key). The Admin API gets a fresh secret: Parley never uses it.
import { randomBytes } from "node:crypto";
import { existsSync, mkdirSync, renameSync, writeFileSync } from "node:fs";
import path from "node:path";
import type { ParleyConfig } from "../config/schema.ts";
import { blockedReason } from "../matrix/addressGuard.ts";
import { renderJanusConfig } from "../sfu/janusConfig.ts";

export interface JanusFilesOptions {
  /** sfu.nodes[].id; may be left out when there is one node. */
  node?: string | undefined;
  /** Admin API WebSockets port (default: the API port + 1000, like Janus's 8188/7188 the other way). */
  adminPort?: number | undefined;
  rtpPortRange?: [number, number] | undefined;
  certPem?: string | undefined;
  certKey?: string | undefined;
  iceEnforceList?: string | undefined;
}

export class JanusFilesError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "JanusFilesError";
  }
}

/** Default RTP range: wide enough for hundreds of participants, clear of ephemeral ports (32768+). */
export const DEFAULT_RTP_RANGE: [number, number] = [20000, 29999];

export function janusFiles(config: ParleyConfig, o: JanusFilesOptions): Record<string, string> {
  const nodes = config.sfu.nodes;
  if (!nodes.length) throw new JanusFilesError("the config has no sfu.nodes: add one (id, url ws://127.0.0.1:8188, apiSecret, adminKey) first");
  const node = o.node === undefined ? (nodes.length === 1 ? nodes[0] : undefined) : nodes.find((n) => n.id === o.node);
  if (!node) throw new JanusFilesError(o.node === undefined ? `several sfu.nodes: name one with --node (${nodes.map((n) => n.id).join(", ")})` : `no sfu.nodes entry with id '${o.node}'`);
  const url = new URL(node.url);
  const host = url.hostname.replace(/^\[|\]$/g, "");
  if (url.protocol !== "ws:" || !(host === "localhost" || blockedReason(host) === "loopback")) {
    throw new JanusFilesError(`sfu.nodes '${node.id}' url ${node.url}: the generated config serves the API on ws://127.0.0.1 only; use such a URL (on another machine, run parley janus-config there)`);
  }
  const wsPort = Number(url.port || 80);
  const adminWsPort = o.adminPort ?? (wsPort > 1000 ? wsPort - 1000 : wsPort + 1000);
  return renderJanusConfig({
    wsPort,
    adminWsPort,
    apiSecret: node.apiSecret,
    adminSecret: randomBytes(32).toString("hex"),
    videoroomAdminKey: node.adminKey,
    rtpPortRange: o.rtpPortRange ?? DEFAULT_RTP_RANGE,
    certPem: o.certPem,
    certKey: o.certKey,
    reclaimSessionTimeoutS: 30,
    iceEnforceList: o.iceEnforceList,
  });
}

/** Writes the files into `dir` (0600: they hold secrets); refuses to overwrite unless `force`. */
export function writeJanusFiles(dir: string, files: Record<string, string>, force = false): string[] {
  const existing = Object.keys(files).filter((name) => existsSync(path.join(dir, name)));
  if (existing.length && !force) throw new JanusFilesError(`${dir} already holds ${existing.join(", ")}; pass --force to replace them`);
  mkdirSync(dir, { recursive: true, mode: 0o750 });
  for (const [name, text] of Object.entries(files)) {
    const file = path.join(dir, name);
    const tmp = `${file}.${process.pid}.tmp`;
    writeFileSync(tmp, text, { mode: 0o600 });
    renameSync(tmp, file);
  }
  return Object.keys(files).map((name) => path.join(dir, name));
}
