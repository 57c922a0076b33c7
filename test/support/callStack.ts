// Call API and SFU probes for integration tests on the stack: join a call with an OpenID token,
// open a signalling socket, and look into the Janus behind a call (its participants, its sessions).
import type { Institution } from "../../scripts/stack/institutions.ts";
import { createSfu } from "../../appservice/src/sfu/index.ts";
import { JanusTransport } from "../../appservice/src/sfu/transport.ts";
import type { SfuRoomRecord } from "../../appservice/src/store/store.ts";
import type { TestUser } from "./matrix.ts";
import { SignallingClient } from "./signalling.ts";

export async function joinCall(inst: Institution, body: unknown): Promise<{ status: number; json: Record<string, unknown> }> {
  const res = await fetch(`${inst.parley.url}/_parley/v1/calls/join`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
  return { status: res.status, json: (await res.json()) as Record<string, unknown> };
}

/** A session of `user` in the call of `room` (throws unless granted). */
export async function callSession(inst: Institution, user: TestUser, room: string): Promise<string> {
  const { status, json } = await joinCall(inst, { openid_token: await user.openIdToken(), room });
  if (status !== 200) throw new Error(`join refused: ${status} ${JSON.stringify(json)}`);
  return json.session as string;
}

export const signallingUrl = (inst: Institution) => `${inst.parley.url.replace(/^http/, "ws")}/_parley/v1/signal`;

/** A socket that said hello with `session` (throws unless the hello succeeded). */
export async function seated(inst: Institution, session: string, deviceId?: string): Promise<SignallingClient> {
  const ws = await SignallingClient.open(signallingUrl(inst));
  const hello = await ws.request({ type: "hello", session, ...(deviceId ? { device_id: deviceId } : {}) });
  if (hello.type !== "result") throw new Error(`hello refused: ${JSON.stringify(hello)}`);
  return ws;
}

/** Participants of a Janus room, asked of Janus itself (undefined: no such room). */
export async function janusParticipants(inst: Institution, room: SfuRoomRecord): Promise<string[] | undefined> {
  const sfu = await createSfu({ nodes: inst.parley.config.sfu.nodes });
  try {
    const list = await sfu.listParticipants({ node: room.node, roomId: room.room, secret: room.secret });
    return list.map((p) => String(p.display ?? p.id));
  } catch {
    return undefined;
  } finally {
    await sfu.stop();
  }
}

/** The ids of every session Janus holds, from its Admin API. */
export async function janusSessions(inst: Institution): Promise<number[]> {
  const j = inst.janus!;
  const admin = await JanusTransport.connect({ url: j.adminWsUrl, apiSecret: "", protocol: "janus-admin-protocol" });
  try {
    const reply = await admin.request({ janus: "list_sessions", admin_secret: j.adminSecret });
    return reply["sessions"] as number[];
  } finally {
    await admin.close();
  }
}

/**
 * A publisher's SDP offer (one Opus track) that Janus accepts: enough for a participant in the
 * room; no ICE will ever complete.
 */
export function audioOffer(): { type: "offer"; sdp: string } {
  const fingerprint = Array.from({ length: 32 }, (_, i) => (i * 7 + 16).toString(16).padStart(2, "0").toUpperCase()).join(":");
  const sdp = [
    "v=0",
    "o=- 4611731400430051336 2 IN IP4 127.0.0.1",
    "s=-",
    "t=0 0",
    "a=group:BUNDLE 0",
    "a=msid-semantic: WMS s",
    "m=audio 9 UDP/TLS/RTP/SAVPF 111",
    "c=IN IP4 0.0.0.0",
    "a=rtcp:9 IN IP4 0.0.0.0",
    "a=ice-ufrag:pRly",
    "a=ice-pwd:parleyparleyparleyparley",
    "a=ice-options:trickle",
    `a=fingerprint:sha-256 ${fingerprint}`,
    "a=setup:actpass",
    "a=mid:0",
    "a=sendonly",
    "a=msid:s t",
    "a=rtcp-mux",
    "a=rtpmap:111 opus/48000/2",
    "a=fmtp:111 minptime=10;useinbandfec=1",
    "a=ssrc:1111 cname:parley",
    "",
  ].join("\r\n");
  return { type: "offer", sdp };
}
