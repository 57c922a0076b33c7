// The little SDP work a synthetic participant needs: turn werift's one-SSRC video section into
// SSRC simulcast (a=ssrc-group:SIM low medium high, the layout Janus 1.1.2 reads as substreams
// 0, 1, 2), read the header extension ids Janus accepted, and map the SSRCs of Janus's subscriber
// offer to their mids.

export interface Section {
  mid: string;
  kind: string;
  lines: string[];
}

const EOL = /\r?\n/;

/** The session part and the m-sections of an SDP. */
export function splitSdp(sdp: string): { session: string[]; sections: Section[] } {
  const session: string[] = [];
  const sections: Section[] = [];
  for (const line of sdp.split(EOL)) {
    if (!line) continue;
    if (line.startsWith("m=")) sections.push({ mid: "", kind: line.slice(2).split(" ")[0] ?? "", lines: [line] });
    else if (sections.length) {
      const s = sections[sections.length - 1]!;
      if (line.startsWith("a=mid:")) s.mid = line.slice(6).trim();
      s.lines.push(line);
    } else session.push(line);
  }
  return { session, sections };
}

export function joinSdp(parts: { session: string[]; sections: Section[] }): string {
  return [...parts.session, ...parts.sections.flatMap((s) => s.lines)].join("\r\n") + "\r\n";
}

/** The offer with the first video section announcing `ssrcs` (low first) as one SIM group. */
export function withSsrcSimulcast(sdp: string, ssrcs: readonly number[], cname: string): string {
  const parts = splitSdp(sdp);
  const video = parts.sections.find((s) => s.kind === "video");
  if (!video) throw new Error("offer has no video section");
  const kept = video.lines.filter((l) => !l.startsWith("a=ssrc:") && !l.startsWith("a=ssrc-group:"));
  kept.push(`a=ssrc-group:SIM ${ssrcs.join(" ")}`);
  for (const ssrc of ssrcs) kept.push(`a=ssrc:${ssrc} cname:${cname}`, `a=ssrc:${ssrc} msid:${cname} video`);
  video.lines = kept;
  return joinSdp(parts);
}

/** The SSRC werift announced for the section of `kind`. */
export function ssrcOf(sdp: string, kind: "audio" | "video"): number | undefined {
  const s = splitSdp(sdp).sections.find((x) => x.kind === kind);
  const line = s?.lines.find((l) => l.startsWith("a=ssrc:"));
  return line ? Number(line.slice(7).split(" ")[0]) : undefined;
}

/** extmap id by URI in the section of `kind` (an answer says which ones the other side took). */
export function extmapIds(sdp: string, kind: "audio" | "video"): Map<string, number> {
  const ids = new Map<string, number>();
  const s = splitSdp(sdp).sections.find((x) => x.kind === kind);
  for (const l of s?.lines ?? []) {
    const m = /^a=extmap:(\d+)(?:\/\w+)? (\S+)/.exec(l);
    if (m) ids.set(m[2]!, Number(m[1]));
  }
  return ids;
}

/** Janus's subscriber offer: every SSRC it will send, with the mid and kind of its section. */
export function ssrcsByMid(sdp: string): Map<number, { mid: string; kind: "audio" | "video" }> {
  const out = new Map<number, { mid: string; kind: "audio" | "video" }>();
  for (const s of splitSdp(sdp).sections) {
    if (s.kind !== "audio" && s.kind !== "video") continue;
    if (s.lines[0]?.split(" ")[1] === "0") continue; // a rejected or removed m-line
    // Retransmission SSRCs (a=ssrc-group:FID primary rtx) are not streams of their own.
    const rtx = new Set(s.lines.flatMap((l) => (l.startsWith("a=ssrc-group:FID ") ? l.split(" ").slice(2).map(Number) : [])));
    for (const l of s.lines) {
      const m = /^a=ssrc:(\d+) /.exec(l);
      if (m && !rtx.has(Number(m[1]))) out.set(Number(m[1]), { mid: s.mid, kind: s.kind });
    }
  }
  return out;
}

export const EXT = {
  mid: "urn:ietf:params:rtp-hdrext:sdes:mid",
  audioLevel: "urn:ietf:params:rtp-hdrext:ssrc-audio-level",
} as const;
