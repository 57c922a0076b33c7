// The `view` message (docs/large-meetings.md): parsed to the protocol's limits (M_BAD_JSON past
// them, as the socket answers every malformed message), then checked for repeats (M_INVALID_PARAM).
import { describe, expect, it } from "vitest";
import { clientMessage, MAX_SDP_BYTES, MAX_SESSIONS_PER_CALL, VIEW_LIMITS } from "../../../appservice/src/http/signalling/protocol.ts";
import { viewOf } from "../../../appservice/src/http/signalling/media.ts";

const parse = (m: Record<string, unknown>) => clientMessage.safeParse({ type: "view", id: 1, ...m });
const problems = (m: Record<string, unknown>) => {
  const r = parse(m);
  return r.success ? [] : r.error.issues.map((i) => i.path.join("."));
};
const tiles = (n: number, height = 100) => Array.from({ length: n }, (_, i) => ({ feed: `p-${i}`, height }));

describe("SDP size", () => {
  // A subscriber's answer for a call at the session limit: two m-lines per other participant, at
  // the size of Chromium's recvonly m-lines with their extensions and feedback (about 700 bytes).
  const mline = (i: number) => `m=video 9 UDP/TLS/RTP/SAVPF 96 97\r\na=mid:${i}\r\n${"a=rtcp-fb:96 goog-remb\r\n".repeat(27)}`;
  const answer = (mlines: number) => `v=0\r\n${Array.from({ length: mlines }, (_, i) => mline(i)).join("")}`;
  const message = (sdp: string) => clientMessage.safeParse({ type: "answer", id: 1, jsep: { type: "answer", sdp }, e2ee: true });

  it("takes the answer of a call at the session limit, and refuses one past MAX_SDP_BYTES", () => {
    const full = answer(2 * (MAX_SESSIONS_PER_CALL - 1));
    expect(full.length).toBeGreaterThan(200 * 1024);
    expect(full.length).toBeLessThan(MAX_SDP_BYTES);
    expect(message(full).success).toBe(true);
    expect(message(full + "x".repeat(MAX_SDP_BYTES - full.length + 1)).success).toBe(false);
  });
});

describe("view message", () => {
  it("takes a full view at its limits", () => {
    const r = parse({ videos: VIEW_LIMITS.videos, pinned: ["a", "b", "c", "d"], tiles: tiles(VIEW_LIMITS.tiles, VIEW_LIMITS.height), downlink_kbps: 2500.5, page: VIEW_LIMITS.page });
    expect(r.success).toBe(true);
    expect(parse({ videos: 0 }).success).toBe(true);
  });

  it.each([
    [{ videos: 201 }, "videos"],
    [{ videos: -1 }, "videos"],
    [{ videos: 1.5 }, "videos"],
    [{ videos: "9" }, "videos"],
    [{}, "videos"],
    [{ videos: 9, pinned: ["a", "b", "c", "d", "e"] }, "pinned"],
    [{ videos: 9, pinned: [""] }, "pinned.0"],
    [{ videos: 9, pinned: ["x".repeat(65)] }, "pinned.0"],
    [{ videos: 9, tiles: tiles(201) }, "tiles"],
    [{ videos: 9, tiles: [{ feed: "a", height: 4321 }] }, "tiles.0.height"],
    [{ videos: 9, tiles: [{ feed: "a", height: -1 }] }, "tiles.0.height"],
    [{ videos: 9, tiles: [{ feed: "a" }] }, "tiles.0.height"],
    [{ videos: 9, downlink_kbps: -5 }, "downlink_kbps"],
    [{ videos: 9, downlink_kbps: "fast" }, "downlink_kbps"],
    [{ videos: 9, page: 1001 }, "page"],
    [{ videos: 9, page: -1 }, "page"],
    [{ videos: 9, page: 1.5 }, "page"],
  ])("refuses %j (%s)", (m, path) => {
    expect(problems(m)).toContain(path);
  });

  it("a feed pinned twice or a tile given twice is M_INVALID_PARAM; the rest becomes the call's view", () => {
    const ok = (m: Record<string, unknown>) => {
      const r = parse(m);
      if (!r.success || r.data.type !== "view") throw new Error("not a view");
      return r.data;
    };
    expect(() => viewOf(ok({ videos: 2, pinned: ["a", "a"] }))).toThrow(expect.objectContaining({ errcode: "M_INVALID_PARAM" }));
    expect(() => viewOf(ok({ videos: 2, tiles: [{ feed: "a", height: 1 }, { feed: "a", height: 2 }] }))).toThrow(expect.objectContaining({ errcode: "M_INVALID_PARAM" }));
    expect(viewOf(ok({ videos: 2 }))).toEqual({ videos: 2, pinned: [], tiles: [] });
    expect(viewOf(ok({ videos: 2, pinned: ["b"], tiles: [{ feed: "b", height: 720 }], downlink_kbps: 900 }))).toEqual({
      videos: 2, pinned: ["b"], tiles: [{ feed: "b", height: 720 }], downlinkKbps: 900,
    });
    expect(viewOf(ok({ videos: 2, page: 3 }))).toEqual({ videos: 2, pinned: [], tiles: [], page: 3 });
    expect(viewOf(ok({ videos: 2, page: 0 }))).toEqual({ videos: 2, pinned: [], tiles: [] });
  });
});
