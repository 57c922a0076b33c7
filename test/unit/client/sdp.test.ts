// Opus DTX in the publisher's offer: usedtx=1 and useinbandfec=1 on every Opus payload, nothing
// else touched.
import { describe, expect, it } from "vitest";
import { hasOpusDtx, withOpusDtx } from "../../../client/src/rtc/sdp.ts";

const CHROME = [
  "v=0",
  "m=audio 9 UDP/TLS/RTP/SAVPF 111 63 9 0",
  "a=rtpmap:111 opus/48000/2",
  "a=rtcp-fb:111 transport-cc",
  "a=fmtp:111 minptime=10;useinbandfec=1",
  "a=rtpmap:63 red/48000/2",
  "a=fmtp:63 111/111",
  "a=rtpmap:9 G722/8000",
  "m=video 9 UDP/TLS/RTP/SAVPF 96",
  "a=rtpmap:96 VP8/90000",
  "",
].join("\r\n");

describe("withOpusDtx", () => {
  it("adds usedtx=1 to Chromium's Opus line and keeps the rest of the offer as it was", () => {
    const out = withOpusDtx(CHROME);
    expect(out).toBe(CHROME.replace("a=fmtp:111 minptime=10;useinbandfec=1", "a=fmtp:111 minptime=10;useinbandfec=1;usedtx=1"));
    expect(hasOpusDtx(out)).toBe(true);
    expect(hasOpusDtx(CHROME)).toBe(false);
  });
  it("is idempotent and overrides usedtx=0, keeping useinbandfec on", () => {
    const off = CHROME.replace("minptime=10;useinbandfec=1", "usedtx=0;minptime=10");
    expect(withOpusDtx(off)).toContain("a=fmtp:111 minptime=10;useinbandfec=1;usedtx=1\r\n");
    expect(withOpusDtx(withOpusDtx(CHROME))).toBe(withOpusDtx(CHROME));
  });
  it("gives an Opus payload without parameters an fmtp line, and leaves an SDP without Opus alone", () => {
    const bare = "v=0\nm=audio 9 RTP/AVP 109\na=rtpmap:109 OPUS/48000/2\n";
    expect(withOpusDtx(bare)).toBe("v=0\nm=audio 9 RTP/AVP 109\na=rtpmap:109 OPUS/48000/2\na=fmtp:109 useinbandfec=1;usedtx=1\n");
    const video = "v=0\r\nm=video 9 UDP/TLS/RTP/SAVPF 96\r\na=rtpmap:96 VP8/90000\r\na=fmtp:96 x=1\r\n";
    expect(withOpusDtx(video)).toBe(video);
    expect(hasOpusDtx(video)).toBe(false);
  });
});
