// The one schema of Parley's config: its TypeScript type (z.infer), its validation
// (parseConfig in load.ts) and its sample (sample.ts walks the JSON Schema derived from it).
// Descriptions become the sample's comments; `examples` become its values where no default fits.
import { z } from "zod";

/** Secrets in the sample carry this value; `parley -g` replaces it with fresh random tokens. */
export const GENERATE = "generate";

const secret = (description: string) =>
  z.string().min(1).meta({ description, examples: [GENERATE] });

const serverGlob = z
  .string()
  .regex(/^[A-Za-z0-9.*?\-[\]:]+$/, "a server name or glob such as example.org or *.gov.example")
  .meta({ description: "server name or glob (* and ?), compared without the port as in m.room.server_acl" });

const slugPrefix = z
  .string()
  .regex(/^[a-z0-9._=\-/]*$/, "lower-case Matrix localpart characters only (a-z 0-9 . _ = - /)");

/** Call joins per client address: generous for an office behind one NAT, a trickle for a flood. */
export const JOIN_RATE_LIMIT_DEFAULT = { perMinute: 60, burst: 20 } as const;

export const configSchema = z
  .strictObject({
    homeserver: z
      .strictObject({
        url: z.url({ error: "expected an absolute URL such as https://example.org" }).meta({
          description: "Client-server API base URL of the homeserver Parley is registered on",
          examples: ["http://127.0.0.1:8008"],
        }),
        publicUrl: z.url({ error: "expected an absolute URL such as https://example.org" }).optional().meta({
          description: "Client-server API URL as users' browsers reach it, when it differs from url",
          examples: ["https://matrix.example.org"],
        }),
        domain: z.string().min(1).meta({
          description: "The homeserver's server_name (the part after ':' in user ids)",
          examples: ["example.org"],
        }),
      })
      .meta({ description: "The institution's homeserver" }),
    appservice: z
      .strictObject({
        id: z.string().min(1).default("parley").meta({ description: "Registration id" }),
        bindAddress: z.string().default("127.0.0.1").meta({ description: "Address the HTTP server binds" }),
        port: z.int().min(1).max(65535).default(9000).meta({ description: "Port the HTTP server binds" }),
        url: z.url({ error: "expected an absolute URL such as https://example.org" }).meta({
          description: "URL at which the homeserver reaches this appservice (goes into the registration)",
          examples: ["http://127.0.0.1:9000"],
        }),
        asToken: secret("Token Parley uses towards the homeserver (as_token)"),
        hsToken: secret("Token the homeserver uses towards Parley (hs_token)"),
        botLocalpart: slugPrefix.min(1).default("parley").meta({ description: "Localpart of the bot user" }),
        userPrefix: slugPrefix.min(1).default("_parley_").meta({
          description: "Localpart prefix of users in Parley's exclusive namespace (guests)",
        }),
      })
      .meta({ description: "The application service registration and HTTP listener" }),
    meetings: z
      .strictObject({
        aliasPrefix: slugPrefix.min(1).default("meet-").meta({
          description: "Joining #<aliasPrefix><slug>:<domain> creates a meeting room on demand",
        }),
        publicUrl: z.url({ error: "expected an absolute URL such as https://example.org" }).meta({
          description: "Base URL of the web client and call API as users reach it (join links, org.parley.call)",
          examples: ["https://meet.example.org"],
        }),
        joinRule: z.enum(["public", "knock", "invite"]).default("public").meta({
          description: "Join rule of meeting rooms made from an alias; servers are limited by the allow-list either way",
        }),
        encrypted: z.boolean().default(true).meta({ description: "Meeting rooms are created with m.room.encryption" }),
      })
      .meta({ description: "Meeting rooms" }),
    federation: z
      .strictObject({
        allow: z.array(serverGlob).default([]).meta({
          description:
            "Servers whose users may use Parley (invite the bot, run commands, join meeting rooms). " +
            "The homeserver's own domain is always allowed. Becomes the allow list of m.room.server_acl.",
          examples: [["partner.example", "*.gov.example"]],
        }),
        openidOverrides: z.record(z.string().min(1), z.url({ error: "expected an absolute URL such as https://example.org" })).default({}).meta({
          description:
            "Server name -> federation base URL used to verify that server's OpenID tokens, bypassing " +
            "server discovery (private federations, split DNS)",
          examples: [{ "partner.example": "https://matrix.partner.example:8448" }],
        }),
        tlsVerify: z.boolean().default(true).meta({
          description: "Verify remote homeservers' TLS certificates when checking OpenID tokens",
        }),
        caFile: z.string().optional().meta({
          description: "Extra CA certificates (PEM) trusted for remote homeservers, e.g. a private federation's CA",
        }),
      })
      .prefault({})
      .meta({ description: "Federation policy; keep it in line with Synapse's federation_domain_whitelist" }),
    sfu: z
      .strictObject({
        nodes: z
          .array(
            z.strictObject({
              id: z.string().regex(/^[a-z0-9-]+$/, "lower-case letters, digits and '-'").meta({ description: "Node name" }),
              url: z.url({ error: "expected an absolute URL such as ws://127.0.0.1:8188" }).meta({
                description: "Janus API WebSocket URL (loopback or a private network; never public)",
                examples: ["ws://127.0.0.1:8188"],
              }),
              apiSecret: secret("Janus api_secret"),
              adminKey: secret("Janus VideoRoom admin_key"),
            }),
          )
          .default([])
          .meta({ description: "Janus nodes; calls are placed on the least loaded" }),
      })
      .prefault({})
      .meta({ description: "The SFU (Janus). Parley writes each node's config: parley --janus-config" }),
    calls: z
      .strictObject({
        sessionTtlSeconds: z.int().min(30).max(86_400).default(600).meta({
          description: "Lifetime of a call session granted after an OpenID check (the WebSocket must open within it)",
        }),
        iceServers: z
          .array(
            z.strictObject({
              urls: z.union([z.string(), z.array(z.string())]),
              username: z.string().optional(),
              credential: z.string().optional(),
            }),
          )
          .default([])
          .meta({ description: "STUN/TURN servers handed to clients" }),
        joinRateLimit: z
          .strictObject({
            perMinute: z.int().min(1).max(100_000).default(JOIN_RATE_LIMIT_DEFAULT.perMinute).meta({
              description: "Call joins (POST /_parley/v1/calls/join) one client address may make per minute in the long run",
            }),
            burst: z.int().min(1).max(10_000).default(JOIN_RATE_LIMIT_DEFAULT.burst).meta({
              description: "Call joins one address may make at once (people behind one NAT arriving together)",
            }),
          })
          .prefault({})
          .meta({
            description:
              "Per-address limit on call joins, refused with 429 before the OpenID token is checked (each check costs a homeserver request). " +
              "Behind a reverse proxy every client has the proxy's address: raise the limit accordingly",
          }),
        e2ee: z
          .strictObject({
            required: z.boolean().default(true).meta({
              description: "Media must be end-to-end encrypted: Janus rooms are require_e2ee and Parley refuses publishers and subscribers that do not declare e2ee",
            }),
            keys: z.enum(["participant", "provisioned"]).default("participant").meta({
              description: "Who makes media keys: each participant's device (sent over Olm to the other members), or the bot's Olm device (one call key, rotated on every membership change)",
            }),
            // Room version 12 ids have no server part: "!opaque" as well as "!opaque:server".
            provisionedRooms: z.array(z.string().regex(/^![^\s]+$/, "a room id (!…)")).default([]).meta({
              description: "Rooms whose calls use provisioned keys whatever `keys` says",
            }),
          })
          .prefault({})
          .meta({ description: "End-to-end encryption of call media" }),
      })
      .prefault({})
      .meta({ description: "Call sessions" }),
    store: z
      .strictObject({
        path: z.string().min(1).default("parley.db").meta({
          description: "SQLite database file (relative paths are relative to the config file)",
        }),
      })
      .prefault({})
      .meta({ description: "Embedded store" }),
    crypto: z
      .strictObject({
        storeKey: secret("Key of the bot's Olm device store at rest (AES-256-GCM); losing it means a new device"),
        path: z.string().min(1).default("parley-crypto.bin").meta({
          description: "File holding the bot's Olm device, encrypted (relative paths are relative to the config file)",
        }),
      })
      .optional()
      .meta({ description: "The bot's end-to-end encryption device (commands and notices in encrypted rooms); without it the bot ignores encrypted rooms" }),
    metrics: z
      .strictObject({
        enabled: z.boolean().default(true).meta({ description: "Serve Prometheus metrics (GET /metrics) on their own listener" }),
        bindAddress: z.string().default("127.0.0.1").meta({
          description: "Address the metrics listener binds (loopback by default: metrics are for the operator, never the public)",
        }),
        port: z.int().min(0).max(65535).default(9001).meta({
          description: "Port of the metrics listener (never the appservice port; 0 picks a free one)",
        }),
      })
      .prefault({})
      .meta({ description: "Prometheus metrics, on a listener apart from the appservice and call API" }),
    logging: z
      .strictObject({
        level: z.enum(["fatal", "error", "warn", "info", "debug", "trace"]).default("info"),
      })
      .prefault({})
      .meta({ description: "Logging" }),
  })
  ;

export type ParleyConfig = z.infer<typeof configSchema>;
/** Config as written in a file, before defaults are applied. */
export type ParleyConfigInput = z.input<typeof configSchema>;
