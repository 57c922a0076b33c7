// Starts a Janus gateway for the loopback dev/test stack with an isolated configs folder and
// plugin/transport folders that hold only what Parley uses (VideoRoom, WebSockets).
import { randomBytes } from "node:crypto";
import fs from "node:fs/promises";
import path from "node:path";
import { renderJanusConfig } from "../../appservice/src/sfu/janusConfig.ts";
import { freePort, waitForTcp } from "./ports.ts";
import { startProcess, type ManagedProcess } from "./proc.ts";
import { generateSelfSignedCert, type CertPaths } from "./tls.ts";

const JANUS_LIB_DIR = "/usr/lib/x86_64-linux-gnu/janus";

export interface JanusOptions {
  /** Working directory: config/, plugins/, transports/, events/, loggers/ and janus.log. */
  dir: string;
  /** filename -> contents, written into dir/config (e.g. from renderJanusConfig). */
  configFiles: Record<string, string>;
  /** Janus API WebSocket URL (ws://127.0.0.1:PORT): readiness = a TCP connect to it works. */
  wsUrl: string;
  /** Default: $PARLEY_JANUS_BIN or /usr/bin/janus. */
  janusBin?: string | undefined;
  /** Folder holding plugins/ and transports/ (default /usr/lib/x86_64-linux-gnu/janus). */
  libDir?: string | undefined;
  /** Default 30 s. */
  readyTimeoutMs?: number | undefined;
  /** Plugin libraries to load (default: the VideoRoom only). */
  plugins?: string[] | undefined;
}

export interface JanusHandle {
  logFile: string;
  /** Milliseconds from startJanus() until the WebSockets port accepted a connection. */
  startupMs: number;
  process: ManagedProcess;
  stop(): Promise<void>;
  kill9(): Promise<void>;
}

/** Empties `dir` (creating it if needed) and fills it with symlinks to `targets`. */
async function linkOnly(dir: string, targets: string[]): Promise<void> {
  await fs.rm(dir, { recursive: true, force: true });
  await fs.mkdir(dir, { recursive: true });
  for (const target of targets) {
    await fs.access(target);
    await fs.symlink(target, path.join(dir, path.basename(target)));
  }
}

/**
 * Janus 1.1.2 has a --plugins-folder flag but none for the transports, event handlers or
 * loggers folders: those are only the general.transports_folder / events_folder /
 * loggers_folder settings of janus.jcfg. Point them at our folders (replacing any values the
 * caller's config had), so the distribution's other transports, event handlers and loggers
 * (e.g. libjanus_jsonlog.so) are never loaded.
 */
function isolateFolders(janusJcfg: string, folders: Record<string, string>): string {
  const keys = Object.keys(folders).join("|");
  const stripped = janusJcfg.replace(new RegExp(`^\\s*(?:${keys})\\s*=.*\\n?`, "gm"), "");
  const lines = Object.entries(folders).map(([k, v]) => `\t${k} = ${JSON.stringify(v)}`);
  const general = /^general\s*:\s*\{[^\n]*\n/m;
  if (general.test(stripped)) return stripped.replace(general, (m) => `${m}${lines.join("\n")}\n`);
  return `general: {\n${lines.join("\n")}\n}\n${stripped}`;
}

export async function startJanus(opts: JanusOptions): Promise<JanusHandle> {
  const t0 = performance.now();
  const dir = path.resolve(opts.dir);
  const libDir = opts.libDir ?? JANUS_LIB_DIR;
  const configDir = path.join(dir, "config");
  const pluginsDir = path.join(dir, "plugins");
  const transportsDir = path.join(dir, "transports");
  const eventsDir = path.join(dir, "events");
  const loggersDir = path.join(dir, "loggers");

  const ws = new URL(opts.wsUrl);
  const wsPort = Number(ws.port);
  if (!wsPort) throw new Error(`startJanus: wsUrl needs an explicit port: ${opts.wsUrl}`);
  const wsHost = ws.hostname.replace(/^\[|\]$/g, "");

  // Rebuild the folders from scratch so a restart in the same dir sees exactly this config.
  await fs.rm(configDir, { recursive: true, force: true });
  await fs.mkdir(configDir, { recursive: true, mode: 0o700 });
  await Promise.all([
    linkOnly(pluginsDir, (opts.plugins ?? ["libjanus_videoroom.so"]).map((p) => path.join(libDir, "plugins", p))),
    linkOnly(transportsDir, [path.join(libDir, "transports", "libjanus_websockets.so")]),
    linkOnly(eventsDir, []),
    linkOnly(loggersDir, []),
  ]);
  const folders = {
    plugins_folder: pluginsDir,
    transports_folder: transportsDir,
    events_folder: eventsDir,
    loggers_folder: loggersDir,
  };
  for (const [name, contents] of Object.entries(opts.configFiles)) {
    if (name !== path.basename(name)) throw new Error(`startJanus: config file name must be plain: ${name}`);
    const text = name === "janus.jcfg" ? isolateFolders(contents, folders) : contents;
    await fs.writeFile(path.join(configDir, name), text, { mode: 0o600 });
  }
  if (!("janus.jcfg" in opts.configFiles)) {
    await fs.writeFile(path.join(configDir, "janus.jcfg"), isolateFolders("", folders), { mode: 0o600 });
  }

  const proc = await startProcess({
    name: "janus",
    command: opts.janusBin ?? process.env["PARLEY_JANUS_BIN"] ?? "/usr/bin/janus",
    args: [
      `--configs-folder=${configDir}`,
      `--plugins-folder=${pluginsDir}`,
      "--disable-colors",
      "--debug-timestamps",
    ],
    dir,
    cwd: dir,
    logFile: path.join(dir, "janus.log"),
    readyTimeoutMs: opts.readyTimeoutMs ?? 30_000,
    stopTimeoutMs: 5_000,
    ready: ({ signal }) => waitForTcp(wsHost, wsPort, opts.readyTimeoutMs ?? 30_000, { signal, intervalMs: 25 }),
  });

  return {
    logFile: proc.logFile,
    startupMs: Math.round(performance.now() - t0),
    process: proc,
    async stop() {
      await proc.stop();
    },
    async kill9() {
      await proc.kill9();
    },
  };
}

/** What a Janus started with Parley's generated config needs to be talked to. */
export interface GeneratedJanus extends JanusHandle {
  dir: string;
  wsUrl: string;
  adminWsUrl: string;
  apiSecret: string;
  adminSecret: string;
  videoroomAdminKey: string;
  rtpPortRange: [number, number];
  cert: CertPaths;
  /** Kills Janus (SIGKILL by default) and starts it again: same ports, secrets and certificate. */
  restart(opts?: { kill9?: boolean }): Promise<void>;
}

/**
 * A Janus running the config Parley generates (renderJanusConfig): fresh secrets, a DTLS
 * certificate of its own, API and Admin API on 127.0.0.1 at free ports, a 30 s reclaim timeout.
 */
export async function startGeneratedJanus(opts: { dir: string; rtpPortRange: [number, number] }): Promise<GeneratedJanus> {
  const secret = () => randomBytes(32).toString("hex");
  const [wsPort, adminWsPort] = [await freePort("127.0.0.1"), await freePort("127.0.0.1")];
  const cert = await generateSelfSignedCert({ dir: opts.dir, ip: "127.0.0.1", name: "dtls" });
  const [apiSecret, adminSecret, videoroomAdminKey] = [secret(), secret(), secret()];
  const wsUrl = `ws://127.0.0.1:${wsPort}`;
  const configFiles = renderJanusConfig({
    wsPort,
    adminWsPort,
    apiSecret,
    adminSecret,
    videoroomAdminKey,
    rtpPortRange: opts.rtpPortRange,
    certPem: cert.certPath,
    certKey: cert.keyPath,
    reclaimSessionTimeoutS: 30,
    // Inside scripts/isolated.sh, media goes over the namespace's own interface (127.77.0.1).
    iceEnforceList: process.env.PARLEY_MEDIA_IFACE || undefined,
    // Inside it, the media address is Janus's own (no address discovery towards 1.2.3.4).
    localIp: process.env.PARLEY_MEDIA_ADDR || undefined,
  });
  let current = await startJanus({ dir: opts.dir, wsUrl, configFiles });
  return {
    get logFile() {
      return current.logFile;
    },
    get startupMs() {
      return current.startupMs;
    },
    get process() {
      return current.process;
    },
    stop: () => current.stop(),
    kill9: () => current.kill9(),
    async restart(o = {}) {
      await ((o.kill9 ?? true) ? current.kill9() : current.stop());
      current = await startJanus({ dir: opts.dir, wsUrl, configFiles });
    },
    dir: opts.dir,
    wsUrl,
    adminWsUrl: `ws://127.0.0.1:${adminWsPort}`,
    apiSecret,
    adminSecret,
    videoroomAdminKey,
    rtpPortRange: opts.rtpPortRange,
    cert,
  };
}
