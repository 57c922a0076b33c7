// The one schema of Parley's config: its TypeScript type (z.infer), its validation
// (parseConfig in load.ts) and its sample (sample.ts walks the JSON Schema derived from it).
// Descriptions become the sample's comments; `examples` become its values where no default fits.
import { MAX_SESSIONS_PER_CALL } from "../http/signalling/protocol.ts";
import { z } from "zod";

/** Secrets in the sample carry this value; `parley -g` replaces it with fresh random tokens. */
export const GENERATE = "generate";

const secret = (description: string) =>
  z.string().min(1).meta({ description, examples: [GENERATE] });

const serverGlob = z
  .string()
  .regex(/^[A-Za-z0-9.*?\-[\]:]+$/, "a server name or glob such as example.org or *.gov.example")
  .meta({ description: "server name or glob (* and ?); with a port (example.org:8448) only that port matches" });

const slugPrefix = z
  .string()
  .regex(/^[a-z0-9._=\-/]*$/, "lower-case Matrix localpart characters only (a-z 0-9 . _ = - /)");

/** Call joins per client address: generous for an office behind one NAT, a trickle for a flood. */
export const JOIN_RATE_LIMIT_DEFAULT = { perMinute: 60, burst: 20 } as const;

/** A per-address token bucket of an HTTP route (http/rateLimit.ts), with its defaults and words. */
const addressRateLimit = (defaults: { perMinute: number; burst: number }, words: { perMinute: string; burst: string; whole: string }) =>
  z
    .strictObject({
      perMinute: z.int().min(1).max(100_000).default(defaults.perMinute).meta({ description: words.perMinute }),
      burst: z.int().min(1).max(10_000).default(defaults.burst).meta({ description: words.burst }),
    })
    .prefault({})
    .meta({ description: words.whole });

/** Meeting lookups per client address: one per meeting opened, so a little more than joins. */
export const LOOKUP_RATE_LIMIT_DEFAULT = { perMinute: 120, burst: 30 } as const;

/** Large meetings (docs/large-meetings.md): last-N videos, speakers, DTX, the bitrate cap of large calls. */
const mediaSchema = z
  .strictObject({
    lastN: z.int().min(0).max(50).default(9).meta({
      description: "Videos one viewer receives at most (the speakers, pinned and screen shares first; everyone's audio always); the client's layout may ask for fewer",
    }),
    layerKbps: z
      .tuple([z.int().min(1).max(100_000), z.int().min(1).max(100_000), z.int().min(1).max(100_000)])
      .default([150, 500, 1500])
      .meta({ description: "Estimated kbit/s of the low, medium and high simulcast layers: a viewer's downlink estimate lowers layers until their sum fits" }),
    keyframeIntervalMs: z.int().min(0).max(10_000).default(1000).meta({
      description: "Video resumes and layer switches that make Janus ask a publisher for a keyframe go out in at most one batch per publisher per this many ms",
    }),
    speakerHoldMs: z.int().min(0).max(10_000).default(1500).meta({
      description: "How long someone must talk without stopping before they become the newest speaker (first among the videos): a one-word interjection reorders nobody",
    }),
    speakerGapMs: z.int().min(0).max(10_000).default(600).meta({
      description: "A pause shorter than this (between words) does not end someone's turn as a speaker",
    }),
    speakersPushIntervalMs: z.int().min(50).max(10_000).default(300).meta({
      description: "At most one 'speakers' push per call per this many ms (changes in between are folded into it)",
    }),
    audioActivePackets: z.int().min(1).max(1000).default(5).meta({
      description: "Janus talk detection: audio packets per decision. Janus counts packets, not time; under Opus DTX silence sends one packet per 400 ms, so 5 notices silence within 0.4-1.6 s and speech within 100 ms",
    }),
    audioLevelAverage: z.int().min(1).max(127).default(25).meta({
      description: "Janus talk detection: talking when the packets' average audio level is below this (dBov magnitude: 0 loudest, 127 silence)",
    }),
    opusDtx: z.boolean().default(true).meta({ description: "Negotiate Opus DTX (usedtx=1): silent participants send almost no audio packets" }),
    largeCall: z
      .strictObject({
        from: z.int().min(2).max(100_000).default(10).meta({ description: "Members from which a call is large: every publisher's bitrate is capped" }),
        publisherBitrate: z.int().min(64_000).max(100_000_000).default(700_000).meta({
          description: "Bitrate cap (bit/s) of each publisher in a large call, sent as REMB by Janus (700 kbit/s keeps the low and medium simulcast layers)",
        }),
        liftedBitrate: z.int().min(64_000).max(100_000_000).default(2_500_000).meta({
          description: "Bitrate (bit/s) a publisher is given when its call is no longer large (browsers keep the last REMB, so the cap is raised, not just stopped)",
        }),
      })
      .prefault({})
      .meta({ description: "Large calls: a bitrate cap for every publisher" }),
  })
  .prefault({})
  .meta({ description: "Media of large meetings: last-N videos, the speaker order, Opus DTX, keyframe pacing (docs/large-meetings.md)" });

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
        encrypted: z.boolean().default(true).meta({ description: "Meeting rooms are created with m.room.encryption" }),
        aliasRooms: z
          .strictObject({
            perMinute: z.number().min(0).max(100_000).default(30).meta({
              description: "New meeting rooms made from aliases per minute, sustained (any alias lookup can ask for one)",
            }),
            burst: z.int().min(1).max(100_000).default(10).meta({
              description: "New meeting rooms made from aliases at once, before the per-minute rate applies",
            }),
            max: z.int().min(0).max(10_000_000).default(10_000).meta({
              description: "Meeting rooms made from aliases in total; lookups of new aliases beyond it are refused",
            }),
          })
          .prefault({})
          .meta({ description: "Limits on meeting rooms made on demand from aliases; a refused lookup creates and writes nothing" }),
        governance: z
          .strictObject({
            access: z.enum(["open", "institution", "invited"]).default("open").meta({
              description:
                "Default access level of new meetings (hosts change it per meeting): open = anyone on an allowed server joins; " +
                "institution = users of this server and of trustedServers join, others ask to join (knock); invited = only invited users join, others ask",
            }),
            hosts: z.enum(["first_local_joiner", "listed"]).default("first_local_joiner").meta({
              description:
                "Who becomes host (power level 100) of a meeting made from an alias: the first local user who joins it (and any local user " +
                "joining one without a joined host), or only the users in hostUsers",
            }),
            hostUsers: z.array(z.string().regex(/^@[^\s:]+:\S+$/, "a Matrix user id such as @alice:example.org")).default([]).meta({
              description: "With hosts: listed, the users who become hosts of alias meetings when they join",
              examples: [["@director:example.org"]],
            }),
            cohostLevel: z.int().min(1).max(99).default(50).meta({
              description: "Power level from which a user is a co-host; meeting rooms give it invite, kick, ban and org.parley.moderate",
            }),
            trustedServers: z.array(serverGlob).default([]).meta({
              description: "Servers whose users join 'institution' meetings directly, like this server's (their knock is admitted at once)",
              examples: [["partner.example"]],
            }),
            externalServers: z.array(serverGlob).default([]).meta({
              description:
                "Servers whose users are external (Tchap-style): always through the lobby, never power above 0; " +
                "meeting rooms carry im.vector.room.access_rules 'unrestricted' when any are listed",
              examples: [["externe.example"]],
            }),
            reactionsPerMinute: z.int().min(1).max(6000).default(30).meta({ description: "Reactions one user may send per minute in a call" }),
            reactionBurst: z.int().min(1).max(100).default(5).meta({ description: "Reactions one user may send at once" }),
          })
          .prefault({})
          .meta({ description: "Meeting governance: access levels, hosts and co-hosts, the lobby (docs/governance.md)" }),
        media: mediaSchema,
        lookupRateLimit: addressRateLimit(LOOKUP_RATE_LIMIT_DEFAULT, {
          perMinute: "Meeting lookups (GET /_parley/v1/meetings/{alias}) one client address may make per minute in the long run",
          burst: "Meeting lookups one address may make at once",
          whole: "Per-address limit on asking whether a meeting exists (the web client asks before it creates one)",
        }),
      })
      .meta({ description: "Meeting rooms" }),
    client: z
      .strictObject({
        widgetHostOrigins: z
          .array(z.string().regex(/^https?:\/\/[^/\s?#]+$/, "an origin such as https://app.element.io (scheme and host, no path)"))
          .default([])
          .meta({
            description:
              "Origins of the Matrix web clients that may embed the call widget (its frame-ancestors); empty: no page may embed it",
            examples: [["https://app.element.io"]],
          }),
        callBotLocalparts: z.array(slugPrefix.min(1)).default([]).meta({
          description:
            "Bot localparts of the other institutions' Parleys, besides appservice.botLocalpart: the web client sends a " +
            "user's identity without asking only to a call API that such a bot of an allowed server announced",
          examples: [["parley"]],
        }),
        insecureLoopbackCallApis: z.boolean().default(false).meta({
          description:
            "Let the web client send identity tokens over plain http to call APIs, and passwords to homeservers found by server " +
            "discovery, on loopback addresses (test stacks only; every other call API and discovered homeserver must be https)",
        }),
      })
      .prefault({})
      .meta({ description: "The web client Parley serves: who may embed it and where it sends users' identity" }),
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
        allowPrivateAddresses: z.boolean().default(false).meta({
          description:
            "Let server discovery connect to loopback, private (RFC 1918, CGNAT, ULA), link-local and other " +
            "non-public addresses. Off, only servers named in openidOverrides may live there; turn it on " +
            "only for a federation inside a private network",
        }),
        openidTokenLifetimeSeconds: z.int().min(60).max(86_400).default(3600).meta({
          description:
            "How long a used OpenID token is remembered so it cannot be used again; at least the lifetime " +
            "homeservers give their tokens (Synapse: 3600)",
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
        deadNodeSeconds: z
          .number()
          .min(0.5)
          .max(300)
          .default(5)
          .meta({
            description:
              "A Janus node unreachable this long is given up: its calls move to a live node and their clients renegotiate there (with one node, calls wait for it to come back)",
          }),
        warmSessions: z
          .int()
          .min(0)
          .max(64)
          .default(2)
          .meta({
            description:
              "Janus sessions each node keeps open ahead, their two VideoRoom handles attached: a participant's arrival takes one instead of waiting for three Janus round trips (docs/join.md). Refilled as they are taken; 0: none",
          }),
      })
      .prefault({})
      .meta({ description: "The SFU (Janus). Each node runs a config Parley generates (`parley --samples DIR` writes the template into DIR/janus)" }),
    turn: z
      .strictObject({
        urls: z
          .array(z.string().regex(/^turns?:[^\s?]+(\?transport=(udp|tcp))?$/, "a TURN URL such as turn:turn.example.org:3478?transport=udp"))
          .min(1)
          .meta({
            description: "The institution's own TURN server (coturn) as browsers reach it; every call grant carries these with fresh credentials",
            examples: [["turn:turn.example.org:3478?transport=udp", "turn:turn.example.org:3478?transport=tcp"]],
          }),
        secretFile: z.string().min(1).meta({
          description: "File holding coturn's static-auth-secret (use-auth-secret), at least 32 characters; relative paths are relative to the config file",
          examples: ["turn-secret"],
        }),
        ttlSeconds: z.int().min(60).max(86_400).default(43_200).meta({
          description: "Lifetime of the TURN credentials in a call grant. coturn checks it on every allocation refresh too, so a relayed call lasts at most this long after its join",
        }),
        relayOnly: z.boolean().default(false).meta({
          description: "Browsers send media only through the TURN relay (iceTransportPolicy relay): the SFU never learns their addresses, at the cost of a relay hop",
        }),
      })
      .optional()
      .meta({ description: "TURN (coturn, docs/turn.md): short-lived credentials in coturn's shared-secret scheme for every call grant. Without it, browsers and Janus connect directly" }),
    calls: z
      .strictObject({
        sessionTtlSeconds: z.int().min(30).max(86_400).default(600).meta({
          description: "Lifetime of a call session granted after an OpenID check (the WebSocket must open within it)",
        }),
        resumeGraceSeconds: z.int().min(1).max(600).default(30).meta({
          description: "After a Parley restart, how long a call session whose socket was open waits for its client to reconnect and take its media over (docs/resilience.md); later, the client joins again and publishes anew",
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
        joinRateLimit: addressRateLimit(JOIN_RATE_LIMIT_DEFAULT, {
          perMinute: "Call joins (POST /_parley/v1/calls/join) one client address may make per minute in the long run",
          burst: "Call joins one address may make at once (people behind one NAT arriving together)",
          whole:
            "Per-address limit on call joins, refused with 429 before the OpenID token is checked (each check costs a homeserver request). " +
            "Behind a reverse proxy every client has the proxy's address: raise the limit accordingly",
        }),
        e2ee: z
          .strictObject({
            required: z.boolean().default(true).meta({
              description: "Media must be end-to-end encrypted: Janus rooms are require_e2ee and Parley refuses publishers and subscribers that do not declare e2ee",
            }),
            keys: z.enum(["participant", "provisioned"]).default("participant").meta({
              description: "Who makes media keys in the rooms the bot creates (written into their org.parley.call state, which is what calls follow): each participant's device (sent over Olm to the other members), or the bot's Olm device (one call key, rotated on every membership change)",
            }),
            // Room version 12 ids have no server part: "!opaque" as well as "!opaque:server".
            provisionedRooms: z.array(z.string().regex(/^![^\s]+$/, "a room id (!…)")).default([]).meta({
              description: "Rooms the bot marks for provisioned keys, whatever `keys` says, when it writes their org.parley.call state",
            }),
          })
          .prefault({})
          .meta({ description: "End-to-end encryption of call media" }),
        idleEndSeconds: z.int().min(1).max(86_400).default(300).meta({
          description:
            "A call nobody has been in for this long loses its SFU room: a meeting-alias call ends (the next join starts a new one), a !meet call gets a new SFU room on its next join",
        }),
        limits: z
          .strictObject({
            sessionsPerCall: z.int().min(2).max(MAX_SESSIONS_PER_CALL).default(100).meta({
              description: `Live call sessions in one call (its participants' devices); the next join gets M_LIMIT_EXCEEDED ("the call is full"). Also the Janus room's publisher limit. At most ${MAX_SESSIONS_PER_CALL}: a subscriber's SDP for everyone must fit the signalling's size limit`,
            }),
            sessionsPerUserPerCall: z.int().min(1).max(1000).default(10).meta({
              description: "Live call sessions (granted or on an open socket) one user may hold in one call; more joins get M_LIMIT_EXCEEDED",
            }),
            socketsPerAddress: z.int().min(1).max(100_000).default(64).meta({
              description: "Open signalling sockets per remote address (behind a reverse proxy: the proxy's); more are answered M_LIMIT_EXCEEDED and closed",
            }),
            helloTimeoutSeconds: z.int().min(1).max(600).default(10).meta({
              description: "A signalling socket that has not sent a valid hello within this time is closed",
            }),
            standbySeconds: z.int().min(1).max(3600).default(300).meta({
              description:
                "A signalling socket opened ahead from the pre-join (hello with standby: its session checked, nobody seated) waits this long for its real hello at Join, at most as long as its session's grant, then is closed",
            }),
            prejoinSubscriptionsPerCall: z.int().min(0).max(MAX_SESSIONS_PER_CALL).default(20).meta({
              description:
                "Standby sockets in one call whose subscription to the call's media is made in the pre-join (a Janus session each, every stream paused until Join, so that Join finds the media connected: docs/join.md); past this, a pre-join subscribes at Join (0: never ahead)",
            }),
            invitedJoinWaitMs: z.int().min(0).max(10_000).default(3000).meta({
              description:
                "A user let in from the lobby (invited) is in the call from their hello on, while their own homeserver joins the room over federation: how long after the hello their join may take to reach this homeserver before their session ends (0: the hello needs the join)",
            }),
            lobbyGrantsPerCall: z.int().min(0).max(10_000).default(20).meta({
              description:
                "Knockers waiting in one call's lobby who may hold a call session asked from the lobby (their OpenID check done while they wait, so that once let in their call starts at once; seated only once invited, no TURN credentials until then); more are refused M_LIMIT_EXCEEDED and ask once let in (0: nobody gets a session before the let-in)",
            }),
            iceCandidatesBeforeMedia: z.int().min(1).max(10_000).default(100).meta({
              description: "ICE candidates a socket may send before its publish/subscribe exists; more get M_LIMIT_EXCEEDED",
            }),
            messagesPerSecond: z.int().min(1).max(10_000).default(50).meta({
              description: "Signalling messages per socket per second, sustained; a socket sending faster (past messageBurst) is answered M_LIMIT_EXCEEDED and closed",
            }),
            messageBurst: z.int().min(1).max(100_000).default(200).meta({
              description: "Signalling messages a socket may send at once above messagesPerSecond (a join trickles a few dozen ICE candidates)",
            }),
          })
          .prefault({})
          .meta({ description: "Bounds on what one client can make Parley hold" }),
      })
      .prefault({})
      .meta({ description: "Call sessions" }),
    guests: z
      .strictObject({
        mode: z.enum(["off", "lobby"]).default("off").meta({
          description:
            "off: no guests. lobby: a person without a Matrix account who opens a meeting link may give a name and wait in the " +
            "meeting's lobby (a Matrix knock) as a guest user of Parley's namespace until a host admits them; a meeting can still " +
            "refuse guests (guests: false in its org.parley.call state), and only meetings with a lobby (join rule knock) take them. " +
            "Switched back to off, no guest token works any more and the sweep still deactivates every guest",
        }),
        deactivateAfterSeconds: z.int().min(1).max(7 * 86_400).default(600).meta({
          description: "A guest who left the meeting room (or was denied, removed or banned) is deactivated this long afterwards, unless they joined again meanwhile",
        }),
        lobbyWaitSeconds: z.int().min(1).max(86_400).default(1800).meta({
          description: "A guest not joined to the meeting (still waiting in the lobby, or never knocking) this long after being made is deactivated",
        }),
        maxLifetimeSeconds: z.int().min(60).max(30 * 86_400).default(86_400).meta({
          description: "A guest is deactivated at the latest this long after being made, even while in the meeting",
        }),
        maxLive: z.int().min(1).max(100_000).default(200).meta({
          description: "Guests not yet deactivated, at most; more are refused with M_LIMIT_EXCEEDED",
        }),
        createRateLimit: z
          .strictObject({
            perMinute: z.int().min(1).max(100_000).default(10).meta({ description: "Guests one client address may make per minute in the long run" }),
            burst: z.int().min(1).max(10_000).default(5).meta({ description: "Guests one client address may make at once" }),
          })
          .prefault({})
          .meta({ description: "Per-address limit on POST /_parley/v1/guests, refused with 429 before the body is read (behind a reverse proxy: the proxy's address)" }),
        proxy: z
          .strictObject({
            requestsPerMinute: z.int().min(1).max(100_000).default(600).meta({
              description: "Requests one guest may send through the guest proxy per minute in the long run (Synapse does not rate-limit them: they reach it as the appservice)",
            }),
            burst: z.int().min(1).max(10_000).default(200).meta({ description: "Requests one guest may send at once (a client's start sends a few dozen)" }),
            concurrent: z.int().min(1).max(100).default(8).meta({ description: "Requests of one guest in flight at once (one of them is the /sync long poll)" }),
            maxBodyBytes: z.int().min(1024).max(16 * 1024 * 1024).default(512 * 1024).meta({
              description: "Largest request body a guest may send (to-device media keys for every device of a large call)",
            }),
            syncTimeoutSeconds: z.int().min(0).max(120).default(30).meta({ description: "Longest /sync long poll a guest may ask for" }),
          })
          .prefault({})
          .meta({ description: "The guests' door to the homeserver: Parley forwards an allow-list of client-server requests for them" }),
      })
      .prefault({})
      .meta({ description: "Guests by link: people without a Matrix account in meetings, admitted from the lobby by a host" }),
    store: z
      .strictObject({
        backend: z.enum(["sqlite", "postgres"]).default("sqlite").meta({
          description: "sqlite: one file next to Parley (one instance); postgres: a PostgreSQL database several Parley instances share (docs/store.md)",
        }),
        path: z.string().min(1).default("parley.db").meta({
          description: "SQLite database file (relative paths are relative to the config file); unused with postgres",
        }),
        postgres: z
          .strictObject({
            url: z
              .string()
              .regex(/^postgres(ql)?:\/\/[^:@/]*@?[^@]*$/, "a postgres://user@host:port/database URL without a password (use passwordFile or passwordEnv)")
              .optional()
              .meta({ description: "Connection URL without the password; or give host, port, user and database", examples: ["postgres://parley@db.example.org:5432/parley"] }),
            host: z.string().min(1).optional().meta({ description: "Server host (or the folder of its Unix socket)" }),
            port: z.int().min(1).max(65535).default(5432).meta({ description: "Server port" }),
            user: z.string().min(1).optional().meta({ description: "Role Parley logs in as" }),
            database: z.string().min(1).optional().meta({ description: "Database (Parley creates its tables there)" }),
            passwordFile: z.string().min(1).optional().meta({
              description: "File holding the password (relative to the config file); never written in this config",
              examples: ["/etc/parley/postgres-password"],
            }),
            passwordEnv: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/).optional().meta({ description: "Or: the environment variable holding the password" }),
            poolSize: z.int().min(1).max(200).default(10).meta({
              description: "Connections this instance holds at most (the server's max_connections is shared by every instance)",
            }),
            connectTimeoutSeconds: z.int().min(1).max(300).default(10).meta({ description: "How long a query waits for a free connection" }),
          })
          .refine((p) => !p.url || !/[?&]password=/i.test(p.url), { message: "no password in url: use passwordFile or passwordEnv", path: ["url"] })
          .refine((p) => !(p.passwordFile && p.passwordEnv), { message: "give passwordFile or passwordEnv, not both" })
          .optional()
          .meta({ description: "PostgreSQL connection, used when backend is postgres" }),
      })
      .refine((s) => s.backend !== "postgres" || s.postgres?.url !== undefined || s.postgres?.host !== undefined, {
        message: "backend postgres needs postgres.url, or postgres.host (with user and database)",
        path: ["postgres"],
      })
      .prefault({})
      .meta({ description: "Where Parley keeps its state (aliases, calls, guests, handled transactions)" }),
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
    health: z
      .strictObject({
        cacheMs: z.int().min(100).max(60_000).default(2000).meta({
          description:
            "GET /health answers from the last check while it is this recent (milliseconds); concurrent requests share one check. " +
            "/health is public: this bounds the homeserver requests it can cause to one per period, however often it is asked",
        }),
        intervalMs: z.int().min(500).max(600_000).default(5000).meta({
          description: "How often Parley checks its dependencies on its own, so that the metrics count outages when no one asks /health (milliseconds)",
        }),
        probeTimeoutMs: z.int().min(100).max(30_000).default(2000).meta({
          description: "How long one probe (homeserver, store write, crypto device) may take before it counts as failed (milliseconds)",
        }),
      })
      .prefault({})
      .meta({ description: "The health check (GET /health, docs/health.md) and the dependency metrics" }),
    privacy: z
      .strictObject({
        retentionDays: z.int().min(1).max(3650).default(183).meta({
          description:
            "Days Parley keeps its records of a person (attendance and audit events, ended calls' records, deactivated guests' rows); " +
            "a daily job purges older ones. 183 (about six months) by default: set what your institution's rules say",
        }),
        pseudonymizeRemoteUsers: z.boolean().default(false).meta({
          description:
            "Record users of other servers in the attendance and audit log under a pseudonym (a keyed hash of their Matrix id) " +
            "instead of their id; needs pseudonymKey. Off by default: the log is there to show who was in a meeting and who " +
            "removed whom, the same ids are in the meeting room's state on the homeserver anyway, and export and erase work either way",
        }),
        pseudonymKey: z.string().min(1).optional().meta({
          description:
            "Key of the pseudonyms (set it to 'generate' and run parley -g); kept here, never in the store beside the log. " +
            "Changing it makes earlier pseudonyms unreadable to export and erase",
          examples: [GENERATE],
        }),
        auditQueueMax: z.int().min(100).max(1_000_000).default(10_000).meta({
          description: "Attendance and audit events waiting to be written at most; more are dropped, counted and logged (a join never waits for the store)",
        }),
        auditBatchSize: z.int().min(1).max(10_000).default(200).meta({ description: "Attendance and audit events written per store transaction at most" }),
        auditFlushMs: z.int().min(1).max(60_000).default(500).meta({ description: "How long an attendance or audit event may wait to be written with others" }),
      })
      .prefault({})
      .meta({ description: "Personal data (docs/personal-data.md): the attendance and audit log and how long Parley keeps records of people" }),
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
