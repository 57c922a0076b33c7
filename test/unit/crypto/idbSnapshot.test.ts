import v8 from "node:v8";
import { IDBFactory } from "fake-indexeddb";
import { describe, expect, it } from "vitest";
import { dumpDatabases, restoreDatabases } from "../../../appservice/src/crypto/idbSnapshot.ts";

function req<T>(r: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    r.onsuccess = () => resolve(r.result);
    r.onerror = () => reject(r.error);
  });
}

function open(factory: IDBFactory, name: string, version: number, upgrade: (db: IDBDatabase) => void): Promise<IDBDatabase> {
  const r = factory.open(name, version);
  r.onupgradeneeded = () => upgrade(r.result);
  return req(r);
}

async function write(db: IDBDatabase, store: string, fn: (s: IDBObjectStore) => void): Promise<void> {
  const tx = db.transaction(store, "readwrite");
  fn(tx.objectStore(store));
  await new Promise((resolve, reject) => {
    tx.oncomplete = resolve;
    tx.onerror = () => reject(tx.error);
  });
}

/** Two databases shaped like matrix-sdk-crypto's (keyPath, out-of-line keys, indexes, binary values). */
async function populate(factory: IDBFactory): Promise<void> {
  const main = await open(factory, "bot::crypto", 7, (db) => {
    db.createObjectStore("core");
    const sessions = db.createObjectStore("sessions", { keyPath: ["room", "id"] });
    sessions.createIndex("by_room", "room", { unique: false });
    db.createObjectStore("counter", { autoIncrement: true });
    db.createObjectStore("empty");
  });
  await write(main, "core", (s) => {
    s.put(new Uint8Array([1, 2, 3]), "account");
    s.put({ nested: { list: [1, "two"], when: new Date(0) } }, "settings");
  });
  await write(main, "sessions", (s) => {
    s.put({ room: "!a", id: "s1", pickle: new Uint8Array(64).fill(7).buffer });
    s.put({ room: "!b", id: "s2", pickle: new Uint8Array(8).buffer });
  });
  await write(main, "counter", (s) => {
    s.put("first");
    s.put("second");
  });
  main.close();
  const meta = await open(factory, "bot::meta", 1, (db) => db.createObjectStore("cipher"));
  await write(meta, "cipher", (s) => s.put("encrypted store key", "key"));
  meta.close();
  const other = await open(factory, "someone-else", 1, (db) => db.createObjectStore("x"));
  other.close();
}

async function readAll(factory: IDBFactory, name: string, store: string): Promise<[IDBValidKey[], unknown[]]> {
  const db = await req(factory.open(name));
  try {
    const s = db.transaction(store, "readonly").objectStore(store);
    return [await req(s.getAllKeys()), await req(s.getAll())];
  } finally {
    db.close();
  }
}

describe("dumpDatabases / restoreDatabases", () => {
  it("restores schema and records into a fresh factory, through v8.serialize", async () => {
    const first = new IDBFactory();
    await populate(first);
    const dumps = await dumpDatabases(first, "bot::");
    expect(dumps.map((d) => [d.name, d.version])).toEqual([["bot::crypto", 7], ["bot::meta", 1]]);

    const second = new IDBFactory();
    await restoreDatabases(second, v8.deserialize(v8.serialize(dumps)));
    for (const [db, store] of [["bot::crypto", "core"], ["bot::crypto", "sessions"], ["bot::crypto", "counter"], ["bot::meta", "cipher"]] as const) {
      expect(await readAll(second, db, store)).toEqual(await readAll(first, db, store));
    }
    // The restored copy dumps to the same thing: nothing was lost or added.
    expect(await dumpDatabases(second, "bot::")).toEqual(dumps);
    expect((await second.databases()).map((d) => d.name).sort()).toEqual(["bot::crypto", "bot::meta"]);
  });

  it("restores indexes, key paths and the key generator", async () => {
    const first = new IDBFactory();
    await populate(first);
    const second = new IDBFactory();
    await restoreDatabases(second, await dumpDatabases(first, "bot::"));
    const db = await req(second.open("bot::crypto"));
    try {
      const tx = db.transaction(["sessions", "counter"], "readwrite");
      const byRoom = await req(tx.objectStore("sessions").index("by_room").getAll("!b"));
      expect(byRoom).toMatchObject([{ id: "s2" }]);
      expect(tx.objectStore("sessions").keyPath).toEqual(["room", "id"]);
      expect(await req(tx.objectStore("counter").add("third"))).toBe(3);
    } finally {
      db.close();
    }
  });

  it("refuses to restore over an existing database", async () => {
    const factory = new IDBFactory();
    await populate(factory);
    const dumps = await dumpDatabases(factory, "bot::");
    await expect(restoreDatabases(factory, dumps)).rejects.toThrow(/exists already/);
  });

  it("dumps nothing when no database matches", async () => {
    expect(await dumpDatabases(new IDBFactory(), "bot::")).toEqual([]);
  });
});
