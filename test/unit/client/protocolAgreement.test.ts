// The client's outbound signalling messages against the server's zod schema (the source of
// truth): one protocol, checked from both ends. Governance requests are checked once the server's
// schema has them (until then those cases are skipped, not failed).
import { describe, expect, it } from "vitest";
import { clientMessage } from "../../../appservice/src/http/signalling/protocol.ts";
import { REACTIONS, type GovernanceRequest } from "../../../client/src/rtc/governanceProtocol.ts";
import type { ClientRequest } from "../../../client/src/rtc/protocol.ts";

const SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n";

const MEDIA: ClientRequest[] = [
  { type: "hello", session: "s", device_id: "D" },
  { type: "ping" },
  { type: "publish", jsep: { type: "offer", sdp: SDP }, simulcast: true, e2ee: true },
  { type: "subscribe", feeds: [{ feed: 1, mid: "0" }], e2ee: true },
  { type: "unsubscribe", feeds: [1] },
  { type: "answer", jsep: { type: "answer", sdp: SDP } },
  { type: "trickle", target: "publisher", candidate: { candidate: "candidate:1 1 udp 1 127.0.0.1 9 typ host", sdpMid: "0", sdpMLineIndex: 0 } },
  { type: "trickle", target: "subscriber", candidate: null },
  { type: "mute", kind: "audio", muted: true },
  { type: "source", kind: "video", source: "screen" },
  { type: "leave" },
];

const GOVERNANCE: GovernanceRequest[] = [
  { type: "hand", raised: true },
  ...REACTIONS.map((emoji): GovernanceRequest => ({ type: "react", emoji })),
  { type: "moderate", action: { action: "mute", user_id: "@b:y", kind: "audio" } },
  { type: "moderate", action: { action: "allow", user_id: "@b:y", kind: "video" } },
  { type: "moderate", action: { action: "mute_all", kind: "audio" } },
  { type: "moderate", action: { action: "stop_share", user_id: "@b:y" } },
  { type: "moderate", action: { action: "lower_hand", user_id: "@b:y" } },
  { type: "moderate", action: { action: "remove", user_id: "@b:y" } },
  { type: "moderate", action: { action: "ban", user_id: "@b:y", reason: "spam" } },
  { type: "moderate", action: { action: "end" } },
  { type: "moderate", action: { action: "admit", user_id: "@c:z" } },
  { type: "moderate", action: { action: "deny", user_id: "@c:z" } },
  { type: "moderate", action: { action: "admit_all" } },
  { type: "moderate", action: { action: "set_role", user_id: "@b:y", role: "cohost" } },
  { type: "moderate", action: { action: "settings", access: "institution", locked: true, guests: false } },
];

const serverKnows = (type: string) => clientMessage.options.some((o) => o.shape.type.value === type);

describe("the client's requests parse with the server's schema", () => {
  it.each(MEDIA.map((m, i) => [`${m.type} #${i}`, m] as const))("%s", (_, m) => {
    const parsed = clientMessage.safeParse({ ...m, id: 1 });
    expect(parsed.error?.issues ?? []).toEqual([]);
  });

  it.skipIf(!serverKnows("moderate")).each(GOVERNANCE.map((m, i) => [`${m.type} #${i}`, m] as const))("%s", (_, m) => {
    const parsed = clientMessage.safeParse({ ...m, id: 1 });
    expect(parsed.error?.issues ?? []).toEqual([]);
  });
});
