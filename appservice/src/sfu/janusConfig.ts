// Parley generates the Janus 1.1.x configuration (libconfig syntax) it runs with: the core, the
// WebSockets transport and the VideoRoom plugin. API on loopback, fresh secrets, a fixed DTLS
// certificate, a bounded RTP range and a non-zero reclaim timeout. No imports: no Matrix here.

export interface JanusConfigInput {
  /** Janus API WebSockets port (plain ws, bound to 127.0.0.1). */
  wsPort: number;
  /** Admin API WebSockets port (plain ws, bound to 127.0.0.1). */
  adminWsPort: number;
  /** general.api_secret: every Janus API request must carry it as "apisecret". */
  apiSecret: string;
  /** general.admin_secret: every Admin API request must carry it as "admin_secret". */
  adminSecret: string;
  /** VideoRoom general.admin_key: needed to create rooms (and, locked, to RTP-forward). */
  videoroomAdminKey: string;
  /** Inclusive UDP range for RTP/RTCP (ICE host candidates). */
  rtpPortRange: [number, number];
  /** DTLS certificate and key file paths (PEM); without them Janus makes a new one at each start. */
  certPem?: string | undefined;
  certKey?: string | undefined;
  /** general.reclaim_session_timeout: seconds a session survives its transport going away. */
  reclaimSessionTimeoutS: number;
  /** Janus API session_timeout in seconds (default 60). */
  sessionTimeoutS?: number | undefined;
  /**
   * nat.ice_enforce_list: the interfaces/addresses ICE may gather host candidates on (e.g. the
   * media interface of a multi-homed host). Janus 1.1.2 never gathers on loopback: "lo" or
   * "127.0.0.1" match nothing, and it then falls back to every non-loopback address.
   */
  iceEnforceList?: string | undefined;
  /**
   * general.interface: the address Janus puts in its SDP. Without it Janus finds its address by
   * connecting a UDP socket to 1.2.3.4 (and ::1.2.3.4): no packet leaves, but it is an attempt to
   * address the internet, which a deployment that contacts nothing else should not make.
   */
  localIp?: string | undefined;
  /** general.server_name (default "parley-janus"). */
  serverName?: string | undefined;
}

/** Quotes a libconfig string. */
function q(value: string): string {
  if ([...value].some((c) => c.charCodeAt(0) < 0x20)) throw new Error("janus config: control characters in a string value");
  return `"${value.replace(/\\/g, "\\\\").replace(/"/g, '\\"')}"`;
}

function int(value: number, what: string): string {
  if (!Number.isInteger(value) || value < 0) throw new Error(`janus config: ${what} must be a non-negative integer`);
  return String(value);
}

/** A dropped control socket must not kill every call's media: zero is refused. */
function positive(value: number, what: string): string {
  if (!Number.isInteger(value) || value < 1) throw new Error(`janus config: ${what} must be a positive integer`);
  return String(value);
}

function port(value: number, what: string): string {
  if (!Number.isInteger(value) || value < 1 || value > 65535) throw new Error(`janus config: bad ${what} ${value}`);
  return String(value);
}

/** Janus 1.1.2 modules (Debian) that Parley never loads. */
const OTHER_PLUGINS = [
  "libjanus_audiobridge.so", "libjanus_echotest.so", "libjanus_nosip.so", "libjanus_recordplay.so",
  "libjanus_sip.so", "libjanus_streaming.so", "libjanus_textroom.so", "libjanus_videocall.so",
  "libjanus_voicemail.so", "libjanus_lua.so", "libjanus_duktape.so",
];
const OTHER_TRANSPORTS = [
  "libjanus_http.so", "libjanus_pfunix.so", "libjanus_rabbitmq.so", "libjanus_mqtt.so", "libjanus_nanomsg.so",
];

/** filename -> contents, for Janus's configs folder. */
export function renderJanusConfig(o: JanusConfigInput): Record<string, string> {
  const [rtpMin, rtpMax] = o.rtpPortRange;
  port(rtpMin, "rtpPortRange start");
  port(rtpMax, "rtpPortRange end");
  if (rtpMin > rtpMax) throw new Error("janus config: rtpPortRange start > end");

  const janus = `# Written by Parley (appservice/src/sfu/janusConfig.ts).
general: {
	server_name = ${q(o.serverName ?? "parley-janus")}${o.localIp === undefined ? "" : `
	interface = ${q(o.localIp)}`}
	api_secret = ${q(o.apiSecret)}
	admin_secret = ${q(o.adminSecret)}
	debug_level = 4
	debug_timestamps = true
	debug_colors = false
	session_timeout = ${int(o.sessionTimeoutS ?? 60, "sessionTimeoutS")}
	# Janus 1.1.2 reads this from "general" (see /etc/janus/janus.jcfg).
	reclaim_session_timeout = ${positive(o.reclaimSessionTimeoutS, "reclaimSessionTimeoutS")}
	hide_dependencies = true
}

${o.certPem === undefined || o.certKey === undefined ? "" : `certificates: {
	cert_pem = ${q(o.certPem)}
	cert_key = ${q(o.certKey)}
}
`}
media: {
	rtp_port_range = "${rtpMin}-${rtpMax}"
}

nat: {
	ice_lite = false
	nice_debug = false
	ice_ignore_list = "vmnet"${o.iceEnforceList === undefined ? "" : `\n\tice_enforce_list = ${q(o.iceEnforceList)}`}
}

# Only VideoRoom and the WebSockets transport: every other module Debian's package ships is
# disabled here too, not only left out of the folders Parley points Janus at.
plugins: {
	disable = "${OTHER_PLUGINS.join(",")}"
}

transports: {
	disable = "${OTHER_TRANSPORTS.join(",")}"
}

loggers: {
	disable = "libjanus_jsonlog.so"
}

events: {
	broadcast = false
}
`;

  // Binding (checked with `ss -ltnp` against Janus 1.1.2 + libwebsockets 4.1.6): ws_ip is
  // translated by Janus into the name of the interface that owns the address ("lo" for
  // 127.0.0.1) and libwebsockets then binds that interface's address. An address no interface
  // owns (e.g. 127.0.0.12, which is only routed to lo) silently falls back to ws_interface, and
  // without that to *all* addresses; an IP literal in ws_interface also binds to all. So: ws_ip
  // 127.0.0.1 (the only loopback address lo owns) with ws_interface "lo" as the fallback.
  const websockets = `# Written by Parley (appservice/src/sfu/janusConfig.ts).
general: {
	json = "compact"
	events = false
	ws = true
	ws_port = ${port(o.wsPort, "wsPort")}
	ws_ip = "127.0.0.1"
	ws_interface = "lo"
	wss = false
}

admin: {
	admin_ws = true
	admin_ws_port = ${port(o.adminWsPort, "adminWsPort")}
	admin_ws_ip = "127.0.0.1"
	admin_ws_interface = "lo"
	admin_wss = false
}
`;

  const videoroom = `# Written by Parley (appservice/src/sfu/janusConfig.ts). No preconfigured rooms.
general: {
	admin_key = ${q(o.videoroomAdminKey)}
	lock_rtp_forward = true
	string_ids = true
	events = false
}
`;

  return {
    "janus.jcfg": janus,
    "janus.transport.websockets.jcfg": websockets,
    "janus.plugin.videoroom.jcfg": videoroom,
  };
}
