// `parley doctor`'s TURN check: for each of the institution's TURN URLs (turn.urls), a relay
// allocated over UDP with a fresh credential made from turn.secretFile, as a browser's would be,
// then released. A 401 means coturn's static-auth-secret is not the file's (or the clocks differ).
import { lookup } from "node:dns/promises";
import { isIP } from "node:net";
import type { ParleyConfig } from "../config/schema.ts";
import type { Endpoint, Finding } from "../ops/doctor.ts";
import type { TurnProbe } from "../ops/doctorChecks.ts";
import { TurnClient } from "./client.ts";
import { readTurnSecret, turnCredential } from "./credentials.ts";

const CHECK = "turn";

/** host, port and transport of a turn:/turns: URL (the schema admits only those). */
export function parseTurnUrl(url: string): { secure: boolean; host: string; port: number; transport: "udp" | "tcp" } | null {
  const m = /^(turns?):(\[[^\]]+\]|[^:?]+)(?::(\d+))?(?:\?transport=(udp|tcp))?$/.exec(url);
  if (!m) return null;
  const secure = m[1] === "turns";
  return { secure, host: m[2]!.replace(/^\[|\]$/g, ""), port: m[3] ? Number(m[3]) : secure ? 5349 : 3478, transport: (m[4] as "udp" | "tcp" | undefined) ?? (secure ? "tcp" : "udp") };
}

async function probeOne(url: string, secret: string): Promise<Finding> {
  const t = parseTurnUrl(url);
  if (!t) return { check: CHECK, status: "error", message: `${url}: not a TURN URL`, fix: "write turn.urls as turn:HOST:PORT?transport=udp" };
  if (t.secure || t.transport !== "udp") return { check: CHECK, status: "info", message: `${url}: not probed (doctor allocates over UDP only)` };
  let ip = t.host;
  if (!isIP(ip)) {
    try {
      ip = (await lookup(t.host, { family: 4 })).address;
    } catch (err) {
      return { check: CHECK, status: "error", message: `${url}: ${t.host} does not resolve (${(err as NodeJS.ErrnoException).code ?? String(err)})`, fix: "fix the name in turn.urls or its DNS record" };
    }
  }
  const client = await TurnClient.open({ ip, port: t.port });
  try {
    const cred = turnCredential(secret, { nowMs: Date.now(), ttlSeconds: 60, id: "parley-doctor" });
    const answer = await client.allocate(cred.username, cred.credential);
    if (answer.ok) {
      await client.release().catch(() => undefined);
      return { check: CHECK, status: "ok", message: `${url}: a relay allocated with fresh credentials${answer.relayed ? ` (${answer.relayed.ip}:${answer.relayed.port})` : ""}` };
    }
    if (answer.code === 401) {
      return {
        check: CHECK,
        status: "error",
        message: `${url}: refused Parley's credentials (401 ${answer.reason}): coturn's static-auth-secret is not turn.secretFile's, or the clocks differ`,
        fix: "put the same secret in coturn's static-auth-secret and in turn.secretFile, and run NTP on both machines",
      };
    }
    return { check: CHECK, status: "error", message: `${url}: refused the allocation (${answer.code} ${answer.reason})`, fix: "look at coturn's log for the reason (quotas, realm, listening address)" };
  } catch (err) {
    return { check: CHECK, status: "error", message: `${url}: no answer (${(err as Error).message})`, fix: "start coturn (systemctl status parley-coturn) and open its UDP port to this machine" };
  } finally {
    client.close();
  }
}

/** The probe for a config with a turn section. */
export function turnProbe(turn: NonNullable<ParleyConfig["turn"]>): TurnProbe {
  return {
    endpoints: (): Endpoint[] => turn.urls.map((url) => ({ kind: "turn", address: url, why: "the institution's TURN server, handed to browsers with each call grant" })),
    async check(): Promise<Finding[]> {
      let secret: string;
      try {
        secret = readTurnSecret(turn.secretFile);
      } catch (err) {
        return [{ check: CHECK, status: "error", message: (err as Error).message, fix: "write coturn's static-auth-secret into turn.secretFile (one line, at least 32 characters)" }];
      }
      return Promise.all(turn.urls.map((url) => probeOne(url, secret)));
    },
  };
}
