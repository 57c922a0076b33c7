import { describe, expect, it } from "vitest";
import { layerForHeight } from "../../load/planes.ts";
import { EXT, extmapIds, splitSdp, ssrcOf, ssrcsByMid, withSsrcSimulcast } from "../../load/sdp.ts";

const offer = [
  "v=0",
  "o=- 1 0 IN IP4 0.0.0.0",
  "s=-",
  "t=0 0",
  "a=group:BUNDLE 0 1",
  "m=audio 9 UDP/TLS/RTP/SAVPF 111",
  "a=mid:0",
  "a=ssrc:1111 cname:x",
  "a=extmap:1 urn:ietf:params:rtp-hdrext:sdes:mid",
  "a=extmap:2 urn:ietf:params:rtp-hdrext:ssrc-audio-level",
  "m=video 9 UDP/TLS/RTP/SAVPF 96",
  "a=mid:1",
  "a=ssrc:2222 cname:x",
  "a=extmap:3 urn:ietf:params:rtp-hdrext:sdes:mid",
  "",
].join("\r\n");

describe("load SDP helpers", () => {
  it("turns the video section into one SIM group, low layer first, and leaves audio alone", () => {
    const out = withSsrcSimulcast(offer, [10, 20, 30], "c");
    const video = splitSdp(out).sections.find((s) => s.kind === "video")!;
    expect(video.lines).toContain("a=ssrc-group:SIM 10 20 30");
    expect(video.lines.filter((l) => l.startsWith("a=ssrc:2222"))).toEqual([]);
    expect(video.lines.filter((l) => l.startsWith("a=ssrc:10 "))).toEqual(["a=ssrc:10 cname:c", "a=ssrc:10 msid:c video"]);
    expect(ssrcOf(out, "audio")).toBe(1111);
    expect(out.endsWith("\r\n")).toBe(true);
  });

  it("reads extmap ids per kind", () => {
    expect(extmapIds(offer, "audio").get(EXT.audioLevel)).toBe(2);
    expect(extmapIds(offer, "video").get(EXT.mid)).toBe(3);
    expect(extmapIds(offer, "video").has(EXT.audioLevel)).toBe(false);
  });

  it("maps a subscriber offer's SSRCs to mids, skipping RTX and rejected m-lines", () => {
    const sub = [
      "v=0",
      "m=audio 9 UDP/TLS/RTP/SAVPF 111",
      "a=mid:0",
      "a=ssrc:5 cname:janus",
      "m=video 9 UDP/TLS/RTP/SAVPF 96 97",
      "a=mid:1",
      "a=ssrc-group:FID 6 7",
      "a=ssrc:6 cname:janus",
      "a=ssrc:7 cname:janus",
      "m=video 0 UDP/TLS/RTP/SAVPF 96",
      "a=mid:2",
      "a=ssrc:8 cname:janus",
    ].join("\r\n");
    expect([...ssrcsByMid(sub)]).toEqual([
      [5, { mid: "0", kind: "audio" }],
      [6, { mid: "1", kind: "video" }],
    ]);
  });

  it("the baseline's layer rule: no tile 0, <200 px 0, <480 px 1, else 2", () => {
    expect([undefined, 0, 199, 200, 479, 480, 2160].map(layerForHeight)).toEqual([0, 0, 0, 1, 1, 2, 2]);
  });
});
