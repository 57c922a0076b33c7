// A legitimate call join while another client floods Parley, beside the same join measured
// without the flood in the same run. A join is what a person's client does: a fresh OpenID
// token from its homeserver, POST /_parley/v1/calls/join, the signalling socket, `hello`
// answered. The attacker (another loopback address) keeps many signalling sockets busy with
// messages and posts bogus joins (forged OpenID tokens that Parley must check) concurrently.
// Prints BENCH join_p50, join_p50_under_attack and their ratio.
import { randomBytes } from "node:crypto";
import http from "node:http";
import WebSocket from "ws";
import { JOIN_RATE_LIMIT_DEFAULT } from "../../appservice/src/config/schema.ts";
import { startInstitutions, type Institution } from "../../scripts/stack/institutions.ts";
import { TestUser } from "../support/matrix.ts";
import { bench, percentile } from "./lib.ts";

export interface JoinUnderAttackOptions {
  joins?: number;
  /** Sockets the attacker keeps open (and reopens) on the signalling server. */
  attackSockets?: number;
  /** Bogus call API joins the attacker keeps in flight. */
  attackJoins?: number;
}

/** A join that takes longer counts as failed (with this time). */
const JOIN_TIMEOUT_MS = 20_000;

/** The attacker's source address: another loopback address than the legitimate client's. */
const ATTACKER = "127.0.0.66";

function postJson(url: string, body: unknown, localAddress?: string): Promise<{ status: number; json: Record<string, unknown> }> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = http.request(url, { method: "POST", localAddress, headers: { "content-type": "application/json", "content-length": Buffer.byteLength(data) } }, (res) => {
      const chunks: Buffer[] = [];
      res.on("data", (c: Buffer) => chunks.push(c));
      res.on("end", () => {
        let json: Record<string, unknown> = {};
        try {
          json = JSON.parse(Buffer.concat(chunks).toString()) as Record<string, unknown>;
        } catch {
          // a refusal without a JSON body
        }
        resolve({ status: res.statusCode ?? 0, json });
      });
    });
    req.on("error", reject);
    req.end(data);
  });
}

/** One legitimate join, start to `hello` answered (or refused: `failed` says why); the socket is closed afterwards. */
async function joinOnce(A: Institution, user: TestUser, room: string, from: string): Promise<{ ms: number; failed?: string }> {
  const t0 = performance.now();
  let timer: NodeJS.Timeout | undefined;
  const progress = { stage: "start" };
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`no join within ${JOIN_TIMEOUT_MS} ms (stuck at: ${progress.stage})`)), JOIN_TIMEOUT_MS);
  });
  try {
    await Promise.race([join(A, user, room, from, progress), timeout]);
    return { ms: performance.now() - t0 };
  } catch (err) {
    return { ms: performance.now() - t0, failed: (err as Error).message };
  } finally {
    clearTimeout(timer);
  }
}

async function join(A: Institution, user: TestUser, room: string, from: string, progress = { stage: "" }): Promise<void> {
  progress.stage = "OpenID token from the homeserver";
  const token = await user.openIdToken();
  progress.stage = "POST /_parley/v1/calls/join";
  const join = await postJson(`${A.parley.url}/_parley/v1/calls/join`, { openid_token: token, room }, from);
  if (join.status !== 200) throw new Error(`join refused: ${join.status} ${JSON.stringify(join.json)}`);
  progress.stage = "signalling socket open";
  const ws = new WebSocket(`${A.parley.url.replace(/^http/, "ws")}/_parley/v1/signal`, { localAddress: from });
  await new Promise<void>((resolve, reject) => {
    ws.once("open", () => {
      progress.stage = "hello answered";
      ws.send(JSON.stringify({ type: "hello", id: 1, session: join.json.session, device_id: "BENCHDEV" }));
    });
    ws.on("message", (data) => {
      const m = JSON.parse(String(data)) as { id?: number; type: string };
      if (m.id !== 1) return;
      if (m.type === "result") resolve();
      else reject(new Error(`hello refused: ${String(data)}`));
    });
    ws.once("error", reject);
  });
  ws.close();
}

/** Floods until stop(): sockets sending messages as fast as they are accepted, bogus joins in flight. */
function flood(A: Institution, opts: { sockets: number; joins: number }) {
  let running = true;
  const counts = { messages: 0, sockets: 0, joins: 0, joinStatus: new Map<number, number>() };
  const signalUrl = `${A.parley.url.replace(/^http/, "ws")}/_parley/v1/signal`;
  const sockets = new Set<WebSocket>();
  const openSocket = () => {
    if (!running) return;
    const ws = new WebSocket(signalUrl, { localAddress: ATTACKER });
    counts.sockets++;
    sockets.add(ws);
    const burst = () => {
      if (!running || ws.readyState !== WebSocket.OPEN) return;
      if (ws.bufferedAmount > 256 * 1024) return void setTimeout(burst, 5); // the server is not keeping up
      for (let i = 0; i < 20; i++) {
        ws.send(JSON.stringify({ type: i % 2 ? "hello" : "trickle", id: i, session: randomBytes(16).toString("hex"), candidate: { candidate: "x".repeat(200) } }));
        counts.messages++;
      }
      setImmediate(burst);
    };
    ws.on("open", burst);
    ws.on("error", () => undefined);
    ws.on("close", () => {
      sockets.delete(ws);
      setTimeout(openSocket, 10);
    });
  };
  for (let i = 0; i < opts.sockets; i++) openSocket();
  const joinLoop = async () => {
    while (running) {
      const forged = { access_token: randomBytes(24).toString("base64url"), token_type: "Bearer", matrix_server_name: A.serverName, expires_in: 3600 };
      const r = await postJson(`${A.parley.url}/_parley/v1/calls/join`, { openid_token: forged, room: A.alias("bench-attack") }, ATTACKER).catch(() => ({ status: 0 }));
      counts.joins++;
      counts.joinStatus.set(r.status, (counts.joinStatus.get(r.status) ?? 0) + 1);
    }
  };
  const loops = Array.from({ length: opts.joins }, joinLoop);
  return {
    counts,
    async stop() {
      running = false;
      for (const ws of sockets) ws.terminate();
      await Promise.all(loops);
    },
  };
}

export async function benchJoinUnderAttack(opts: JoinUnderAttackOptions = {}): Promise<void> {
  const joins = opts.joins ?? 10;
  // Parley's default join limit, as an operator runs it (the test stack lifts it otherwise).
  const stack = await startInstitutions({ count: 1, allow: () => [], janus: true, joinRateLimit: JOIN_RATE_LIMIT_DEFAULT });
  try {
    const A = stack.institutions[0]!;
    const creds = await A.registerUser("joiner");
    const user = new TestUser(A.synapse.clientUrl, creds.userId, creds.accessToken);
    const room = await user.join(A.alias(`bench-join-${Date.now().toString(36)}`));
    // Each join comes from an address of its own, as people joining do (per-address limits apply
    // to the attacker, not to everyone).
    let n = 0;
    const nextAddress = () => `127.0.${1 + Math.floor(n / 250)}.${1 + (n++ % 250)}`;
    await join(A, user, room, nextAddress()); // warm: the call and its Janus room exist from here on

    const quiet: number[] = [];
    for (let i = 0; i < joins; i++) {
      const r = await joinOnce(A, user, room, nextAddress());
      if (r.failed) throw new Error(`a join without attack failed: ${r.failed}`);
      quiet.push(r.ms);
    }

    bench("join_p50", percentile(quiet, 50), "ms");
    const attack = flood(A, { sockets: opts.attackSockets ?? 200, joins: opts.attackJoins ?? 32 });
    const attacked: number[] = [];
    const failures: string[] = [];
    const t0 = performance.now();
    try {
      await new Promise((r) => setTimeout(r, 2000)); // the flood at full strength first
      for (let i = 0; i < joins; i++) {
        const r = await joinOnce(A, user, room, nextAddress());
        attacked.push(r.ms); // a failed join counts with the time it took to fail
        if (r.failed) failures.push(r.failed);
      }
    } finally {
      await attack.stop();
    }
    const seconds = (performance.now() - t0) / 1000;
    const p50 = percentile(quiet, 50);
    const p50Attack = percentile(attacked, 50);
    bench("join_p50_under_attack", p50Attack, "ms");
    bench("join_p50_under_attack_ratio", p50Attack / p50, "x");
    bench("join_failed_under_attack", failures.length, "joins");
    if (failures.length) console.log(`first failure under attack: ${failures[0]}`);
    const { counts } = attack;
    console.log(
      `join under attack: ${joins} joins each; attacker sent ${Math.round(counts.messages / seconds)} signalling messages/s on ` +
        `${counts.sockets} sockets and ${Math.round(counts.joins / seconds)} bogus joins/s (status ${JSON.stringify([...counts.joinStatus])})`,
    );
  } finally {
    await stack.stop();
  }
}

// Alone: node test/bench/joinUnderAttack.ts [--joins 10] [--sockets 200] [--attack-joins 32]
// (--sockets 0: the call API flood alone; --attack-joins 0: the signalling flood alone)
if (import.meta.main) {
  const { parseArgs } = await import("node:util");
  const { values } = parseArgs({ options: { joins: { type: "string", default: "10" }, sockets: { type: "string", default: "200" }, "attack-joins": { type: "string", default: "32" } } });
  await benchJoinUnderAttack({ joins: Number(values.joins), attackSockets: Number(values.sockets), attackJoins: Number(values["attack-joins"]) });
}
