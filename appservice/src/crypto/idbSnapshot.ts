// A copy of IndexedDB databases as plain data (schema and every record), and its restoration
// into an empty IDBFactory. matrix-sdk-crypto-wasm keeps its whole state in IndexedDB, which in
// Node is fake-indexeddb (in memory): dumping it after each change and restoring it before the
// OlmMachine opens its store is how the bot's device survives a restart.
// Values are structured-clone data (what IndexedDB stores), so v8.serialize carries them as they are.

export interface IndexDump {
  name: string;
  keyPath: string | string[];
  unique: boolean;
  multiEntry: boolean;
}

export interface StoreDump {
  name: string;
  keyPath: string | string[] | null;
  autoIncrement: boolean;
  indexes: IndexDump[];
  /** [primary key, value] in key order. */
  records: [IDBValidKey, unknown][];
}

export interface DatabaseDump {
  name: string;
  version: number;
  stores: StoreDump[];
}

function done<T>(req: IDBRequest<T>): Promise<T> {
  return new Promise((resolve, reject) => {
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error("IndexedDB request failed"));
  });
}

function committed(tx: IDBTransaction): Promise<void> {
  return new Promise((resolve, reject) => {
    tx.oncomplete = () => resolve();
    tx.onerror = () => reject(tx.error ?? new Error("IndexedDB transaction failed"));
    tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
  });
}

function open(factory: IDBFactory, name: string, version?: number, upgrade?: (db: IDBDatabase) => void): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const req = version === undefined ? factory.open(name) : factory.open(name, version);
    req.onupgradeneeded = () => upgrade?.(req.result);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error ?? new Error(`cannot open IndexedDB ${name}`));
    req.onblocked = () => reject(new Error(`IndexedDB ${name} is blocked by another connection`));
  });
}

async function dumpDatabase(factory: IDBFactory, name: string): Promise<DatabaseDump> {
  const db = await open(factory, name);
  try {
    const names = Array.from(db.objectStoreNames);
    if (names.length === 0) return { name, version: db.version, stores: [] };
    // One read-only transaction over every store: a consistent cut of committed writes.
    const tx = db.transaction(names, "readonly");
    const stores = await Promise.all(
      names.map(async (storeName): Promise<StoreDump> => {
        const store = tx.objectStore(storeName);
        const indexes = Array.from(store.indexNames, (indexName) => {
          const index = store.index(indexName);
          return { name: index.name, keyPath: index.keyPath, unique: index.unique, multiEntry: index.multiEntry };
        });
        const [keys, values] = await Promise.all([done(store.getAllKeys()), done(store.getAll())]);
        if (keys.length !== values.length) throw new Error(`IndexedDB ${name}/${storeName}: keys and values disagree`);
        return {
          name: storeName,
          keyPath: store.keyPath,
          autoIncrement: store.autoIncrement,
          indexes,
          records: keys.map((k, i) => [k, values[i]] as [IDBValidKey, unknown]),
        };
      }),
    );
    await committed(tx);
    return { name, version: db.version, stores };
  } finally {
    db.close();
  }
}

/** Every database whose name starts with `prefix`, schema and records. */
export async function dumpDatabases(factory: IDBFactory, prefix: string): Promise<DatabaseDump[]> {
  const infos = await factory.databases();
  const names = infos.flatMap((i) => (i.name?.startsWith(prefix) ? [i.name] : [])).sort();
  const dumps: DatabaseDump[] = [];
  for (const name of names) dumps.push(await dumpDatabase(factory, name));
  return dumps;
}

/** Recreates dumped databases (same version, stores, indexes and records); they must not exist yet. */
export async function restoreDatabases(factory: IDBFactory, dumps: DatabaseDump[]): Promise<void> {
  for (const dump of dumps) {
    let created = false;
    const db = await open(factory, dump.name, dump.version, (fresh) => {
      created = true;
      for (const s of dump.stores) {
        const store = fresh.createObjectStore(s.name, { keyPath: s.keyPath, autoIncrement: s.autoIncrement });
        for (const i of s.indexes) store.createIndex(i.name, i.keyPath, { unique: i.unique, multiEntry: i.multiEntry });
      }
    });
    try {
      if (!created) throw new Error(`IndexedDB ${dump.name} exists already; restore into an empty factory`);
      const withRecords = dump.stores.filter((s) => s.records.length > 0);
      if (withRecords.length === 0) continue;
      const tx = db.transaction(withRecords.map((s) => s.name), "readwrite");
      for (const s of withRecords) {
        const store = tx.objectStore(s.name);
        for (const [key, value] of s.records) {
          if (s.keyPath === null) store.put(value, key);
          else store.put(value);
        }
      }
      await committed(tx);
    } finally {
      db.close();
    }
  }
}
