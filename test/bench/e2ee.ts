// E2EE key rotation benchmark: a device leaves a call -> every remaining device holds the new media
// key(s) and sends with its new key, and how many Olm to-device messages that took, for N devices
// in both key modes. Devices are Node clients running matrix-js-sdk's Rust crypto
// (test/support/cryptoClient.ts) against a real Synapse and Parley; the key logic is the web
// client's own (ParticipantKeyShare, ProvisionedKeys) feeding a real FrameCipher per device, and
// every rotation ends with frames under the new keys decrypted by every remaining device (and by
// the leaver: none).
//   participant: memberships are MatrixRTC state events (a leave writes `{}`); each device sends
//                its new key to the others: (N-1)(N-2) to-device messages.
//   provisioned: devices join through Parley's call API and signalling socket (a leave closes
//                it); the bot sends one call key to each remaining device: N-1 messages.
// Figures per leave, from the leave sent: hold (every remaining device holds every new key), use
// (every remaining device sends with its new key), gap (longest a device sent under a key another
// device did not hold yet), and this process's CPU share meanwhile (all N devices run here: near
// or above 100% the bench itself is part of the latency).
// Baseline, same process, taken before each N and mode: one Olm to-device message between two
// devices, send -> decrypted arrival. Prints BENCH <name> <value> <unit> lines.
// Runs inside scripts/isolated.sh (npm run bench:e2ee).
//   node test/bench/e2ee.ts [--sizes 2,5,10,25,50] [--leaves 3] [--modes participant,provisioned]
//                           [--use-delay 200]
//
// Bench settings that are not the client's defaults (and why):
// - useDelayMs (a new key is sent first and used this much later): 200 ms, not 1000 ms, so that
//   "use" shows the key path more than a fixed wait; it is never below this.
// - graceMs (participant mode: a joiner gets the current key if younger than this): 10 min, so
//   that the joins setting up a call of 50 (longer than the default 10 s) do not cascade into
//   rotations; leaves, which are measured, rotate whatever it says.
// - The pool grows with N (a call of N devices has N devices syncing); a leaver leaves the call,
//   not Matrix, and comes back as a new member for the next leave.
import { parseArgs } from "node:util";
import { Method, RoomStateEvent, type MatrixEvent } from "matrix-js-sdk";
import { setLogLevel } from "../../client/src/log.ts";
import { buildMembershipContent, CALL_MEMBER_EVENT, liveCallDevices, membershipStateKey } from "../../client/src/matrix/membership.ts";
import { participantId, type KeyMode } from "../../client/src/rtc/e2ee/cipher.ts";
import {
  CALL_KEYS_EVENT,
  ParticipantKeyShare,
  ProvisionedKeys,
  type CallMembersPort,
  type DeviceRef,
  type KeyTransport,
  type RotationEvent,
} from "../../client/src/rtc/e2ee/keyShare.ts";
import { startInstitutions, type Institution } from "../../scripts/stack/institutions.ts";
import { CryptoClient } from "../support/cryptoClient.ts";
import { TestUser } from "../support/matrix.ts";
import { SignallingClient } from "../support/signalling.ts";
import { RecordingSink } from "./e2eeSink.ts";
import { bench, percentile } from "./lib.ts";

const { values } = parseArgs({
  options: {
    sizes: { type: "string", default: "2,5,10,25,50" },
    leaves: { type: "string", default: "3" },
    modes: { type: "string", default: "participant,provisioned" },
    "use-delay": { type: "string", default: "200" },
  },
});
const SIZES = values.sizes.split(",").map(Number);
const LEAVES = Number(values.leaves);
const MODES = values.modes.split(",") as KeyMode[];
const USE_DELAY_MS = Number(values["use-delay"]);
const GRACE_MS = 600_000;
const BATCH = 10;
const STEADY_TIMEOUT_MS = 180_000;
const ROTATION_TIMEOUT_MS = 60_000;

setLogLevel("warn"); // the key share logs every key at info: thousands of lines at N = 50

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const now = () => performance.now();
const sameBytes = (a: Uint8Array, b: Uint8Array) => a.length === b.length && a.every((x, i) => x === b[i]);
const failedChecks: string[] = [];
const check = (ok: boolean, what: string) => {
  if (ok) return;
  failedChecks.push(what);
  console.log(`CHECK FAILED ${what}`);
};

async function inBatches<T, R>(items: T[], fn: (item: T, i: number) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (let i = 0; i < items.length; i += BATCH) out.push(...(await Promise.all(items.slice(i, i + BATCH).map((t, j) => fn(t, i + j)))));
  return out;
}

/** Polls `missing` (what is not there yet) until it is empty; the timeout names what still is. */
async function until(what: string, missing: () => string[], timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const m = missing();
    if (m.length === 0) return;
    if (Date.now() > deadline) throw new Error(`${what}: not done within ${timeoutMs} ms; missing (${m.length}): ${m.slice(0, 8).join("; ")}`);
    await sleep(20);
  }
}

/** A call member's device: its Olm device, syncing for the whole run. */
interface Device {
  c: CryptoClient;
  ref: DeviceRef;
  /** "<user id>|<device id>", as the cipher names participants. */
  id: string;
}

/** The devices, in the order they joined the pool; a call of N devices is the first N. */
const pool: Device[] = [];

/** Every Olm-decrypted key message any device received: for counting and for quiet periods. */
const arrivals: { at: number; to: string; from: string }[] = [];

/** MatrixRTC's key transport over the device's Olm: only Olm-encrypted messages, from the device Olm names. */
function olmKeyTransport(d: Device, sent: { count: number }): KeyTransport {
  return {
    send: async (devices, content) => {
      await d.c.sendToDevice(CALL_KEYS_EVENT, devices, content as unknown as Record<string, unknown>);
      sent.count += devices.length;
    },
    onKeys: (fn) =>
      d.c.onToDevice(CALL_KEYS_EVENT, (m) => {
        if (m.encrypted && m.senderDevice) fn({ userId: m.sender, deviceId: m.senderDevice }, m.content);
      }),
  };
}

/** The room's live MatrixRTC memberships as this device's matrix-js-sdk sees them. */
function roomCallMembers(d: Device, roomId: string): CallMembersPort {
  return {
    devices: () => {
      const room = d.c.client.getRoom(roomId);
      if (!room) return [];
      const states = room.currentState.getStateEvents(CALL_MEMBER_EVENT);
      const joined = new Set(room.getJoinedMembers().map((m) => m.userId));
      return liveCallDevices(
        states.map((ev) => ({ sender: ev.getSender() ?? "", stateKey: ev.getStateKey() ?? "", content: ev.getContent() })),
        joined,
        Date.now(),
      );
    },
    onChange: (fn) => {
      const onState = (ev: MatrixEvent) => {
        if (ev.getRoomId() === roomId && ev.getType() === CALL_MEMBER_EVENT) fn();
      };
      d.c.client.on(RoomStateEvent.Events, onState);
      return () => d.c.client.off(RoomStateEvent.Events, onState);
    },
  };
}

/**
 * Membership writes, one at a time. Synapse builds up to five events of a room concurrently, and
 * concurrent ones fork the room DAG; a client on the legacy sync state block (this Synapse has no
 * MSC4222 `state_after`) can then keep a membership the resolved state no longer has, for good.
 */
let membershipWrites: Promise<unknown> = Promise.resolve();

/** Writes this device's call membership (`{}`: it left). */
function putMembership(d: Device, roomId: string, content: object): Promise<void> {
  const path = `/rooms/${encodeURIComponent(roomId)}/state/${encodeURIComponent(CALL_MEMBER_EVENT)}/${encodeURIComponent(membershipStateKey(d.ref.userId, d.ref.deviceId))}`;
  const write = membershipWrites.then(() => d.c.client.http.authedRequest(Method.Put, path, undefined, content as Record<string, unknown>));
  membershipWrites = write.catch(() => undefined);
  return write.then(() => undefined);
}

/** Resolves once no key message has arrived anywhere for `ms` (rotations from an earlier step are in). */
async function quiet(ms: number, timeoutMs = 60_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (now() - (arrivals.at(-1)?.at ?? 0) < ms) {
    if (Date.now() > deadline) throw new Error(`key messages still arriving after ${timeoutMs} ms`);
    await sleep(50);
  }
}

/** One device's part in one call. */
interface Member {
  d: Device;
  sink: RecordingSink;
  stop(): Promise<void>;
}

/** Every member's receiver for every other member's media, as the client binds them when it subscribes. */
function bindReceivers(members: Member[]): void {
  for (const r of members) for (const s of members) if (r !== s) r.sink.cipher.bindReceiver(`bench-${s.d.id}`, s.d.id);
}

/**
 * Frames under each sender's current key, decrypted by every receiver: counts of frames that
 * decrypted and that did not, and the key index each sender used.
 */
async function decryptAcross(senders: Member[], receivers: Member[]): Promise<{ ok: number; failed: number; index: Map<string, number> }> {
  let ok = 0;
  let failed = 0;
  const index = new Map<string, number>();
  for (const s of senders) {
    const frame = { data: crypto.getRandomValues(new Uint8Array(64)).buffer };
    if (!(await s.sink.cipher.encrypt(frame, "audio"))) {
      failed += receivers.filter((r) => r !== s).length;
      continue;
    }
    const bytes = new Uint8Array(frame.data);
    index.set(s.d.id, bytes[bytes.length - 1]!);
    for (const r of receivers) {
      if (r === s) continue;
      const receiver = `bench-${s.d.id}`;
      r.sink.cipher.bindReceiver(receiver, s.d.id); // no-op where bound before
      if (await r.sink.cipher.decrypt(receiver, { data: bytes.slice().buffer }, "audio")) ok++;
      else failed++;
    }
  }
  return { ok, failed, index };
}

interface Rotation {
  /** Leave sent -> every remaining device holds every new key (its own and the others'). */
  holdMs: number;
  /** Leave sent -> every remaining device sends with its new key. */
  useMs: number;
  /** Leave sent -> the first / the last remaining device reacted (own new key in its cipher). */
  firstSeenMs: number;
  lastSeenMs: number;
  /** Olm to-device messages sent because of the leave. */
  messages: number;
  /**
   * The longest a remaining device sent under its new key before another remaining device held
   * that key (frames it could not decrypt meanwhile); 0 when every key arrived before its use.
   */
  gapMs: number;
  /** This process's CPU time over the wall time from the leave to the last key (all devices run here). */
  busy: number;
}

/** CPU time of this process since `cpu0` over the wall time since `t0`. */
const busySince = (cpu0: NodeJS.CpuUsage, t0: number) => {
  const c = process.cpuUsage(cpu0);
  return (c.user + c.system) / 1000 / (now() - t0);
};

interface ModeRun {
  /** Joins `members` (devices not in the call yet) and resolves when all N hold each other's keys. */
  join(devices: Device[]): Promise<Member[]>;
  steady(members: Member[]): string[];
  /** `leaver` leaves; measures until the remaining have rotated. */
  leave(leaver: Member, remaining: Member[]): Promise<Rotation>;
  /** Everyone leaves: the call is empty. */
  end(members: Member[]): Promise<void>;
}

// ---------- participant mode: each device's key, over Olm to the MatrixRTC members ----------

function participantMode(roomId: string, callApi: string): ModeRun {
  const sent = { count: 0 };
  const rotations: { at: number; e: RotationEvent }[] = [];
  const shares = new Map<Member, ParticipantKeyShare>();

  const membership = (d: Device) => buildMembershipContent({ deviceId: d.ref.deviceId, callApi, roomId, createdTs: Date.now() });

  async function joinOne(d: Device): Promise<Member> {
    const sink = new RecordingSink(d.id, "participant", (what) => check(false, what));
    const share = new ParticipantKeyShare({
      roomId,
      self: d.ref,
      transport: olmKeyTransport(d, sent),
      members: roomCallMembers(d, roomId),
      sink,
      graceMs: GRACE_MS,
      useDelayMs: USE_DELAY_MS,
    });
    share.onRotated = (e) => rotations.push({ at: now(), e });
    // As the client does: keys flow from the moment the call starts, then the membership goes out.
    share.start();
    await putMembership(d, roomId, membership(d));
    const m: Member = {
      d,
      sink,
      stop: async () => {
        share.stop();
        shares.delete(m);
        await putMembership(d, roomId, {});
      },
    };
    shares.set(m, share);
    return m;
  }

  function steady(members: Member[]): string[] {
    const missing: string[] = [];
    for (const s of members) {
      const own = s.sink.sending();
      if (!own) {
        missing.push(`${s.d.id} not sending with its latest key`);
        continue;
      }
      for (const r of members) {
        if (r === s) continue;
        const held = r.sink.received.get(s.d.id)?.get(own.index);
        if (!held || !sameBytes(held.key, own.key)) missing.push(`${r.d.id} lacks key ${own.index} of ${s.d.id}`);
      }
    }
    return missing;
  }

  return {
    async join(devices) {
      return inBatches(devices, joinOne);
    },
    steady,
    async leave(leaver, remaining) {
      const before = new Map(remaining.map((m) => [m, m.sink.latestOwn]));
      sent.count = 0;
      const share = shares.get(leaver)!;
      share.stop();
      shares.delete(leaver);
      const cpu0 = process.cpuUsage();
      const t0 = now();
      await putMembership(leaver.d, roomId, {});
      await until(
        "participant rotation",
        () => {
          const notYet = remaining.filter((m) => m.sink.latestOwn === before.get(m)).map((m) => `${m.d.id} has not rotated`);
          return notYet.length ? notYet : steady(remaining);
        },
        ROTATION_TIMEOUT_MS,
      );
      const busy = busySince(cpu0, t0);
      await Promise.all(remaining.map((m) => shares.get(m)!.settled()));
      let holdAt = 0;
      let useAt = 0;
      let gapMs = 0;
      const seen: number[] = [];
      for (const r of remaining) {
        const own = r.sink.sending()!;
        seen.push(own.at - t0);
        holdAt = Math.max(holdAt, own.at);
        useAt = Math.max(useAt, own.usedAt);
        for (const s of remaining) {
          if (s === r) continue;
          const at = r.sink.received.get(s.d.id)!.get(s.sink.latestOwn!)!.at;
          holdAt = Math.max(holdAt, at);
          gapMs = Math.max(gapMs, at - s.sink.sending()!.usedAt);
        }
      }
      await quiet(500);
      const leaveRotations = rotations.filter((x) => x.at >= t0 && x.e.reason === "leave");
      check(leaveRotations.length === remaining.length, `participant N=${remaining.length + 1}: ${leaveRotations.length} leave rotations for ${remaining.length} remaining devices`);
      check(
        leaveRotations.reduce((n, x) => n + x.e.sentTo, 0) === sent.count,
        `participant N=${remaining.length + 1}: rotations report ${leaveRotations.reduce((n, x) => n + x.e.sentTo, 0)} recipients, transport sent ${sent.count}`,
      );
      return { holdMs: holdAt - t0, useMs: useAt - t0, firstSeenMs: Math.min(...seen), lastSeenMs: Math.max(...seen), messages: sent.count, gapMs, busy };
    },
    async end(members) {
      await inBatches(members, (m) => m.stop());
      // A device whose view still shows a member's last membership would see that leave land
      // after the member's next join and drop the key it had just been given (see the report).
      await until(
        "participant: call empty everywhere",
        () =>
          pool.flatMap((d) => {
            const seen = roomCallMembers(d, roomId).devices();
            return seen.length ? [`${d.id} still sees ${seen.map((x) => x.deviceId).join(",")}`] : [];
          }),
        60_000,
      );
    },
  };
}

// ---------- provisioned mode: the bot's call key, over Olm to the signalling members ----------

function provisionedMode(inst: Institution, roomId: string): ModeRun {
  const signallingUrl = `${inst.parley.url.replace(/^http/, "ws")}/_parley/v1/signal`;
  const bot = inst.botUserId;
  const sockets = new Map<Member, { ws: SignallingClient; keys: ProvisionedKeys }>();

  async function joinOne(d: Device): Promise<Member> {
    const sink = new RecordingSink(d.id, "provisioned", (what) => check(false, what));
    const keys = new ProvisionedKeys({ roomId, bot, transport: olmKeyTransport(d, { count: 0 }), sink, useDelayMs: USE_DELAY_MS });
    keys.start();
    const token = await d.c.client.getOpenIdToken();
    const res = await fetch(`${inst.parley.url}/_parley/v1/calls/join`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ openid_token: token, room: roomId }),
    });
    const grant = (await res.json()) as { session?: string; error?: string };
    if (!res.ok || !grant.session) throw new Error(`${d.id}: calls/join: HTTP ${res.status}: ${grant.error ?? ""}`);
    const ws = await SignallingClient.open(signallingUrl);
    const hello = await ws.request({ type: "hello", session: grant.session, device_id: d.ref.deviceId });
    const mode = (hello.e2ee as { keys?: string } | undefined)?.keys;
    if (hello.type !== "result" || mode !== "provisioned") {
      ws.close();
      keys.stop();
      throw new Error(`${d.id}: hello: expected provisioned keys, got ${JSON.stringify(hello)}`);
    }
    const m: Member = {
      d,
      sink,
      stop: async () => {
        keys.stop();
        ws.close();
        sockets.delete(m);
        await ws.closed;
      },
    };
    sockets.set(m, { ws, keys });
    return m;
  }

  function steady(members: Member[]): string[] {
    const first = members[0]?.sink.sending();
    if (!first) return [`${members[0]?.d.id} has no call key in use`];
    return members.filter((m) => {
      const k = m.sink.sending();
      return !k || k.index !== first.index || !sameBytes(k.key, first.key);
    }).map((m) => `${m.d.id} not on call key ${first.index} of ${members[0]!.d.id}`);
  }

  return {
    async join(devices) {
      return inBatches(devices, joinOne);
    },
    steady,
    async leave(leaver, remaining) {
      const before = remaining[0]!.sink.sending()!;
      const oldKey = before.key;
      const s = sockets.get(leaver)!;
      s.keys.stop();
      sockets.delete(leaver);
      const cpu0 = process.cpuUsage();
      const t0 = now();
      s.ws.close();
      await until(
        "provisioned rotation",
        () => {
          const notYet = remaining.filter((m) => sameBytes(m.sink.own.get(m.sink.latestOwn!)!.key, oldKey)).map((m) => `${m.d.id} has no new call key`);
          return notYet.length ? notYet : steady(remaining);
        },
        ROTATION_TIMEOUT_MS,
      );
      const busy = busySince(cpu0, t0);
      const seen = remaining.map((m) => m.sink.sending()!.at - t0);
      const used = remaining.map((m) => m.sink.sending()!.usedAt);
      // One call key: the last device to get it versus the first to send with it.
      const gapMs = Math.max(0, Math.max(...seen) + t0 - Math.min(...used));
      await quiet(1000);
      const fromBot = arrivals.filter((a) => a.at >= t0 && a.from === bot);
      check(!fromBot.some((a) => a.to === leaver.d.id), `provisioned N=${remaining.length + 1}: the leaver received a key after leaving`);
      return { holdMs: Math.max(...seen), useMs: Math.max(...used) - t0, firstSeenMs: Math.min(...seen), lastSeenMs: Math.max(...seen), messages: fromBot.length, gapMs, busy };
    },
    async end(members) {
      await inBatches(members, (m) => m.stop());
    },
  };
}

// ---------- the run ----------

const results: Figures[] = [];

interface Figures {
  mode: KeyMode;
  n: number;
  rotations: Rotation[];
  setupMs: number;
}

async function measure(mode: KeyMode, run: ModeRun, n: number): Promise<Figures> {
  const t0 = now();
  const members = await run.join(pool.slice(0, n));
  await until(`${mode} N=${n}: all keys exchanged`, () => run.steady(members), STEADY_TIMEOUT_MS);
  bindReceivers(members);
  await quiet(1000);
  const setupMs = now() - t0;
  const rotations: Rotation[] = [];
  for (let k = 0; k < LEAVES; k++) {
    const leaver = members[(n - 1 - k + n) % n]!;
    const remaining = members.filter((m) => m !== leaver);
    const r = await run.leave(leaver, remaining);
    rotations.push(r);
    await Promise.all(members.map((m) => m.sink.idle()));
    // Every remaining device decrypts every other's frames under its new key; the leaver none of them.
    const across = await decryptAcross(remaining, remaining);
    check(across.failed === 0, `${mode} N=${n}: ${across.failed} of ${across.ok + across.failed} frames under the new keys did not decrypt`);
    for (const m of remaining) {
      check(across.index.get(m.d.id) === m.sink.latestOwn, `${mode} N=${n}: ${m.d.id} sent under key ${across.index.get(m.d.id)}, not its new ${m.sink.latestOwn}`);
    }
    const leaked = await decryptAcross(remaining, [leaver]);
    check(leaked.ok === 0, `${mode} N=${n}: the leaver decrypted ${leaked.ok} frames under the new keys`);
    const stale = await decryptAcross([leaver], remaining);
    if (mode === "participant") check(stale.ok === 0, `${mode} N=${n}: remaining devices still decrypt the leaver's frames (${stale.ok})`);
    console.log(
      `${mode} N=${n} leave ${k + 1}: hold ${r.holdMs.toFixed(0)} ms, use ${r.useMs.toFixed(0)} ms, seen ${r.firstSeenMs.toFixed(0)}..${r.lastSeenMs.toFixed(0)} ms, ` +
        `gap ${r.gapMs.toFixed(0)} ms, ${r.messages} to-device messages, bench CPU ${(r.busy * 100).toFixed(0)}%; ${across.ok} frames decrypted under new keys`,
    );
    if (k < LEAVES - 1) {
      // The leaver comes back as a new call member, for the next leave at the same N.
      members[members.indexOf(leaver)] = (await run.join([leaver.d]))[0]!;
      await until(`${mode} N=${n}: rejoin`, () => run.steady(members), STEADY_TIMEOUT_MS);
      bindReceivers(members);
      await quiet(1000);
    } else {
      members.splice(members.indexOf(leaver), 1);
    }
  }
  await run.end(members);
  await quiet(1500);
  return { mode, n, rotations, setupMs };
}

/** Olm to-device message, send -> decrypted arrival, between two devices of the pool. */
const baseline: number[] = [];
let pings = 0;
async function sampleBaseline(a: Device, b: Device, samples: number): Promise<void> {
  const type = "org.parley.bench.ping";
  for (let i = 0; i < samples; i++) {
    const n = pings++;
    const t0 = now();
    await a.c.sendToDevice(type, [b.ref], { n });
    await b.c.nextToDevice(type, (m) => m.encrypted && m.senderDevice === a.ref.deviceId && m.content.n === n);
    if (n >= 3) baseline.push(now() - t0); // the first three open the Olm sessions
  }
}

/**
 * The room's `org.parley.call` state says provisioned keys, written by the bot as it would for a
 * room made with that mode: the room, not Parley's config, decides a call's key mode. Participant-mode
 * devices never join through Parley's signalling, so the bot sends them nothing either way.
 */
async function markProvisioned(inst: Institution, roomId: string): Promise<void> {
  const bot = new TestUser(inst.synapse.clientUrl, inst.botUserId, inst.parley.config.appservice.asToken);
  const state = (await bot.stateEvent(roomId, "org.parley.call")) ?? {};
  await bot.request(Method.Put, `/rooms/${encodeURIComponent(roomId)}/state/org.parley.call/`, { ...state, e2ee: { keys: "provisioned", bot: inst.botUserId } });
}

/**
 * Devices up to `n`, each a user of its own joined to the call rooms, every device knowing every
 * other's keys. The pool grows with N: a call of N devices has N devices syncing in its rooms.
 */
async function grow(inst: Institution, rooms: string[], n: number): Promise<void> {
  const t0 = now();
  const from = pool.length;
  const fresh = await inBatches(
    Array.from({ length: n - from }, (_, i) => from + i),
    async (i) => {
      const u = await inst.registerUser(`e2ee${i}`);
      for (const room of rooms) await new TestUser(inst.synapse.clientUrl, u.userId, u.accessToken).join(room);
      const c = await CryptoClient.start({ baseUrl: inst.synapse.clientUrl, userId: u.userId, accessToken: u.accessToken, deviceId: u.deviceId, rooms });
      const d: Device = { c, ref: { userId: c.userId, deviceId: c.deviceId }, id: participantId(c.userId, c.deviceId) };
      c.onToDevice(CALL_KEYS_EVENT, (m) => m.encrypted && arrivals.push({ at: now(), to: d.id, from: m.sender }));
      return d;
    },
  );
  pool.push(...fresh);
  await inBatches(pool, (d) => d.c.waitForDevices(pool.filter((o) => o !== d).map((o) => o.ref), 120_000));
  console.log(`${fresh.length} devices started (${pool.length} in all), each knowing the others, in ${((now() - t0) / 1000).toFixed(1)} s`);
}

const started = now();
const stack = await startInstitutions({ count: 1, allow: () => [], janus: MODES.includes("provisioned") });
console.log(`stack up in ${((now() - started) / 1000).toFixed(1)} s`);
try {
  const A = stack.institutions[0]!;
  // The meeting rooms Parley makes (encrypted: Rust crypto tracks the devices of their members),
  // made by a host user who runs no device: one room a key mode.
  const host = await A.registerUser("host");
  const hostUser = new TestUser(A.synapse.clientUrl, host.userId, host.accessToken);
  const rooms = { participant: await hostUser.join(A.alias("e2ee-participant")), provisioned: await hostUser.join(A.alias("e2ee-provisioned")) };
  if (MODES.includes("provisioned")) await markProvisioned(A, rooms.provisioned);
  const runs = {
    participant: participantMode(rooms.participant, A.parley.url),
    provisioned: provisionedMode(A, rooms.provisioned),
  };
  const stopped = new Set<KeyMode>();

  for (const n of SIZES) {
    await grow(A, MODES.map((m) => rooms[m]), n);
    if (n === SIZES[0]) {
      if (!pool[0]!.c.client.getRoom(rooms[MODES[0]!])?.hasEncryptionStateEvent()) throw new Error("the meeting room is not encrypted");
      // Opens the Olm sessions both ways; these samples are not counted.
      await sampleBaseline(pool[0]!, pool[1]!, 2);
      await sampleBaseline(pool[1]!, pool[0]!, 1);
    }
    for (const mode of MODES) {
      if (stopped.has(mode)) continue;
      await sampleBaseline(pool[0]!, pool[1]!, 5);
      await sampleBaseline(pool[1]!, pool[0]!, 5);
      try {
        results.push(await measure(mode, runs[mode], n));
      } catch (err) {
        // The other mode's figures still count: say what broke and go on.
        stopped.add(mode);
        check(false, `${mode} mode stopped: ${err instanceof Error ? err.message : String(err)}`);
      }
    }
  }

  const olmP50 = percentile(baseline, 50);
  console.log();
  bench("baseline_olm_to_device_p50", olmP50, "ms");
  bench("baseline_olm_to_device_p95", percentile(baseline, 95), "ms");
  for (const f of results) {
    const hold = f.rotations.map((r) => r.holdMs);
    const name = `${f.mode}_n${f.n}`;
    bench(`${name}_rotation_hold_p50`, percentile(hold, 50), "ms");
    bench(`${name}_rotation_hold_max`, Math.max(...hold), "ms");
    bench(`${name}_rotation_use_p50`, percentile(f.rotations.map((r) => r.useMs), 50), "ms");
    bench(`${name}_to_device_per_rotation`, percentile(f.rotations.map((r) => r.messages), 50), "messages");
    bench(`${name}_new_key_undecryptable_max`, Math.max(...f.rotations.map((r) => r.gapMs)), "ms");
    bench(`${name}_rotation_hold_vs_olm_p50_ratio`, percentile(hold, 50) / olmP50, "x");
  }

  console.log(`\nuseDelayMs ${USE_DELAY_MS} ms, graceMs ${GRACE_MS} ms, ${LEAVES} leaves per N, ${baseline.length} baseline samples; p50 (max) over leaves`);
  console.log("mode         N  hold ms        use ms         last seen ms   gap ms         msgs  hold/olm  CPU %  setup s");
  for (const f of results) {
    const hold = f.rotations.map((r) => r.holdMs);
    const cell = (xs: number[]) => `${percentile(xs, 50).toFixed(0)} (${Math.max(...xs).toFixed(0)})`.padEnd(15);
    console.log(
      `${f.mode.padEnd(12)} ${String(f.n).padStart(2)}  ${cell(hold)}${cell(f.rotations.map((r) => r.useMs))}${cell(f.rotations.map((r) => r.lastSeenMs))}` +
        `${cell(f.rotations.map((r) => r.gapMs))}${String(percentile(f.rotations.map((r) => r.messages), 50)).padStart(4)}  ` +
        `${(percentile(hold, 50) / olmP50).toFixed(1).padStart(8)}  ${(percentile(f.rotations.map((r) => r.busy), 50) * 100).toFixed(0).padStart(5)}  ${(f.setupMs / 1000).toFixed(1).padStart(7)}`,
    );
  }
  if (failedChecks.length) {
    console.log(`\n${failedChecks.length} checks failed:\n  ${failedChecks.join("\n  ")}`);
    process.exitCode = 1;
  }
} finally {
  await Promise.all(pool.map((d) => d.c.stop()));
  await stack.stop({ keep: failedChecks.length > 0 || undefined });
  console.log(`total ${((now() - started) / 1000).toFixed(1)} s`);
}
// matrix-js-sdk's request timeout (its AbortSignal.timeout ponyfill) leaves a 60 s timer behind
// every request, done or not: without this the process idles a minute or more before it exits.
process.exit();
