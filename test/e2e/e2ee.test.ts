// End-to-end encrypted media in real browsers: Alice (institution A, hosting) and Bob (institution
// B, federated, joining late) in Chromium; Carol, a Node device with matrix-js-sdk's Rust crypto,
// is a call member (MatrixRTC membership, no media) and so legitimately receives their media keys
// over Olm. Janus's own copy of Alice's media is captured with an rtp_forward: it is ciphertext,
// that Carol's keys decrypt and Chromium's VP8 decoder cannot decode. Then Carol leaves: the keys rotate and
// her keys no longer decrypt, while Alice and Bob go on decoding. Then Bob's keys stop reaching
// Alice: her client names him, and nothing crashes.
import type { Browser, Page } from "playwright-core";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import { createSfu } from "../../appservice/src/sfu/index.ts";
import { buildMembershipContent, CALL_MEMBER_EVENT, membershipStateKey } from "../../client/src/matrix/membership.ts";
import { decryptFrame, clearBytesForCodec, TRAILER_LENGTH } from "../../client/src/rtc/e2ee/frameCrypto.ts";
import { KeyRing } from "../../client/src/rtc/e2ee/keyRing.ts";
import { CALL_KEYS_EVENT, parseKeyContent } from "../../client/src/rtc/e2ee/keyShare.ts";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { e2eeStats, joinThroughClient, launchChromium, mediaFlowing, signedInUser } from "../support/browser.ts";
import { announceCallE2ee } from "../support/callState.ts";
import { CryptoClient, type ToDeviceMessage } from "../support/cryptoClient.ts";
import { TestUser } from "../support/matrix.ts";
import { RtpCapture, vp8Frames, type RtpPacket } from "../support/rtp.ts";

let stack: Stack;
let A: Institution, B: Institution;
let browser: Browser;
let alicePage: Page, bobPage: Page;
let alice: Awaited<ReturnType<typeof signedInUser>>, bob: Awaited<ReturnType<typeof signedInUser>>;
let carol: CryptoClient, carolUser: TestUser;
let roomId: string;
let bobJoinToDecryptMs = 0;
let aliceCapture: Awaited<ReturnType<typeof captureAlice>> | undefined;
let failed = false;
/** Every media key Carol received, by "<user>|<device>" then index. */
const carolKeys = new Map<string, Map<number, Uint8Array>>();

const CAROL_DEVICE = "CAROLDEV";
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function setCarolMembership(joined: boolean): Promise<void> {
  const content = joined ? buildMembershipContent({ deviceId: CAROL_DEVICE, callApi: A.parley.url, roomId, createdTs: Date.now() }) : {};
  await carolUser.client.sendStateEvent(roomId, CALL_MEMBER_EVENT as never, content as never, membershipStateKey(carolUser.userId, CAROL_DEVICE));
}

function onCarolKey(m: ToDeviceMessage): void {
  if (!m.encrypted || !m.senderDevice) return;
  const parsed = parseKeyContent(m.content, roomId);
  if (typeof parsed === "string") return;
  const id = `${m.sender}|${m.senderDevice}`;
  const ring = carolKeys.get(id) ?? new Map<number, Uint8Array>();
  ring.set(parsed.index, parsed.key);
  carolKeys.set(id, ring);
}

/** The device id a page's user runs as (from the participant list Janus's host keeps). */
async function deviceOf(page: Page): Promise<string> {
  return page.evaluate(() => localStorage.getItem("parley.session.v1") ?? "").then((raw) => (JSON.parse(raw || "{}") as { deviceId?: string }).deviceId ?? "");
}

/** Packets a page has sent on its lowest simulcast video layer (rid "l": Janus's substream 0, what an rtp_forward copies). */
async function lowLayerPacketsSent(page: Page): Promise<number> {
  return page.evaluate(async () => {
    let sent = 0;
    for (const pc of (window as unknown as { __parleyPcs?: RTCPeerConnection[] }).__parleyPcs ?? []) {
      if (pc.connectionState === "closed") continue;
      (await pc.getStats()).forEach((s: Record<string, unknown>) => {
        if (s.type === "outbound-rtp" && s.kind === "video" && s.rid === "l") sent += Number(s.packetsSent ?? 0);
      });
    }
    return sent;
  });
}

/** Waits until the page's video reaches Janus (its low layer's packet count grows): a forward made before copies no video. */
async function sendingVideo(page: Page, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  let before = await lowLayerPacketsSent(page);
  for (;;) {
    await sleep(250);
    const now = await lowLayerPacketsSent(page);
    if (before > 0 && now > before) return;
    if (Date.now() > deadline) throw new Error(`no video sent on the low layer (${now} packets)`);
    before = now;
  }
}

/** Forwards Alice's published audio (mid 0) and video (mid 1) from Janus to two local sockets. */
async function captureAlice(): Promise<{ audio: RtpCapture; video: RtpCapture; stop: () => Promise<void> }> {
  const call = await A.parleyStore().activeCall(roomId);
  if (!call?.sfu) throw new Error("no SFU room for the call");
  const ref = { node: call.sfu.node, roomId: call.sfu.room, secret: call.sfu.secret };
  const sfu = await createSfu({ nodes: A.parley.config.sfu.nodes });
  const publisher = (await sfu.listParticipants(ref)).find((p) => p.display === alice.userId && p.publisher);
  if (!publisher) throw new Error("Alice is not publishing");
  const [audio, video] = [await RtpCapture.open(), await RtpCapture.open()];
  const forwards = await sfu.rtpForward(ref, String(publisher.id), "127.0.0.1", [
    { mid: "0", port: audio.port },
    { mid: "1", port: video.port },
  ]);
  return {
    audio,
    video,
    stop: async () => {
      for (const f of forwards) await sfu.stopRtpForward(ref, String(publisher.id), f.streamId).catch(() => undefined);
      await sfu.stop();
      audio.close();
      video.close();
    },
  };
}

/** Decrypts captured frames with any of the media keys held (derived once). */
/**
 * Decrypts as a call member does: with the keys it was sent, and, for a frame under a later index,
 * the sender's ratchet from them (a join into an older key ratchets instead of sending members a
 * new key: frameCrypto.ts). A key made fresh at a leave is not derivable, so it still fails.
 */
async function decrypterFor(keys: Map<number, Uint8Array> | undefined) {
  const ring = new KeyRing();
  for (const [i, raw] of keys ?? []) await ring.set(i, raw);
  return async (frame: Uint8Array, kind: "audio" | "video") => {
    const clear = clearBytesForCodec(kind, kind === "video" ? "vp8" : "opus");
    const r = await decryptFrame(frame, ring.lookup, clear);
    if (r.ok || r.reason !== "no-key" || r.keyIndex === undefined || !(await ring.ratchetTo(r.keyIndex))) return r;
    return decryptFrame(frame, ring.lookup, clear);
  };
}

const opusFrames = (packets: RtpPacket[]) => packets.map((p) => new Uint8Array(p.payload));

beforeAll(async () => {
  // B hosts its calls with provisioned keys (its bot's Olm device makes them); A with participant keys.
  stack = await startInstitutions({
    count: 2,
    allow: (i, hosts) => hosts.filter((_, j) => j !== i),
    janus: true,
    e2eeKeys: (i) => (i === 1 ? "provisioned" : "participant"),
  });
  [A, B] = stack.institutions as [Institution, Institution];
  browser = await launchChromium();
  [alice, bob] = await Promise.all([signedInUser(A, "alice", "Alice Aardvark"), signedInUser(B, "bob", "Bob Badger")]);
  const alias = A.alias("e2ee-call");
  alicePage = await joinThroughClient(browser, `${A.parley.url}/#/call/${encodeURIComponent(alias)}`, alice);

  // Carol: a call member with a Node device (Rust crypto), no media.
  const c = await A.registerUser("carol");
  carolUser = new TestUser(A.synapse.clientUrl, c.userId, c.accessToken);
  roomId = await carolUser.join(alias);
  const login = await carolUser.client.loginRequest({ type: "m.login.password", identifier: { type: "m.id.user", user: c.userId }, password: c.password, device_id: CAROL_DEVICE });
  carol = await CryptoClient.start({ baseUrl: A.synapse.clientUrl, userId: c.userId, accessToken: login.access_token, deviceId: CAROL_DEVICE, rooms: [roomId] });
  carolUser = new TestUser(A.synapse.clientUrl, c.userId, login.access_token);
  carol.onToDevice(CALL_KEYS_EVENT, onCarolKey);
  await setCarolMembership(true);
  // Janus's copy of Alice's media from before Bob joins (his subscription asks Alice for a key frame),
  // once her video flows (her client publishes only after it has read the room's key mode).
  await sendingVideo(alicePage);
  aliceCapture = await captureAlice();

  // Bob joins late, from his own institution.
  bobPage = await joinThroughClient(browser, `${B.parley.url}/#/call/${encodeURIComponent(alias)}`, bob);
  await bobPage.locator('.call-status[data-phase="connected"]').waitFor({ timeout: 30_000 });
  const connectedAt = Date.now();
  while ((await e2eeStats(bobPage)).decrypted === 0 && Date.now() - connectedAt < 30_000) await sleep(50);
  bobJoinToDecryptMs = Date.now() - connectedAt;
}, 240_000);

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  if (failed && alicePage) await alicePage.screenshot({ path: `${stack.dir}/alice.png` }).catch(() => undefined);
  if (failed && bobPage) await bobPage.screenshot({ path: `${stack.dir}/bob.png` }).catch(() => undefined);
  await aliceCapture?.stop();
  await carol?.stop();
  await browser?.close();
  await stack?.stop({ keep: failed || undefined });
});

describe("end-to-end encrypted media", () => {
  it("a late joiner on a federated homeserver decrypts; both sides say encrypted", async () => {
    // The 2 s target is a figure, not an assertion (timing on a shared 2-core runner is not a
    // test): printed here, and measured without browsers by `npm run bench:e2ee`.
    console.info(`BENCH late_joiner_first_decrypted_frame ${bobJoinToDecryptMs} ms (target 2000 ms)`);
    expect(bobJoinToDecryptMs).toBeLessThan(15_000);
    for (const page of [alicePage, bobPage]) {
      await mediaFlowing(page);
      await page.locator('#call-e2ee[data-state="encrypted"]').waitFor({ timeout: 15_000 });
      expect(await page.locator("#call-e2ee").innerText()).toBe("Encrypted end to end");
      expect(await page.locator("#call-keys").innerText()).toBe("Keys: each participant");
    }
  });

  it("media keys travel over Olm to call member devices: Carol holds Alice's and Bob's", async () => {
    const aliceDevice = await deviceOf(alicePage);
    const bobDevice = await deviceOf(bobPage);
    await carol.nextToDevice(CALL_KEYS_EVENT, (m) => m.encrypted && m.sender === alice.userId && m.senderDevice === aliceDevice);
    await carol.nextToDevice(CALL_KEYS_EVENT, (m) => m.encrypted && m.sender === bob.userId && m.senderDevice === bobDevice);
    expect(carolKeys.get(`${alice.userId}|${aliceDevice}`)?.size).toBeGreaterThan(0);
    expect(carolKeys.get(`${bob.userId}|${bobDevice}`)?.size).toBeGreaterThan(0);
  });

  it("the SFU holds only ciphertext: Carol's copy of Alice's key decrypts it, a VP8 decoder cannot decode it", async () => {
    const decrypt = await decrypterFor(carolKeys.get(`${alice.userId}|${await deviceOf(alicePage)}`));
    const cap = aliceCapture!;
    aliceCapture = undefined;
    try {
      const audio = opusFrames(cap.audio.packets).slice(-50);
      const video = vp8Frames(cap.video.packets);
      expect(audio.length).toBeGreaterThan(20);
      expect(video.length).toBeGreaterThan(5);
      for (const [i, frame] of audio.entries()) {
        const r = await decrypt(frame, "audio");
        const head = Buffer.from(frame.subarray(0, 4)).toString("hex");
        expect(r.ok, `audio frame ${i} of ${audio.length} (${frame.length} bytes, ${head}...): ${r.ok ? "" : `${r.reason} at key ${r.keyIndex}`}; Carol holds keys ${[...(carolKeys.get(`${alice.userId}|${await deviceOf(alicePage)}`)?.keys() ?? [])]}`).toBe(true);
        if (r.ok) expect(r.data.length).toBe(frame.length - 16 - TRAILER_LENGTH);
      }
      // A key frame (Bob's subscription asked for one): Chromium's VP8 decoder makes Alice's picture
      // from Carol's decryption, and not from the SFU's copy (it fails on it, or, since the clear
      // header still says "key frame WxH", makes a picture of noise: a small layer's key frame
      // sometimes parses).
      const results = await Promise.all(video.map((f) => decrypt(new Uint8Array(f), "video")));
      expect(results.every((r) => r.ok)).toBe(true);
      const keyIdx = video.findIndex((f) => (f[0]! & 1) === 0);
      expect(keyIdx).toBeGreaterThanOrEqual(0);
      {
        const clear = results[keyIdx]!;
        const outcome = await bobPage.evaluate(
          async ([cipher, plain]) => {
            const decode = (bytes: number[]) =>
              new Promise<string>((resolve) => {
                const d = new VideoDecoder({
                  output: (f) => {
                    // The picture's own bytes, summed: the same picture gives the same sum.
                    const pixels = new Uint8Array(f.allocationSize());
                    void f.copyTo(pixels).then(() => {
                      let sum = 0;
                      for (const b of pixels) sum = (sum * 31 + b) >>> 0;
                      resolve(`frame ${f.codedWidth}x${f.codedHeight} ${sum}`);
                      f.close();
                    });
                  },
                  error: (e) => resolve(`error ${e.message}`),
                });
                d.configure({ codec: "vp8" });
                d.decode(new EncodedVideoChunk({ type: "key", timestamp: 0, data: new Uint8Array(bytes) }));
                d.flush().catch((e: Error) => resolve(`error ${e.message}`));
              });
            return { cipher: await decode(cipher), plain: await decode(plain) };
          },
          [[...video[keyIdx]!], clear.ok ? [...clear.data] : []] as [number[], number[]],
        );
        expect(outcome.plain).toMatch(/^frame \d+x\d+ \d+$/);
        expect(outcome.cipher).not.toBe(outcome.plain);
      }
    } finally {
      await cap.stop();
    }
  });

  it("after Carol leaves, keys rotate: new frames do not decrypt with her keys, Alice and Bob go on decoding", async () => {
    const aliceId = `${alice.userId}|${await deviceOf(alicePage)}`;
    const held = new Map(carolKeys.get(aliceId));
    const heldIndexes = [...held.keys()];
    const decryptWithHeld = await decrypterFor(held);
    await setCarolMembership(false);
    // The new key is sent at once and used 1 s later.
    await sleep(3000);
    const cap = await captureAlice();
    try {
      await sleep(2000);
      const audio = opusFrames(cap.audio.packets).slice(-50);
      expect(audio.length).toBeGreaterThan(20);
      for (const frame of audio) {
        expect(heldIndexes).not.toContain(frame[frame.length - 1]);
        expect((await decryptWithHeld(frame, "audio")).ok).toBe(false);
      }
    } finally {
      await cap.stop();
    }
    for (const page of [alicePage, bobPage]) {
      await mediaFlowing(page);
      expect(await page.locator("#call-e2ee").getAttribute("data-state")).toBe("encrypted");
    }
  });

  it("a join into keys older than the grace period: only the joiner gets each sender's next key, the others derive it and go on decoding", async () => {
    const aliceId = `${alice.userId}|${await deviceOf(alicePage)}`;
    const before = new Set(carolKeys.get(aliceId)?.keys());
    const [aliceBefore, bobBefore] = await Promise.all([e2eeStats(alicePage), e2eeStats(bobPage)]);
    // The keys made at Carol's leave (the test before) age past the grace period (10 s).
    await sleep(11_000);
    await setCarolMembership(true);
    // Carol, joining, gets Alice's next key: one she never held, and that decrypts Alice's frames now.
    const cap = await captureAlice();
    try {
      await expect.poll(() => [...(carolKeys.get(aliceId)?.keys() ?? [])].filter((i) => !before.has(i)).length, { timeout: 15_000 }).toBeGreaterThan(0);
      const fresh = new Map([...carolKeys.get(aliceId)!].filter(([i]) => !before.has(i)));
      const decryptWithFresh = await decrypterFor(fresh);
      await expect
        .poll(async () => (await Promise.all(opusFrames(cap.audio.packets).slice(-10).map((f) => decryptWithFresh(f, "audio")))).filter((r) => r.ok).length, { timeout: 15_000 })
        .toBeGreaterThan(5);
    } finally {
      await cap.stop();
    }
    // Alice and Bob derived each other's next key themselves (only Carol was sent it).
    await expect.poll(async () => (await e2eeStats(bobPage)).ratcheted, { timeout: 15_000 }).toBeGreaterThan(bobBefore.ratcheted);
    await expect.poll(async () => (await e2eeStats(alicePage)).ratcheted, { timeout: 15_000 }).toBeGreaterThan(aliceBefore.ratcheted);
    for (const page of [alicePage, bobPage]) {
      await mediaFlowing(page);
      expect(await page.locator("#call-e2ee").getAttribute("data-state")).toBe("encrypted");
    }
    await setCarolMembership(false);
  });

  it("when Bob's keys stop reaching Alice, her client names him and the call goes on", async () => {
    // Bob's to-device sends fail from now on; Carol joins and leaves again, so Bob rotates.
    await bobPage.context().route("**/sendToDevice/**", (route) => route.abort());
    await setCarolMembership(true);
    await sleep(1500);
    await setCarolMembership(false);
    await alicePage.locator('#call-e2ee[data-state="failing"]').waitFor({ timeout: 20_000 });
    expect(await alicePage.locator("#call-e2ee").innerText()).toBe("Can't decrypt media from Bob Badger");
    expect(await alicePage.locator(".tile.undecryptable .tile-name").allInnerTexts()).toEqual(["Bob Badger"]);
    // Nothing crashed: Bob still decodes Alice, both pages are alive and connected.
    await mediaFlowing(bobPage);
    expect(await alicePage.locator(".call-status").getAttribute("data-phase")).toBe("connected");
    await bobPage.context().unroute("**/sendToDevice/**");
  });

  it("in-call chat in the encrypted meeting room: Alice's message reaches Bob decrypted, and the server has only ciphertext", async () => {
    await alicePage.locator("#call-chat").click();
    await alicePage.locator("#chat-input").fill("hello over megolm");
    await alicePage.locator(".chat-form button[type=submit]").click();
    await bobPage.locator("#call-chat").click();
    await bobPage.locator(".chat-list .msg-body", { hasText: "hello over megolm" }).waitFor({ timeout: 20_000 });
    await carol.nextMessage(roomId, (m) => m.sender === alice.userId && m.body === "hello over megolm" && m.encrypted, 20_000);
    const raw = await carolUser.client.createMessagesRequest(roomId, null, 20, "b" as never);
    const wire = raw.chunk.filter((e) => e.sender === alice.userId && (e.type === "m.room.message" || e.type === "m.room.encrypted"));
    expect(wire.length).toBeGreaterThan(0);
    expect(wire.every((e) => e.type === "m.room.encrypted")).toBe(true);
  });

  it("provisioned keys end to end: B's bot keys a call hosted by B, both decrypt, both are told", async () => {
    // The room decides the key mode (its org.parley.call state), as B's bot announces it.
    await announceCallE2ee(B, B.alias("provisioned-call"), { keys: "provisioned", bot: B.botUserId });
    const link = (inst: Institution) => `${inst.parley.url}/#/call/${encodeURIComponent(B.alias("provisioned-call"))}`;
    for (const [page, inst] of [[alicePage, A], [bobPage, B]] as const) {
      await page.locator("#call-leave").click();
      await page.goto(link(inst));
      await page.locator("#prejoin-join").click({ timeout: 30_000 });
      await page.locator('.call-status[data-phase="connected"]').waitFor({ timeout: 30_000 });
    }
    for (const page of [alicePage, bobPage]) {
      await mediaFlowing(page);
      await page.locator('#call-e2ee[data-state="encrypted"][data-mode="provisioned"]').waitFor({ timeout: 15_000 });
      expect(await page.locator("#call-e2ee").innerText()).toBe("Encrypted end to end with keys provisioned by the meeting's server");
      expect(await page.locator("#call-keys").innerText()).toBe(`Keys: provisioned by ${B.botUserId}`);
    }
  });
});
