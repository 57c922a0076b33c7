// SDP munging, kept to what Janus and Chromium agree on: the publisher asks for Opus DTX
// (usedtx=1: silence goes as a few comfort-noise packets instead of 50 packets a second, which is
// most of a 50-person call's audio) and keeps in-band FEC (useinbandfec=1). Janus 1.1.2 echoes
// both in its answer when the offer has them, and Chromium's encoder follows the answer.

const OPUS_PARAMS = ["useinbandfec=1", "usedtx=1"];

/** The offer with usedtx=1 and useinbandfec=1 on every Opus payload type; everything else as it was. */
export function withOpusDtx(sdp: string): string {
  const eol = sdp.includes("\r\n") ? "\r\n" : "\n";
  const lines = sdp.split(eol);
  const opus = new Set(lines.map((l) => /^a=rtpmap:(\d+) opus\/48000/i.exec(l)?.[1]).filter((pt): pt is string => !!pt));
  const withFmtp = new Set<string>();
  const out = lines.map((l) => {
    const m = /^a=fmtp:(\d+) (.*)$/.exec(l);
    if (!m || !opus.has(m[1]!)) return l;
    withFmtp.add(m[1]!);
    const keys = new Set(OPUS_PARAMS.map((p) => p.split("=")[0]));
    const kept = m[2]!.split(";").map((p) => p.trim()).filter((p) => p && !keys.has(p.split("=")[0]!.toLowerCase()));
    return `a=fmtp:${m[1]} ${[...kept, ...OPUS_PARAMS].join(";")}`;
  });
  // An Opus payload without an fmtp line gets one right after its rtpmap.
  return out
    .flatMap((l) => {
      const pt = /^a=rtpmap:(\d+) opus\/48000/i.exec(l)?.[1];
      return pt && !withFmtp.has(pt) ? [l, `a=fmtp:${pt} ${OPUS_PARAMS.join(";")}`] : [l];
    })
    .join(eol);
}

/** Whether an SDP's Opus payloads all carry usedtx=1 (what the browser tests read from the answer). */
export function hasOpusDtx(sdp: string): boolean {
  const pts = [...sdp.matchAll(/^a=rtpmap:(\d+) opus\/48000/gim)].map((m) => m[1]);
  return pts.length > 0 && pts.every((pt) => new RegExp(`^a=fmtp:${pt} .*\\busedtx=1\\b`, "m").test(sdp));
}
