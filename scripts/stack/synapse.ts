// Starts a Synapse homeserver for the loopback dev/test stack: config written here (no
// --generate-config), sqlite in `dir`, plain-HTTP client listener and TLS federation listener,
// both bound to `ip` only.
import { execFile } from "node:child_process";
import crypto from "node:crypto";
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import YAML from "yaml";
import { freePort, portIsFree, waitForHttp } from "./ports.ts";
import { startProcess, type ManagedProcess } from "./proc.ts";
import { generateSelfSignedCert } from "./tls.ts";

const execFileP = promisify(execFile);

export interface SynapseOptions {
  /** Loopback address both listeners bind to, e.g. "127.0.0.11". */
  ip: string;
  /** Data directory (config, sqlite, keys, logs). Created if missing; never deleted here. */
  dir: string;
  /** Appservice registration YAML files (`app_service_config_files`). */
  appserviceRegistrationFiles: string[];
  /** When given, becomes `federation_domain_whitelist` (server names, e.g. "127.0.0.12:8448"). */
  federationAllowlistHosts?: string[] | undefined;
  /** Default 120 s. */
  readyTimeoutMs?: number | undefined;
  /**
   * How the ed25519 signing key is created (once per dir). "synapse" (default) runs
   * `python -m synapse.app.homeserver -c homeserver.yaml --generate-keys`, which costs a full
   * Python/Synapse import (~2.5 s of a ~5 s cold start here); "node" writes the same
   * `ed25519 a_XXXX <unpadded base64 seed>` line from node:crypto, roughly halving startup.
   */
  signingKey?: "synapse" | "node" | undefined;
  /**
   * Called once the server name (ip:federationPort) is known and before Synapse starts: the
   * place to write appservice registrations, which name the server in their namespaces.
   */
  onServerName?: ((serverName: string) => Promise<void>) | undefined;
  /** Shallow-merged over the generated homeserver.yaml (tests that need an odd setting). */
  extraConfig?: Record<string, unknown> | undefined;
}

export interface SynapseHandle {
  /** `${ip}:${federationPort}` */
  serverName: string;
  /** http://ip:clientPort */
  clientUrl: string;
  /** https://ip:federationPort; also serves /.well-known/matrix/client (server discovery). */
  federationUrl: string;
  /** The self-signed certificate of the federation listener (a browser test may trust it). */
  certPath: string;
  registrationSharedSecret: string;
  dir: string;
  /** Synapse's own log (dir/homeserver.log). stdout/stderr go to dir/synapse.stdout.log. */
  logFile: string;
  /** Milliseconds from startSynapse() until /_matrix/client/versions answered. */
  startupMs: number;
  /** The running process (a new one after restart()). */
  readonly process: ManagedProcess;
  stop(): Promise<void>;
  /** SIGKILL, no cleanup (a crash). */
  kill9(): Promise<void>;
  /** Stops it (SIGKILL by default) and starts it again: same config, ports, keys and database. */
  restart(opts?: { kill9?: boolean }): Promise<void>;
}

// Persisted next to the data so that restarting in the same dir keeps the server name (which
// Synapse refuses to change once users exist) and the secrets.
interface PersistedState {
  ip: string;
  clientPort: number;
  federationPort: number;
  registrationSharedSecret: string;
  macaroonSecretKey: string;
  formSecret: string;
}

export function synapseVenv(): string {
  return (
    process.env["PARLEY_SYNAPSE_VENV"] ??
    path.join(process.env["PARLEY_CACHE"] ?? path.join(os.homedir(), ".cache", "parley"), "synapse-1.163.2")
  );
}

function secret(): string {
  return crypto.randomBytes(32).toString("base64url");
}

async function loadOrCreateState(ip: string, dir: string): Promise<PersistedState> {
  const stateFile = path.join(dir, "stack-synapse.json");
  let previous: PersistedState | undefined;
  try {
    previous = JSON.parse(await fs.readFile(stateFile, "utf8")) as PersistedState;
  } catch {
    previous = undefined;
  }
  if (previous && previous.ip === ip) {
    const [clientFree, fedFree] = await Promise.all([
      portIsFree(ip, previous.clientPort),
      portIsFree(ip, previous.federationPort),
    ]);
    if (clientFree && fedFree) return previous;
    const dbExists = await fs.access(path.join(dir, "homeserver.db")).then(() => true, () => false);
    if (dbExists) {
      throw new Error(
        `startSynapse: ${dir} belongs to server ${ip}:${previous.federationPort} but its ports ` +
          `(${previous.clientPort}, ${previous.federationPort}) are in use (still running?); ` +
          `Synapse cannot change its server_name, so use a fresh dir`,
      );
    }
  }
  const clientPort = await freePort(ip);
  const federationPort = await freePort(ip);
  const state: PersistedState = {
    ip,
    clientPort,
    federationPort,
    registrationSharedSecret: secret(),
    macaroonSecretKey: secret(),
    formSecret: secret(),
  };
  await fs.writeFile(stateFile, JSON.stringify(state, null, 2) + "\n", { mode: 0o600 });
  return state;
}

/** A Synapse signing key file line (signedjson format) made with node:crypto. */
export function nodeSigningKey(): string {
  const { privateKey } = crypto.generateKeyPairSync("ed25519");
  const seed = Buffer.from(privateKey.export({ format: "jwk" }).d ?? "", "base64url");
  if (seed.length !== 32) throw new Error("ed25519 seed export failed");
  const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
  const version = Array.from(crypto.randomBytes(4), (b) => alphabet[b % alphabet.length]).join("");
  return `ed25519 a_${version} ${seed.toString("base64").replace(/=+$/, "")}\n`;
}

// synapse/config/server.py DEFAULT_IP_RANGE_BLOCKLIST (1.163.2) minus "127.0.0.0/8".
const DEFAULT_IP_RANGE_BLOCKLIST_WITHOUT_LOOPBACK_V4 = [
  "10.0.0.0/8",
  "172.16.0.0/12",
  "192.168.0.0/16",
  "100.64.0.0/10",
  "192.0.0.0/24",
  "169.254.0.0/16",
  "192.88.99.0/24",
  "198.18.0.0/15",
  "192.0.2.0/24",
  "198.51.100.0/24",
  "203.0.113.0/24",
  "224.0.0.0/4",
  "::1/128",
  "fe80::/10",
  "fc00::/7",
  "2001:db8::/32",
  "ff00::/8",
  "fec0::/10",
];

const generous = { per_second: 1000, burst_count: 10000 };

/** homeserver.yaml contents (as an object). Exported for tests and inspection. */
export function renderHomeserverConfig(o: {
  ip: string;
  dir: string;
  state: PersistedState;
  certPath: string;
  keyPath: string;
  appserviceRegistrationFiles: string[];
  federationAllowlistHosts?: string[] | undefined;
}): Record<string, unknown> {
  const { ip, dir, state } = o;
  const config: Record<string, unknown> = {
    server_name: `${ip}:${state.federationPort}`,
    public_baseurl: `http://${ip}:${state.clientPort}/`,
    pid_file: path.join(dir, "homeserver.pid"),
    listeners: [
      {
        port: state.clientPort,
        bind_addresses: [ip],
        type: "http",
        tls: false,
        x_forwarded: false,
        resources: [{ names: ["client"], compress: false }],
      },
      {
        port: state.federationPort,
        bind_addresses: [ip],
        type: "http",
        tls: true,
        // "client" too: https://<server name>/.well-known/matrix/client is where server discovery
        // looks (it answers public_baseurl, the plain-http client listener above), as a server
        // name's host does in a real deployment.
        resources: [{ names: ["federation", "openid", "client"], compress: false }],
      },
    ],
    tls_certificate_path: o.certPath,
    tls_private_key_path: o.keyPath,
    database: { name: "sqlite3", args: { database: path.join(dir, "homeserver.db") } },
    log_config: path.join(dir, "log.config.yaml"),
    media_store_path: path.join(dir, "media_store"),
    signing_key_path: path.join(dir, "signing.key"),
    report_stats: false,
    enable_metrics: false,
    // Never reach out to matrix.org: fetch keys from the origin servers themselves.
    trusted_key_servers: [],
    suppress_key_server_warning: true,
    // Federation is HTTPS between loopback addresses with self-signed certificates.
    federation_verify_certificates: false,
    // The default ip_range_blacklist covers 127.0.0.0/8; ip_range_whitelist (exact name in
    // synapse/config/server.py, 1.163) re-allows it for hostnames that resolve to loopback...
    ip_range_whitelist: ["127.0.0.0/8"],
    // ...but NOT for IP-literal server names like ours: the federation client wraps its agent in
    // a BlocklistingAgentWrapper that gets the blocklist without the allowlist
    // (synapse/http/matrixfederationclient.py), so `GET matrix-federation://127.0.0.11:PORT/...`
    // fails with "403: IP address blocked". Hence also a blocklist without 127.0.0.0/8.
    ip_range_blacklist: DEFAULT_IP_RANGE_BLOCKLIST_WITHOUT_LOOPBACK_V4,
    registration_shared_secret: state.registrationSharedSecret,
    enable_registration: false,
    // Test passwords: the default 12 bcrypt rounds cost ~300 ms per registration/login here.
    bcrypt_rounds: 4,
    macaroon_secret_key: state.macaroonSecretKey,
    form_secret: state.formSecret,
    app_service_config_files: o.appserviceRegistrationFiles,
    presence: { enabled: false },
    // The room's call API in the stripped state of its invites: a user let in from the lobby asks
    // the call's grant beside their room join (docs/deployment.md, "Synapse").
    room_prejoin_state: { additional_event_types: [["org.parley.call", ""]] },
    url_preview_enabled: false,
    // MSC4140 delayed events (MatrixRTC leave): a top-level option in synapse/config/server.py.
    // Delayed events are on when this is set and experimental_features.
    // msc4140_max_delayed_events_per_user (default 100) is non-zero.
    max_event_delay_duration: "24h",
    // Exact names from synapse/config/experimental.py (Synapse 1.163.2):
    //  - msc2409_to_device_messages_enabled: MSC2409/MSC4203 to-device messages in appservice
    //    transactions; the registration must also set `receive_ephemeral: true` (or the legacy
    //    `de.sorunome.msc2409.push_ephemeral: true`).
    //  - msc3202_transaction_extensions: MSC3202 device lists, OTK counts and fallback keys in
    //    appservice transactions; the registration must also set `org.matrix.msc3202: true`.
    //    MSC3202 device masquerading (`?device_id=` for appservices) has no flag: it is always
    //    on (synapse/api/auth/base.py get_appservice_user).
    //  - MSC4190 (appservice device management) has no homeserver flag: it is the per-appservice
    //    registration key `io.element.msc4190: true` (synapse/config/appservice.py).
    experimental_features: {
      msc2409_to_device_messages_enabled: true,
      msc3202_transaction_extensions: true,
      msc4140_max_delayed_events_per_user: 1000,
    },
    // Rate limits (names from synapse/config/ratelimiting.py, 1.163) raised for tests.
    rc_message: generous,
    rc_registration: generous,
    rc_registration_token_validity: generous,
    rc_login: { address: generous, account: generous, failed_attempts: generous },
    rc_joins: { local: generous, remote: generous },
    rc_joins_per_room: generous,
    rc_invites: { per_room: generous, per_user: generous, per_issuer: generous },
    rc_third_party_invite: generous,
    rc_3pid_validation: generous,
    rc_admin_redaction: generous,
    rc_key_requests: generous,
    rc_media_create: generous,
    rc_presence: { per_user: generous },
    rc_delayed_event_mgmt: generous,
    rc_room_creation: generous,
    rc_reports: generous,
    rc_user_directory: generous,
    rc_profile: generous,
    rc_federation: { window_size: 1000, sleep_limit: 10000, sleep_delay: 1, reject_limit: 100000, concurrent: 1000 },
    federation_rr_transactions_per_room_per_second: 1000,
  };
  if (o.federationAllowlistHosts) config["federation_domain_whitelist"] = o.federationAllowlistHosts;
  return config;
}

function renderLogConfig(logFile: string): string {
  return YAML.stringify({
    version: 1,
    formatters: {
      precise: { format: "%(asctime)s - %(name)s - %(lineno)d - %(levelname)s - %(request)s - %(message)s" },
    },
    handlers: {
      // Unbuffered, so the tail is useful when startup fails.
      file: { class: "logging.FileHandler", formatter: "precise", filename: logFile, encoding: "utf8" },
    },
    loggers: {
      // DEBUG here would log access tokens.
      "synapse.storage.SQL": { level: "INFO" },
    },
    root: { level: "INFO", handlers: ["file"] },
    disable_existing_loggers: false,
  });
}

export async function startSynapse(opts: SynapseOptions): Promise<SynapseHandle> {
  const t0 = performance.now();
  const dir = path.resolve(opts.dir);
  await fs.mkdir(dir, { recursive: true, mode: 0o700 });
  const python = path.join(synapseVenv(), "bin", "python");

  const [state, cert] = await Promise.all([
    loadOrCreateState(opts.ip, dir),
    generateSelfSignedCert({ dir, ip: opts.ip, name: "federation-tls" }),
  ]);
  await opts.onServerName?.(`${opts.ip}:${state.federationPort}`);
  const logFile = path.join(dir, "homeserver.log");
  const configFile = path.join(dir, "homeserver.yaml");
  const config = {
    ...renderHomeserverConfig({
      ip: opts.ip,
      dir,
      state,
      certPath: cert.certPath,
      keyPath: cert.keyPath,
      appserviceRegistrationFiles: opts.appserviceRegistrationFiles.map((f) => path.resolve(f)),
      federationAllowlistHosts: opts.federationAllowlistHosts,
    }),
    ...opts.extraConfig,
  };
  await Promise.all([
    fs.writeFile(configFile, "# Written by scripts/stack/synapse.ts; rewritten on every start.\n" + YAML.stringify(config), {
      mode: 0o600,
    }),
    fs.writeFile(path.join(dir, "log.config.yaml"), renderLogConfig(logFile)),
    fs.mkdir(path.join(dir, "media_store"), { recursive: true }),
  ]);

  // The signing key is created once per dir (a fresh key under an old server name would break
  // remote servers' key caches).
  const signingKey = path.join(dir, "signing.key");
  if (await fs.access(signingKey).then(() => true, () => false)) {
    // keep it
  } else if (opts.signingKey === "node") {
    await fs.writeFile(signingKey, nodeSigningKey(), { mode: 0o600, flag: "wx" });
  } else {
    try {
      await execFileP(python, ["-m", "synapse.app.homeserver", "-c", configFile, "--generate-keys"], {
        cwd: dir,
        timeout: 60_000,
      });
    } catch (err) {
      const e = err as { stdout?: string; stderr?: string; message: string };
      throw new Error(`synapse --generate-keys failed: ${e.message}\n${e.stdout ?? ""}\n${e.stderr ?? ""}`, {
        cause: err,
      });
    }
  }
  const tKeys = performance.now();

  const clientUrl = `http://${opts.ip}:${state.clientPort}`;
  const launch = () => startProcess({
    name: "synapse",
    command: python,
    args: ["-m", "synapse.app.homeserver", "-c", configFile],
    dir,
    logFile: path.join(dir, "synapse.stdout.log"),
    extraLogFiles: [logFile],
    readyTimeoutMs: opts.readyTimeoutMs ?? 120_000,
    stopTimeoutMs: 10_000,
    ready: ({ signal }) =>
      waitForHttp(`${clientUrl}/_matrix/client/versions`, opts.readyTimeoutMs ?? 120_000, {
        signal,
        intervalMs: 100,
      }),
  });
  let proc = await launch();
  const startupMs = Math.round(performance.now() - t0);
  if (process.env["PARLEY_STACK_DEBUG"]) {
    console.error(
      `[stack] synapse ${opts.ip}: keys ${Math.round(tKeys - t0)} ms, ready after ${startupMs} ms total`,
    );
  }

  return {
    serverName: `${opts.ip}:${state.federationPort}`,
    clientUrl,
    federationUrl: `https://${opts.ip}:${state.federationPort}`,
    certPath: cert.certPath,
    registrationSharedSecret: state.registrationSharedSecret,
    dir,
    logFile,
    startupMs,
    get process() {
      return proc;
    },
    async stop() {
      await proc.stop();
    },
    async kill9() {
      await proc.kill9();
    },
    async restart(o = {}) {
      await ((o.kill9 ?? true) ? proc.kill9() : proc.stop());
      proc = await launch();
    },
  };
}
