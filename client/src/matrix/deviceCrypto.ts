// This device's Matrix client with its Rust crypto (vodozemac) started before any room is known:
// as soon as a meeting opens, while the room is joined or the knock waits in the lobby. The
// room's feed (roomFeed.ts) takes it over and starts its sync; until then nothing room-bound happens
// (no sync, no filter, no membership).
//
// The device's keys go up at once for a meeting of the user's own server (its alias there:
// webServices.ts openRoom): that server is in the room already, so the join involves no other
// server and the race below cannot happen. Otherwise they go up once the room is joined (by the
// feed), or, for a knock, as the knock is prepared (uploadDeviceKeysAhead, here: the room's join
// was refused, and the next comes only once let in), at the latest while it waits in the lobby
// (by the feed): the room's join never overlaps the upload (SyncedRoomFeed.joining: the join
// waits for an upload in flight, and holds back one that would start, holdDeviceKeysUpload). A
// device whose keys go up during its user's join to another server's meeting room can be missed
// by that server for good: it fetches the user's device list as the join reaches it (the upload
// not yet in), and the user's homeserver sends device-list updates only to servers its user
// shares a room with, which it does only once the join is done on its side; the update for the
// upload went nowhere, and the other server's users never encrypt to the device (seen: every
// media key from one sender lost, 1 run in 7, when the keys went up as the meeting opened).
// Before the join, or after it, the list is right: the meeting's server fetches it afresh at the
// join (it caches the lists of users it shares a room with only, and refetches when one rejoins:
// checked against Synapse 1.163), and an upload after the join is announced to it. A join to a
// room the user's server is in already is committed there first and sent on after: the other
// servers fetch the list once the join reaches them, or are told of an upload after it.
//
// One per page and device, never two at once: two OlmMachines opening the same empty store
// together would each make an identity for the device. So the first feed of the device takes the
// prepared client; a later feed (another meeting after this one) makes its own after the prepared
// one is up, when the store already holds the device's identity, and after the last one let go
// has closed.
//
// Letting a client go frees its OlmMachine, and nothing may call into it after that (Rust crypto
// then throws "null pointer passed to rust"). matrix-js-sdk's stopClient frees it first and stops
// the sync loop after, so a sync response being processed at that moment (a leave's own
// membership event coming back, typically) still passed its changes to the freed machine. So the
// sync loop stops first, and the crypto is freed once it has, and once the feed's own crypto calls
// (Olm preparation, key sends, decryption, encrypted sends) are done.
import { ClientEvent, createClient, SyncState, type MatrixClient } from "matrix-js-sdk";
import type { Logger as SdkLogger } from "matrix-js-sdk/lib/logger.js";
import { getLogger, logsAt, type Logger } from "../log.ts";
import { markStep } from "../timeline.ts";
import type { KeyValueStorage, MatrixSession } from "./session.ts";

/** matrix-js-sdk's internals we use to upload the device's keys at once (not public API). */
export interface RustCryptoInternals {
  outgoingRequestsManager?: { doProcessOutgoingRequests?: () => Promise<void> };
  olmMachine?: {
    updateTrackedUsers?: (users: unknown[]) => Promise<void>;
    trackedUsers?: () => Promise<Set<{ toString(): string }>>;
    /** A key query for these users now, tracked or not (the request to send; its answer updates their devices). */
    queryKeysForUsers?: (users: unknown[]) => unknown;
    /** The user's devices as the machine knows them; without a timeout, at once (a pending key query not awaited). */
    getUserDevices?: (user: unknown) => Promise<{ keys(): { toString(): string }[]; free(): void }>;
    /** Hands the machine the answer to one of its requests (by the request's id). */
    markRequestAsSent?: (id: string, type: number, response: string) => Promise<unknown>;
    /** One device as the machine knows it (undefined: unknown); it encrypts to-device messages once an Olm session with it exists. */
    getDevice?: (user: unknown, device: unknown) => Promise<{ encryptToDeviceEvent(type: string, content: unknown): Promise<string>; free(): void } | undefined>;
  };
  /** Sends one of the machine's requests and hands it the answer. */
  outgoingRequestProcessor?: { makeOutgoingRequest(request: unknown, ...rest: unknown[]): Promise<void> };
  /** Claims one-time keys for the users' devices that have no Olm session yet (queued, one at a time). */
  keyClaimManager?: { ensureSessionsForUsers(logger: SdkLogger, users: unknown[]): Promise<void> };
}

/**
 * The crypto calls a debug log traces (traceCryptoCalls): the Olm machine's, the key claims, the
 * outgoing requests and their HTTP requests, and a device's to-device encryption (matrix-js-sdk's
 * encryptToDeviceMessages encrypts through the Device getDevice gives), each once as it starts and
 * once as it ends.
 */
const TRACED_MACHINE_CALLS = ["receiveSyncChanges", "outgoingRequests", "markRequestAsSent", "getMissingSessions", "getDevice", "getUserDevices", "updateTrackedUsers", "queryKeysForUsers", "decryptRoomEvent"];

/**
 * At debug level only: every traced crypto call of this client is logged as it starts and as it
 * ends (with its time), so that a call that never ends (the sync loop stalled behind it) shows
 * in the log as one without its end. Nothing is wrapped at any other level.
 */
export function traceCryptoCalls(client: MatrixClient, log: Logger): void {
  if (!logsAt("debug")) return;
  const internals = client.getCrypto() as unknown as (RustCryptoInternals & Record<string, unknown>) | undefined;
  if (!internals) return;
  let calls = 0;
  const trace = (owner: unknown, names: string[], prefix: string) => {
    const o = owner as Record<string, unknown> | undefined;
    if (!o) return;
    for (const name of names) {
      const original = o[name];
      if (typeof original !== "function") continue;
      o[name] = (...args: unknown[]) => {
        const call = `${prefix}${name} #${++calls}`;
        const started = performance.now();
        log.debug(`crypto call ${call}`);
        const out: unknown = original.apply(o, args);
        if (!(out instanceof Promise)) return out;
        const end = (how: string) => () => log.debug(`crypto call ${call} ${how}`, { ms: Math.round(performance.now() - started) });
        out.then(end("done"), end("failed"));
        return name === "getDevice" ? out.then((device: unknown) => (trace(device, ["encryptToDeviceEvent"], "device."), device)) : out;
      };
    }
  };
  trace(internals.olmMachine, TRACED_MACHINE_CALLS, "");
  trace(internals, ["processSyncChanges", "onSyncCompleted", "onCryptoEvent"], "sync.");
  trace(internals.keyClaimManager, ["ensureSessionsForUsers"], "keyClaim.");
  trace(internals.outgoingRequestsManager, ["doProcessOutgoingRequests"], "outgoing.");
  trace(internals.outgoingRequestProcessor, ["makeOutgoingRequest"], "http.");
}

/** matrix-js-sdk's sync loop, to stop it without freeing the crypto (not public API). */
interface SyncInternals {
  syncApi?: { stop(): void };
}

/** The longest a client being let go waits for its sync loop and crypto calls before it is freed anyway. */
const RELEASE_WAIT_MS = 5000;
const releases = new WeakMap<MatrixClient, Promise<void>>();
/** The last client let go, until it is closed: the device's next client waits for it. */
let releasing: Promise<void> | undefined;

/** Resolves when `work` settles, or after `ms` if it has not by then. */
export async function settledWithin(work: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const cap = new Promise<void>((resolve) => (timer = setTimeout(resolve, ms)));
  await Promise.race([work.then(() => undefined, () => undefined), cap]);
  clearTimeout(timer);
}

/**
 * Stops a device's client and frees its crypto once nothing uses it: the sync loop stopped (it
 * says Stopped), `work` settled, RELEASE_WAIT_MS at most.
 */
export function releaseDeviceClient(client: MatrixClient, work: Iterable<Promise<unknown>> = []): Promise<void> {
  const known = releases.get(client);
  if (known) return known;
  const done = (async () => {
    const syncStopped = new Promise<void>((resolve) => {
      // The loop says Stopped once it has finished the response in hand (or its request is
      // aborted, or it had not begun). Its state does not tell whether it is processing one: the
      // first sync is processed in state null, one after a reconnect in Reconnecting. Only a loop
      // parked waiting for a homeserver that is down never says it, and waits out the cap.
      if (!(client as unknown as SyncInternals).syncApi || client.getSyncState() === SyncState.Stopped) return resolve();
      client.on(ClientEvent.Sync, (state: SyncState) => {
        if (state === SyncState.Stopped) resolve();
      });
    });
    (client as unknown as SyncInternals).syncApi?.stop();
    await settledWithin(Promise.allSettled([syncStopped, ...work]), RELEASE_WAIT_MS);
    client.stopClient();
    client.removeAllListeners();
  })();
  releases.set(client, done);
  releasing = done;
  return done;
}

/** matrix-js-sdk's chatter (push rule defaults, sync progress) stays out of the console: warnings and errors only. */
export function sdkLogger(log: Logger, prefix = "sdk"): SdkLogger {
  const text = (msg: unknown[]) => `${prefix}: ${msg.map((m) => (m instanceof Error ? m.message : String(m))).join(" ")}`;
  return {
    trace: () => undefined,
    debug: () => undefined,
    info: () => undefined,
    warn: (...msg: unknown[]) => log.debug(text(msg)),
    error: (...msg: unknown[]) => log.warn(text(msg)),
    getChild: (ns: string) => sdkLogger(log, `${prefix}/${ns}`),
  };
}

/** One IndexedDB store per device: a new login is a new device, and a store belongs to one. */
export function cryptoStorePrefix(deviceId: string): string {
  return `parley-${deviceId}`;
}

/** Whether a request is this device's identity keys going up (a /keys/upload carrying `device_keys`). */
export function isDeviceKeysUpload(url: string, init: { method?: string; body?: unknown } | undefined): boolean {
  return init?.method === "POST" && /\/keys\/upload(\?|$)/.test(url) && typeof init.body === "string" && init.body.includes('"device_keys"');
}

const deviceKeysSeen = new WeakMap<MatrixClient, Promise<void>>();
const uploadHolds = new WeakMap<MatrixClient, (until: Promise<void>) => void>();
const uploadsInFlight = new WeakMap<MatrixClient, () => Promise<void>>();
const syncTaps = new WeakMap<MatrixClient, Set<SyncResponseListener>>();

/** A /sync response of a client's loop: its HTTP status and its body as JSON (null if it had none). */
export type SyncResponseListener = (status: number, body: unknown) => void;

/** Whether a request is a client-server /sync. */
export function isSyncRequest(url: string): boolean {
  return /\/_matrix\/client\/(v3|r0)\/sync(\?|$)/.test(url);
}

/**
 * Hands `fn` every /sync response of this client's loop from now on (its body parsed a second
 * time, off matrix-js-sdk's copy; only while someone listens). For the lobby's wait, which reads
 * the knock's answer from the device's one loop (knock.ts says why there must be one).
 */
export function tapSyncResponses(client: MatrixClient, fn: SyncResponseListener): () => void {
  const taps = syncTaps.get(client);
  if (!taps) return () => undefined;
  taps.add(fn);
  return () => void taps.delete(fn);
}

/**
 * Holds this client's device-keys upload (a /keys/upload carrying `device_keys`) until `until`
 * resolves; rejected, the upload fails (Rust crypto tries it again with its next requests). For a
 * room join that an upload must not overlap (the header says why). matrix-js-sdk's outgoing
 * requests go one at a time, so the others (a keys query) wait behind it.
 */
export function holdDeviceKeysUpload(client: MatrixClient, until: Promise<void>): void {
  uploadHolds.get(client)?.(until);
}

/** Resolves once no device-keys upload of this client is in flight (at once if none is). */
export function deviceKeysUploadSettled(client: MatrixClient): Promise<void> {
  return uploadsInFlight.get(client)?.() ?? Promise.resolve();
}

/**
 * Resolves when the homeserver has accepted this client's device keys, as the HTTP answer says:
 * earlier than matrix-js-sdk's outgoing-request pass, which also waits for the keys query beside
 * it and for the crypto store's bookkeeping (100-300 ms on a busy page). Never, if the keys were
 * already up (a device's later clients): the caller also waits for that pass.
 */
export function deviceKeysUploaded(client: MatrixClient): Promise<void> {
  return deviceKeysSeen.get(client) ?? new Promise<void>(() => undefined);
}

/**
 * Asks now, beside the crypto's start (250-450 ms on a busy page), what matrix-js-sdk's sync
 * start asks one request after another before its first /sync: the server's versions (which
 * the client keeps) and the push rules (handed to the sync's first ask for them). In the join
 * benchmark's traces the first sync went out 300 ms after the crypto was up, behind those and the
 * filter (which the room's feed uploads itself: roomFeed.ts). A failed ask is asked again by the sync.
 */
export function warmSyncStartup(client: MatrixClient): MatrixClient {
  void client.getVersions().catch(() => undefined);
  const ask = client.getPushRules.bind(client);
  let early: ReturnType<MatrixClient["getPushRules"]> | undefined = ask();
  early.catch(() => undefined);
  client.getPushRules = () => {
    const rules = early?.catch(() => ask()) ?? ask();
    early = undefined;
    return rules;
  };
  return client;
}

/** `init` with the session's token, unless it carries one. */
function withToken(init: RequestInit | undefined, token: string): RequestInit {
  const headers = new Headers(init?.headers);
  if (!headers.has("Authorization")) headers.set("Authorization", `Bearer ${token}`);
  return { ...init, headers };
}

/**
 * `authorized`: a device whose session is not known yet (its crypto started before the sign-in,
 * prepareCryptoBeforeSignIn): every request of the client waits for the session's access token
 * and goes with it.
 */
export function newClient(session: MatrixSession, log: Logger, authorized?: Promise<string>): MatrixClient {
  let uploaded!: () => void;
  const seen = new Promise<void>((resolve) => (uploaded = resolve));
  let hold: Promise<void> | undefined;
  let inFlight: Promise<unknown> | undefined;
  const taps = new Set<SyncResponseListener>();
  const client = createClient({
    baseUrl: session.homeserverUrl,
    accessToken: session.accessToken,
    userId: session.userId,
    deviceId: session.deviceId,
    timelineSupport: false,
    // Parley's calls are its own (MatrixRTC memberships, Janus): none of matrix-js-sdk's legacy
    // 1:1 and group calls. Without this its call event handler goes through every sync's events
    // (evaluateEventBuffer: 80 ms of a joiner's main thread in the sync that brings the host's
    // media key, in a CPU profile of the quick Join) and it asks the homeserver for TURN servers.
    disableVoip: true,
    logger: sdkLogger(log),
    fetchFn: async (input, init) => {
      if (authorized) init = withToken(init, await authorized);
      const url = input instanceof Request ? input.url : String(input);
      const keysUpload = isDeviceKeysUpload(url, init);
      if (keysUpload && hold) await hold;
      const answer = globalThis.fetch(input, init);
      if (keysUpload) inFlight = answer;
      const res = await answer;
      if (res.ok && keysUpload) uploaded();
      if (taps.size && isSyncRequest(url)) {
        void res
          .clone()
          .json()
          .catch(() => null)
          .then((body: unknown) => {
            for (const tap of [...taps]) tap(res.status, body);
          });
      }
      return res;
    },
  });
  // No push actions: matrix-js-sdk runs every event a sync brings through the account's push
  // rules (each room state event of a room it first sees, for its highlight counts), and Parley
  // notifies nothing by them. 30-55 ms of the knocker's main thread in the sync that brings the
  // room's join (CPU profile of the knock benchmark), beside the call's start. Its callers read
  // the result optionally (`?.tweaks`); nothing is cached on the event.
  client.getPushActionsForEvent = () => null;
  deviceKeysSeen.set(client, seen);
  syncTaps.set(client, taps);
  uploadHolds.set(client, (until) => (hold = until));
  uploadsInFlight.set(client, async () => {
    for (let seen: Promise<unknown> | undefined; inFlight && inFlight !== seen; ) {
      seen = inFlight;
      await seen.catch(() => undefined);
    }
  });
  return client;
}

/**
 * Fetches and compiles the Rust crypto's WebAssembly (7.8 MB) and matrix-js-sdk's crypto code,
 * once per page, with no device yet (a meeting link opened before signing in): nothing device- or
 * room-bound happens, and initRustCrypto later finds the module loaded.
 */
let cryptoCode: Promise<unknown> | undefined;
export function preloadCryptoCode(): Promise<unknown> {
  cryptoCode ??= Promise.all([
    import("@matrix-org/matrix-sdk-crypto-wasm").then((m) => m.initAsync()),
    import("matrix-js-sdk/lib/rust-crypto/index.js"),
  ]).catch(() => undefined); // initRustCrypto loads them again, and reports a failure itself
  return cryptoCode;
}

const log = getLogger("crypto");

/**
 * The device a sign-in on this page will make, made ready before it (a meeting link opened
 * signed out): its id chosen here and sent as /login's `device_id` (the homeserver makes a
 * device of that id), and its crypto store opened now: StoreHandle.open creates the store's two
 * IndexedDB databases and their schema, 150-700 ms of a busy page, which then passed on the way
 * to the device's keys, and so to the first media key (docs/join.md). While the user types their
 * password it is done. Unclaimed (the page closed signed out, or the homeserver made another id),
 * it is listed in `storage` and deleted by a later page once older than SPARE_DEVICE_MAX_AGE_MS.
 */
let nextDevice: { deviceId: string; store: Promise<void>; storage: KeyValueStorage } | undefined;
const SPARE_DEVICES = "parley.spareDevices.v1";
/** How long a crypto store opened for a sign-in that never came is kept (a day). */
export const SPARE_DEVICE_MAX_AGE_MS = 24 * 3600_000;

/** A device id as Synapse makes them: ten capital letters, from the browser's CSPRNG. */
export function newDeviceId(): string {
  const out: string[] = [];
  while (out.length < 10) {
    for (const b of crypto.getRandomValues(new Uint8Array(16))) if (b < 234 && out.length < 10) out.push(String.fromCharCode(65 + (b % 26)));
  }
  return out.join("");
}

/** The crypto stores opened for sign-ins that have not claimed them: device id, when (ms). */
function spareDevices(storage: KeyValueStorage): { id: string; at: number }[] {
  try {
    const raw: unknown = JSON.parse(storage.getItem(SPARE_DEVICES) ?? "[]");
    return Array.isArray(raw) ? raw.filter((e): e is { id: string; at: number } => typeof e?.id === "string" && /^[A-Z]{10}$/.test(e.id) && typeof e.at === "number") : [];
  } catch {
    return [];
  }
}

function saveSpareDevices(storage: KeyValueStorage, spares: { id: string; at: number }[]): void {
  storage.setItem(SPARE_DEVICES, JSON.stringify(spares));
}

/**
 * Deletes a device's crypto store (its two IndexedDB databases, as matrix-sdk-indexeddb names
 * them): a spare never claimed, or a device signed out (its Olm account is of no use once the
 * homeserver deleted the device). A database still open is deleted once its client closes it.
 */
export function deleteCryptoStore(deviceId: string): void {
  for (const db of ["::matrix-sdk-crypto", "::matrix-sdk-crypto-meta"]) globalThis.indexedDB?.deleteDatabase(`${cryptoStorePrefix(deviceId)}${db}`);
}

/**
 * Makes the next sign-in's device ready (see nextDevice above): its id, and its store opening (never
 * rejects); the same until a sign-in claims it. Deletes the stores of spares older than
 * SPARE_DEVICE_MAX_AGE_MS.
 */
export function readyNextDevice(storage: KeyValueStorage, now = Date.now()): { deviceId: string; store: Promise<void> } {
  if (nextDevice) return nextDevice;
  const deviceId = newDeviceId();
  const spares = spareDevices(storage);
  const kept = spares.filter((e) => now - e.at < SPARE_DEVICE_MAX_AGE_MS);
  for (const e of spares) if (!kept.includes(e)) deleteCryptoStore(e.id);
  saveSpareDevices(storage, [...kept, { id: deviceId, at: now }]);
  const store = (async () => {
    await preloadCryptoCode();
    const { StoreHandle } = await import("@matrix-org/matrix-sdk-crypto-wasm");
    (await StoreHandle.open(cryptoStorePrefix(deviceId), undefined)).free();
    markStep("crypto-store-ready");
  })().catch((err: unknown) => log.debug("could not open the next device's crypto store", { err: String(err) })); // initRustCrypto opens it then
  nextDevice = { deviceId, store, storage };
  return nextDevice;
}

/** The device id this page's next sign-in asks for (readyNextDevice), if one is ready. */
export function nextDeviceId(): string | undefined {
  return nextDevice?.deviceId;
}

/**
 * A sign-in got the readied device: its store is the device's, no longer a spare (so no later page
 * deletes it). Said as soon as /login answers, not only when the meeting's crypto starts: a page
 * closed in between would leave a signed-in device's store listed for deletion.
 */
export function nextDeviceSignedIn(deviceId: string): void {
  const next = nextDevice;
  if (next?.deviceId !== deviceId) return;
  saveSpareDevices(next.storage, spareDevices(next.storage).filter((e) => e.id !== deviceId));
}

/** The crypto of the readied device starts: its store is claimed. Resolves once it is open. */
function claimNextDevice(deviceId: string): Promise<void> {
  const next = nextDevice;
  if (next?.deviceId !== deviceId) return Promise.resolve();
  nextDeviceSignedIn(deviceId);
  nextDevice = undefined;
  return next.store;
}

interface Prepared {
  key: string;
  client: MatrixClient;
  /** Crypto started. */
  ready: Promise<void>;
  taken: boolean;
}

let prepared: Prepared | undefined;
const keyOf = (s: MatrixSession) => `${s.userId}|${s.deviceId}|${s.accessToken}`;

/**
 * The next sign-in's device with its crypto started before the sign-in: the user id known from
 * the form (prepareCryptoBeforeSignIn), its requests waiting for the session.
 */
interface EarlyDevice {
  homeserverUrl: string;
  userId: string;
  deviceId: string;
  client: MatrixClient;
  /** Crypto started. */
  ready: Promise<void>;
  /** The session's access token: the client's requests go with it from now on (never, for a device given up). */
  authorize(token: string): void;
}
let early: EarlyDevice | undefined;

/**
 * The sign-in's user id is known (the password being typed) and its homeserver too: the crypto of
 * the device the sign-in will make (readyNextDevice) starts now, its Olm account made for that
 * user, not once /login has answered. On a slow machine that start took 700-950 ms after /login
 * (docs/join.md, eighteenth pass), and the device's keys, its first sync and so the call's first
 * media key waited for it. Nothing leaves the page before the sign-in: the client's requests (the
 * key backup's check) wait for the session, and the keys go up only once a meeting's room is
 * joined, as for any device. The same user again: nothing new. Another user id (the form edited):
 * that device's store holds the first one's account, so the device is given up (its store
 * deleted once its crypto has let go) and another made ready. None without a device made ready
 * (signed in already, or no meeting link).
 */
export function prepareCryptoBeforeSignIn(homeserverUrl: string, userId: string): void {
  const next = nextDevice;
  if (!next) return;
  if (early?.deviceId === next.deviceId) {
    if (early.userId === userId && early.homeserverUrl === homeserverUrl) return;
    giveUpEarlyDevice();
    return prepareCryptoBeforeSignIn(homeserverUrl, userId);
  }
  let authorize!: (token: string) => void;
  const authorized = new Promise<string>((resolve) => (authorize = resolve));
  const client = newClient({ homeserverUrl, userId, deviceId: next.deviceId, accessToken: "" }, log, authorized);
  const ready = startCrypto(client, next.deviceId, () => next.store);
  ready.catch((err: unknown) => log.warn("could not prepare the next device's crypto", { err: String(err) }));
  early = { homeserverUrl, userId, deviceId: next.deviceId, client, ready, authorize };
}

/**
 * Whether a session may be this page's: false if its device is the one whose crypto started
 * before the sign-in for another user id (the homeserver's canonical id differs from the form's:
 * that store holds the other id's account). The caller signs that device out and signs in again
 * with the next one (giveUpEarlyDevice).
 */
export function fitsEarlyDevice(session: MatrixSession): boolean {
  return early?.deviceId !== session.deviceId || early.userId === session.userId;
}

/**
 * The device whose crypto started before the sign-in is given up: its store is deleted once its
 * crypto has let go, and another device is made ready for the next sign-in. Its requests waiting
 * for a session never go (failed, the key backup's check would go on into the freed crypto).
 */
export function giveUpEarlyDevice(): void {
  const e = early;
  if (!e) return;
  early = undefined;
  void releaseDeviceClient(e.client, [e.ready]).then(() => deleteCryptoStore(e.deviceId));
  const next = nextDevice;
  if (next?.deviceId !== e.deviceId) return;
  nextDevice = undefined;
  readyNextDevice(next.storage);
}

/**
 * A sign-in on the device made ready for it (`signIn` gets its id). If the homeserver's id for the
 * user is not the one the form gave (its case), the device's crypto, started for that one, holds
 * the wrong account: that device is signed out and given up, and the sign-in made again with the
 * next one.
 */
export async function signInOnNextDevice(signIn: (deviceId: string | undefined) => Promise<MatrixSession>, signOut: (s: MatrixSession) => Promise<void>): Promise<MatrixSession> {
  let session = await signIn(nextDeviceId());
  if (!fitsEarlyDevice(session)) {
    await signOut(session).catch(() => undefined);
    giveUpEarlyDevice();
    session = await signIn(nextDeviceId());
  }
  nextDeviceSignedIn(session.deviceId);
  return session;
}

/** The device whose crypto started before the sign-in, if the session is its (and it is taken now). */
function takeEarlyDevice(session: MatrixSession): EarlyDevice | undefined {
  const e = early;
  if (e?.deviceId !== session.deviceId || e.userId !== session.userId) return undefined;
  early = undefined;
  return e;
}

/** Starts this device's crypto now (once per page and device; later calls return at once). */
export function prepareDeviceCrypto(session: MatrixSession): void {
  if (prepared?.key === keyOf(session)) return;
  const e = takeEarlyDevice(session);
  if (e && e.homeserverUrl === session.homeserverUrl) {
    // Started before the sign-in: the session's token from now on.
    e.client.setAccessToken(session.accessToken);
    e.authorize(session.accessToken);
    void claimNextDevice(session.deviceId); // (its store opened before its crypto started)
    adopt(session, warmSyncStartup(e.client), e.ready);
    return;
  }
  // Started before the sign-in with another homeserver address (the login's well-known named
  // another): the account in its store is right, its client is not; a new one opens the store
  // once the first has let it go.
  if (e) log.debug("the device's crypto started before the sign-in for another homeserver address", { was: e.homeserverUrl, is: session.homeserverUrl });
  const before = e ? releaseDeviceClient(e.client, [e.ready]) : undefined;
  const client = warmSyncStartup(newClient(session, log));
  adopt(session, client, startCrypto(client, session.deviceId, async () => {
    await claimNextDevice(session.deviceId);
    await before;
  }));
}

/**
 * Starts a device client's Rust crypto on the device's store, once `opened` (the store ready, a
 * client let go before it): the crypto's code loaded meanwhile (from the meeting link's page
 * load, usually under way already).
 */
async function startCrypto(client: MatrixClient, deviceId: string, opened: () => Promise<void>): Promise<void> {
  markStep("crypto-prepare");
  await preloadCryptoCode();
  markStep("crypto-code");
  await opened();
  await client.initRustCrypto({ cryptoDatabasePrefix: cryptoStorePrefix(deviceId) });
  markStep("crypto-prepared");
}

function adopt(session: MatrixSession, client: MatrixClient, ready: Promise<void>): void {
  const p: Prepared = { key: keyOf(session), client, ready, taken: false };
  ready.catch((err: unknown) => {
    log.warn("could not prepare this device's crypto", { err: String(err) });
    if (prepared === p && !p.taken) prepared = undefined;
  });
  prepared = p;
}

/**
 * A knock is being prepared (the room's join was refused: no join of this user is under way, and
 * the next comes only once let in): the prepared device's keys go up now rather than once the
 * lobby's feed starts (100-250 ms after the knock), so that the devices in the call find the
 * device when they look the knocker up at the knock, and make their Olm sessions with it then
 * (roomFeed.ts): the media key at the let-in then needs no key query or one-time-key claim.
 * Best effort: the feed uploads them anyway.
 */
export function uploadDeviceKeysAhead(session: MatrixSession): void {
  const p = prepared?.key === keyOf(session) ? prepared : undefined;
  if (!p || p.taken) return;
  const upload = () => (p.client.getCrypto() as unknown as RustCryptoInternals | undefined)?.outgoingRequestsManager?.doProcessOutgoingRequests?.();
  void p.ready.then(upload).catch((err: unknown) => log.debug("could not upload the device's keys ahead", { err: String(err) }));
}

/**
 * The device's client with its crypto started, for a room feed to start its sync on: the prepared
 * one the first time (null if none was prepared or it failed: make one), else a fresh one once the
 * prepared client's crypto has opened the store (crypto not started yet: the feed starts it).
 */
export async function takeDeviceClient(session: MatrixSession, feedLog: Logger): Promise<{ client: MatrixClient; cryptoStarted: boolean }> {
  await releasing;
  const p = prepared?.key === keyOf(session) ? prepared : undefined;
  if (p) {
    const ok = await p.ready.then(
      () => true,
      () => false,
    );
    if (ok && !p.taken) {
      p.taken = true;
      return { client: p.client, cryptoStarted: true };
    }
  }
  return { client: warmSyncStartup(newClient(session, feedLog)), cryptoStarted: false };
}
