// coturn running Parley's generated config (renderCoturnConfig) against the credentials Parley
// hands out (turnCredential): a fresh one allocates a relay, an expired one or one signed with
// another secret is refused, and an allocation may reach the SFU's address and nothing else.
import fs from "node:fs/promises";
import os from "node:os";
import path from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { turnCredential } from "../../appservice/src/turn/credentials.ts";
import { startCoturn, type CoturnHandle } from "../../scripts/stack/coturn.ts";
import { TurnClient, type TurnAnswer } from "../../appservice/src/turn/client.ts";

const IP = "127.0.0.1";
const SFU = "127.0.0.5";
let coturn: CoturnHandle;
let dir: string;
const probes: TurnClient[] = [];

async function allocate(username: string, password: string): Promise<{ probe: TurnClient; answer: TurnAnswer }> {
  const probe = await TurnClient.open({ ip: IP, port: coturn.port });
  probes.push(probe);
  return { probe, answer: await probe.allocate(username, password) };
}

beforeAll(async () => {
  dir = await fs.mkdtemp(path.join(os.tmpdir(), "parley-turn-"));
  coturn = await startCoturn({ dir, ip: IP, realm: "turn.test", relayPortRange: [41000, 41099], allowedPeerIps: [SFU] });
}, 30_000);

afterAll(async () => {
  for (const p of probes) p.close();
  await coturn?.stop();
  if (dir) await fs.rm(dir, { recursive: true, force: true });
});

describe("coturn with Parley's config and credentials", () => {
  it("a fresh credential allocates a relay on the relay address, in the relay range", async () => {
    const c = turnCredential(coturn.secret, { nowMs: Date.now(), ttlSeconds: 300, id: "fresh" });
    const { probe, answer } = await allocate(c.username, c.credential);
    expect(answer).toMatchObject({ ok: true, relayed: { ip: IP } });
    const port = answer.ok ? answer.relayed!.port : 0;
    expect(port).toBeGreaterThanOrEqual(41000);
    expect(port).toBeLessThanOrEqual(41099);
    expect(await probe.release()).toMatchObject({ ok: true });
  });

  it("an expired credential is refused (401)", async () => {
    const c = turnCredential(coturn.secret, { nowMs: Date.now() - 120_000, ttlSeconds: 60, id: "expired" });
    const { answer } = await allocate(c.username, c.credential);
    expect(answer).toMatchObject({ ok: false, code: 401 });
  });

  it("a credential signed with another secret is refused (401)", async () => {
    const c = turnCredential("f".repeat(64), { nowMs: Date.now(), ttlSeconds: 300, id: "forged" });
    const { answer } = await allocate(c.username, c.credential);
    expect(answer).toMatchObject({ ok: false, code: 401 });
  });

  it("a valid username with a made-up password is refused (401)", async () => {
    const c = turnCredential(coturn.secret, { nowMs: Date.now(), ttlSeconds: 300, id: "guessed" });
    const { answer } = await allocate(c.username, "not-the-hmac");
    expect(answer).toMatchObject({ ok: false, code: 401 });
  });

  it("a relay may reach the SFU's address and nothing else (LAN, other loopback, multicast: 403)", async () => {
    const c = turnCredential(coturn.secret, { nowMs: Date.now(), ttlSeconds: 300, id: "peers" });
    const { probe, answer } = await allocate(c.username, c.credential);
    expect(answer.ok).toBe(true);
    expect(await probe.createPermission(SFU)).toMatchObject({ ok: true });
    for (const peer of ["127.0.0.6", "10.0.0.1", "192.168.1.1", "172.16.0.1", "169.254.169.254", "8.8.8.8", "224.0.0.1"]) {
      expect(await probe.createPermission(peer), peer).toMatchObject({ ok: false, code: 403 });
    }
    await probe.release();
  });
});
