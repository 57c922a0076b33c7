// IndexedDB for matrix-sdk-crypto-wasm in Node: fake-indexeddb (in memory; olmDevice.ts makes it
// durable through snapshots). The wasm bindings look IndexedDB up on the global object and check
// its objects with `instanceof` against the global IDB* classes, so those are installed once, and
// each device gets a factory of its own.
import * as fake from "fake-indexeddb";

let installed = false;

/** A new, empty IndexedDB (its own namespace of databases). */
export function freshIndexedDb(): IDBFactory {
  if (!installed) {
    const g = globalThis as Record<string, unknown>;
    for (const [name, value] of Object.entries(fake)) {
      if (name.startsWith("IDB") && g[name] === undefined) g[name] = value;
    }
    installed = true;
  }
  return new fake.IDBFactory();
}

/**
 * Runs `open` with `factory` as the global `indexedDB`, which is where the OlmMachine opens its
 * store. The global keeps pointing at it afterwards (one device per process).
 */
export async function withIndexedDb<T>(factory: IDBFactory, open: () => Promise<T>): Promise<T> {
  (globalThis as Record<string, unknown>).indexedDB = factory;
  return open();
}
