// One protocol, checked from both ends: the client's outbound messages against the server's zod
// schema (the source of truth), and pushes typed as the server types them through the client's
// guards.
import { describe, expect, it } from "vitest";
import { REACTIONS as SERVER_REACTIONS } from "../../../appservice/src/calls/moderation.ts";
import { clientMessage } from "../../../appservice/src/http/signalling/protocol.ts";
import { SIGNALLING_PATH } from "../../../appservice/src/http/signalling/server.ts";
import { DEFAULT_SIGNALLING_PATH } from "../../../client/src/rtc/callApi.ts";
import { SUBSCRIBE_FEEDS_MAX } from "../../../client/src/rtc/subscriber.ts";
import { REACTIONS, type GovernanceRequest } from "../../../client/src/rtc/governanceProtocol.ts";
import { parsePush, type ClientRequest } from "../../../client/src/rtc/protocol.ts";
import type { CallPush } from "../../../appservice/src/calls/callRoster.ts";
import type { LobbyEntry } from "../../../appservice/src/calls/governance.ts";

const SDP = "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\n";

const MEDIA: ClientRequest[] = [
  { type: "hello", session: "s", device_id: "D" },
  { type: "hello", session: "s", standby: true },
  { type: "hello", session: "s", standby: true, prepare: true },
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


describe("the client's requests parse with the server's schema", () => {
  it("offers exactly the reactions the server accepts", () => {
    expect([...REACTIONS]).toEqual([...SERVER_REACTIONS]);
  });

  it("opens its standby socket at the path the server serves", () => {
    expect(DEFAULT_SIGNALLING_PATH).toBe(SIGNALLING_PATH);
  });

  it("names at most as many m-lines in one subscribe as the server takes (SUBSCRIBE_FEEDS_MAX)", () => {
    const feeds = (n: number) => Array.from({ length: n }, (_, i) => ({ feed: i, mid: "1" }));
    expect(clientMessage.safeParse({ type: "subscribe", id: 1, feeds: feeds(SUBSCRIBE_FEEDS_MAX) }).success).toBe(true);
    expect(clientMessage.safeParse({ type: "subscribe", id: 1, feeds: feeds(SUBSCRIBE_FEEDS_MAX + 1) }).success).toBe(false);
  });

  it.each(MEDIA.map((m, i) => [`${m.type} #${i}`, m] as const))("%s", (_, m) => {
    const parsed = clientMessage.safeParse({ ...m, id: 1 });
    expect(parsed.error?.issues ?? []).toEqual([]);
  });

  it.each(GOVERNANCE.map((m, i) => [`${m.type} #${i}`, m] as const))("%s", (_, m) => {
    const parsed = clientMessage.safeParse({ ...m, id: 1 });
    expect(parsed.error?.issues ?? []).toEqual([]);
  });
});

const KNOCK: LobbyEntry = { user_id: "@carol:b.example", display_name: "Carol (guest)", avatar_url: null, server: "b.example", reason: "hi", since: 1 };
const PUSHES: CallPush[] = [
  { type: "participants", participants: [{ user_id: "@a:x", device_id: "D", feed_id: 1, streams: [{ mid: "0", kind: "audio" }], muted: { audio: false, video: false }, role: "host", hand: 5, forced: { audio: true, video: false } }] },
  { type: "moderated", kind: "audio", muted: true, by: "@h:x" },
  { type: "stop_share", by: "@h:x" },
  ...SERVER_REACTIONS.map((emoji): CallPush => ({ type: "reaction", user_id: "@b:y", emoji })),
  { type: "meeting", access: "institution", locked: true, guests: false, ended: { by: "@h:x", at: 9 }, you: { role: "cohost", can: ["mute", "admit"] } },
  { type: "lobby", waiting: [KNOCK] },
  { type: "arriving", user_id: "@c:z", device_id: "CDEV" },
  { type: "let_in", user_id: "@c:z" },
];

// `view` is the last-N request (issue 10): the client's requests parse with the server's schema.
const VIEWS: ClientRequest[] = [
  { type: "view", videos: 0 },
  { type: "view", videos: 9, pinned: ["3", "4"], tiles: [{ feed: "3", height: 720 }, { feed: "4", height: 0 }], downlink_kbps: 2500 },
  { type: "view", videos: 4, tiles: [{ feed: "7", height: 300 }], page: 2 },
];

describe("the client's view requests parse with the server's schema", () => {
  it.each(VIEWS.map((m, i) => [`view #${i}`, m] as const))("%s", (_, m) => {
    const parsed = clientMessage.safeParse({ ...m, id: 1 });
    expect(parsed.error?.issues ?? []).toEqual([]);
  });
});

describe("the server's pushes pass the client's guards", () => {
  it.each(PUSHES.map((p, i) => [`${p.type} #${i}`, p] as const))("%s", (_, p) => {
    expect(parsePush(p as Record<string, unknown>)).toEqual({ push: p });
  });
});
