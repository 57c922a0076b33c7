import { mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";
import { deriveKey, seal, SealedFile, SealedFileError, unseal, writeFileAtomic } from "../../../appservice/src/crypto/sealedFile.ts";

const SECRET = "s".repeat(64);
let dir: string;

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), "parley-sealed-"));
});

afterEach(() => {
  rmSync(dir, { recursive: true, force: true });
});

const leftovers = () => readdirSync(dir).filter((f) => f.endsWith(".tmp"));

describe("deriveKey", () => {
  it("gives 32 bytes, the same for the same secret and purpose, unrelated otherwise", () => {
    const a = deriveKey(SECRET, "olm-snapshot");
    expect(a).toHaveLength(32);
    expect(deriveKey(SECRET, "olm-snapshot").equals(a)).toBe(true);
    expect(deriveKey(SECRET, "olm-store-passphrase").equals(a)).toBe(false);
    expect(deriveKey("t".repeat(64), "olm-snapshot").equals(a)).toBe(false);
  });
});

describe("seal / unseal", () => {
  const key = deriveKey(SECRET, "test");
  const plain = Buffer.from("the bot's Olm account pickle");

  it("round-trips, and two seals of the same bytes differ (fresh IV)", () => {
    const one = seal(plain, key);
    expect(unseal(one, key).equals(plain)).toBe(true);
    expect(seal(plain, key).equals(one)).toBe(false);
    expect(one.includes(plain)).toBe(false);
  });

  it("refuses a wrong key, a flipped bit, a truncation and a foreign file, naming them", () => {
    const sealed = seal(plain, key);
    expect(() => unseal(sealed, deriveKey("w".repeat(64), "test"), "f.bin")).toThrow(
      new SealedFileError("f.bin", "does not open with the configured key (wrong key, or the file was damaged)"),
    );
    const flipped = Buffer.from(sealed);
    flipped[flipped.length - 1]! ^= 1;
    expect(() => unseal(flipped, key)).toThrow(SealedFileError);
    expect(() => unseal(sealed.subarray(0, 20), key)).toThrow(/bad header/);
    expect(() => unseal(Buffer.from("{\"json\": true}".repeat(5)), key)).toThrow(/not a Parley sealed file/);
  });
});

describe("writeFileAtomic", () => {
  it("writes mode 0600 whatever the umask (one that takes the owner's write bit too)", async () => {
    const file = path.join(dir, "umask.bin");
    const old = process.umask(0o277);
    try {
      await writeFileAtomic(file, Buffer.from("x"));
    } finally {
      process.umask(old);
    }
    expect((statSync(file).mode & 0o777).toString(8)).toBe("600");
  });

  it("writes the file with mode 0600 and leaves no temporary file", async () => {
    const file = path.join(dir, "state.bin");
    await writeFileAtomic(file, Buffer.from("one"));
    await writeFileAtomic(file, Buffer.from("two"));
    expect(readFileSync(file, "utf8")).toBe("two");
    expect(statSync(file).mode & 0o777).toBe(0o600);
    expect(leftovers()).toEqual([]);
  });

  it("keeps the old content when the new one cannot be put in place, and cleans up", async () => {
    const file = path.join(dir, "state.bin");
    mkdirSync(file); // rename onto a folder fails
    writeFileSync(path.join(file, "keep"), "old");
    await expect(writeFileAtomic(file, Buffer.from("new"))).rejects.toThrow();
    expect(readFileSync(path.join(file, "keep"), "utf8")).toBe("old");
    expect(leftovers()).toEqual([]);
  });

  it("fails without writing anything when the folder does not exist", async () => {
    await expect(writeFileAtomic(path.join(dir, "missing", "state.bin"), Buffer.from("x"))).rejects.toThrow(/ENOENT/);
  });
});

describe("SealedFile", () => {
  it("reads undefined before the first write, then what was written; the bytes on disk are sealed", async () => {
    const f = new SealedFile(path.join(dir, "device.bin"), deriveKey(SECRET, "olm-snapshot"));
    expect(await f.read()).toBeUndefined();
    await f.write(Buffer.from("account and sessions"));
    expect((await f.read())?.toString()).toBe("account and sessions");
    const raw = readFileSync(f.file);
    expect(raw.subarray(0, 8).toString()).toBe("PARLEYv1");
    expect(raw.includes(Buffer.from("account"))).toBe(false);
  });

  it("a file sealed with another key is an error, not an empty device", async () => {
    const file = path.join(dir, "device.bin");
    await new SealedFile(file, deriveKey(SECRET, "olm-snapshot")).write(Buffer.from("x"));
    await expect(new SealedFile(file, deriveKey("o".repeat(64), "olm-snapshot")).read()).rejects.toThrow(SealedFileError);
  });
});
