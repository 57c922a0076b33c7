// Backup, restore and upgrade as an operator does them, against a real Synapse and Parley
// process: `parley backup` while Parley runs, `parley restore` into a fresh directory, Parley
// started there is the same bot device (device id and identity keys) that still decrypts and
// answers in an encrypted room, with its store's records; and a store left at an older schema
// version is migrated forward when Parley starts on it, its records kept.
import fs from "node:fs/promises";
import path from "node:path";
import Database from "better-sqlite3";
import { parse, stringify } from "yaml";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";
import type { ParleyConfigInput } from "../../appservice/src/config/schema.ts";
import { parley, ROOT } from "../support/cli.ts";
import { startInstitutions, type Institution, type Stack } from "../../scripts/stack/institutions.ts";
import { CryptoClient } from "../support/cryptoClient.ts";
import { TestUser } from "../support/matrix.ts";

const MIGRATIONS = path.join(ROOT, "appservice/src/store/migrations");

let stack: Stack;
let A: Institution;
let alice: TestUser;
let aliceDevice: CryptoClient;
let roomId: string;
let failed = false;


/** The bot's devices as the homeserver lists them to a user: exactly one, with its identity keys. */
const onlyBotDevice = () => alice.onlyDeviceOf(A.botUserId);

/** Asks the bot in the encrypted room; its answer must come Megolm-encrypted and decrypt. */
async function ask(text: string, starts: string) {
  await aliceDevice.sendText(roomId, text);
  const answer = await aliceDevice.nextMessage(roomId, (m) => m.sender === A.botUserId && m.body.startsWith(starts), 45_000);
  expect(answer.encrypted).toBe(true);
  return answer;
}

async function rewriteConfig(change: (raw: ParleyConfigInput) => void): Promise<void> {
  const raw = parse(await fs.readFile(A.parley.configFile, "utf8")) as ParleyConfigInput;
  change(raw);
  await fs.writeFile(A.parley.configFile, stringify(raw), { mode: 0o600 });
}

beforeAll(async () => {
  stack = await startInstitutions({ count: 1, allow: () => [], janus: false });
  [A] = stack.institutions as [Institution];
  const a = await A.registerUser("alice");
  alice = new TestUser(A.synapse.clientUrl, a.userId, a.accessToken);
  roomId = await alice.join(A.alias("kept"));
  aliceDevice = await CryptoClient.start({ baseUrl: A.synapse.clientUrl, ...a, rooms: [roomId] });
});

afterEach((ctx) => {
  if (ctx.task.result?.state === "fail") failed = true;
});

afterAll(async () => {
  await aliceDevice?.stop();
  await stack?.stop({ keep: failed || undefined });
});

describe("backup and restore", () => {
  it("restored into a fresh directory, the bot is the same device and still answers encrypted", async () => {
    await ask("!meet help", "Parley video meetings");
    const before = await onlyBotDevice();

    const backupDir = path.join(A.dir, "backup");
    const made = await parley(["backup", "-c", A.parley.configFile, "--to", backupDir]);
    expect(made).toMatchObject({ code: 0, stderr: "" });
    expect(made.stdout).toContain("backed up parley.db, parley-crypto.bin");
    expect((await fs.readdir(backupDir)).sort()).toEqual(["manifest.json", "parley-crypto.bin", "parley.db"]);
    expect((await parley(["backup", "-c", A.parley.configFile, "--to", backupDir])).code).toBe(1); // not into a used folder

    // The machine is gone: Parley starts from a fresh directory holding only the restored files.
    await A.parley.stop();
    const fresh = path.join(A.dir, "restored");
    await rewriteConfig((raw) => {
      raw.store = { path: path.join(fresh, "parley.db") };
      raw.crypto = { ...raw.crypto!, path: path.join(fresh, "parley-crypto.bin") };
    });
    const restored = await parley(["restore", "-c", A.parley.configFile, "--from", backupDir]);
    expect(restored).toMatchObject({ code: 0, stderr: "" });
    expect((await fs.readdir(fresh)).sort()).toEqual(["parley-crypto.bin", "parley.db"]);
    const again = await parley(["restore", "-c", A.parley.configFile, "--from", backupDir]);
    expect(again.code).toBe(1);
    expect(again.stderr).toContain("refusing to overwrite");
    // The old files are out of the way: only the restored ones can give the bot its identity.
    await fs.rename(A.parley.config.crypto!.path, `${A.parley.config.crypto!.path}.gone`);

    await A.parley.restart();
    expect(await onlyBotDevice()).toEqual(before);
    await ask("!meet help", "Parley video meetings");
    const db = new Database(path.join(fresh, "parley.db"), { readonly: true });
    expect(db.prepare("SELECT room_id FROM meeting_alias WHERE alias = ?").get(A.alias("kept"))).toEqual({ room_id: roomId });
    db.close();
  });

  it("a damaged backup is refused before anything is written", async () => {
    const backupDir = path.join(A.dir, "backup");
    const target = path.join(A.dir, "elsewhere");
    const copy = path.join(A.dir, "damaged");
    await fs.cp(backupDir, copy, { recursive: true });
    const crypto = await fs.readFile(path.join(copy, "parley-crypto.bin"));
    crypto[crypto.length - 1]! ^= 1;
    await fs.writeFile(path.join(copy, "parley-crypto.bin"), crypto);
    const raw = parse(await fs.readFile(A.parley.configFile, "utf8")) as ParleyConfigInput;
    raw.store = { path: path.join(target, "parley.db") };
    raw.crypto = { ...raw.crypto!, path: path.join(target, "parley-crypto.bin") };
    const file = path.join(A.dir, "elsewhere.yaml");
    await fs.writeFile(file, stringify(raw), { mode: 0o600 });
    const res = await parley(["restore", "-c", file, "--from", copy]);
    expect(res.code).toBe(1);
    expect(res.stderr).toContain("checksum differs");
    await expect(fs.access(target)).rejects.toThrow();
  });
});

describe("upgrades", () => {
  it("a store at an older schema version is migrated forward when Parley starts, its records kept", async () => {
    const names = (await fs.readdir(MIGRATIONS)).filter((f) => f.endsWith(".sql")).sort();
    expect(names.length).toBeGreaterThan(2);
    const old = path.join(A.dir, "old", "parley.db");
    await fs.mkdir(path.dirname(old));
    const db = new Database(old);
    for (const name of names.slice(0, 2)) db.exec(await fs.readFile(path.join(MIGRATIONS, name), "utf8"));
    db.pragma("user_version = 2");
    db.prepare("INSERT INTO meeting_alias (alias, room_id, state, created_at) VALUES (?, ?, 'ready', ?)").run(A.alias("old"), "!old:example", Date.now());
    db.close();

    await A.parley.stop();
    await rewriteConfig((raw) => {
      raw.store = { path: old };
    });
    await A.parley.restart(); // waits for /health
    const after = new Database(old, { readonly: true });
    expect(after.pragma("user_version", { simple: true })).toBe(names.length);
    expect(after.prepare("SELECT room_id FROM meeting_alias WHERE alias = ?").get(A.alias("old"))).toEqual({ room_id: "!old:example" });
    expect(after.prepare("SELECT count(*) AS n FROM guest").get()).toEqual({ n: 0 }); // a table of a later migration
    after.close();
  });
});
