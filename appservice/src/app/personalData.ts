// `parley export --user @x:hs` and `parley erase --user @x:hs`: what Parley's store holds about
// one person, read from the config's store directly (Parley may be running: SQLite's WAL lets both
// in, and each erasure is one transaction). See docs/personal-data.md.
import { serverOf } from "../calls/policy.ts";
import type { ParleyConfig } from "../config/schema.ts";
import { MatrixGuestAccounts } from "../matrix/guestAccounts.ts";
import { MatrixHomeserver } from "../matrix/homeserver.ts";
import { botUserId } from "../matrix/botUser.ts";
import { eraseUser, exportUser } from "../privacy/personalData.ts";
import { SqliteStore } from "../store/sqlite.ts";
import { userIds } from "./start.ts";

/** A Matrix user id, or undefined (the CLI says what is wrong). */
export function checkUserId(userId: string | undefined): string | undefined {
  if (!userId) return undefined;
  return userId.startsWith("@") && userId.length <= 255 && serverOf(userId) !== undefined ? userId : undefined;
}

async function withStore<T>(config: ParleyConfig, fn: (store: SqliteStore) => Promise<T>): Promise<T> {
  const store = new SqliteStore(config.store.path);
  try {
    return await fn(store);
  } finally {
    await store.close();
  }
}

const clock = { now: () => Date.now() };

/** Everything about the user, as pretty JSON. */
export async function exportCommand(config: ParleyConfig, userId: string): Promise<string> {
  return withStore(config, async (store) => JSON.stringify(await exportUser({ store, ids: userIds(config), clock }, userId), null, 2));
}

/** Erases the user; a live guest's account is deactivated through the homeserver first. */
export async function eraseCommand(config: ParleyConfig, userId: string): Promise<{ rows: number; guestDeactivated: boolean }> {
  const homeserver = new MatrixHomeserver({ url: config.homeserver.url, asToken: config.appservice.asToken, botUserId: botUserId(config) });
  const accounts = new MatrixGuestAccounts({ url: config.homeserver.url, asToken: config.appservice.asToken, homeserver });
  return withStore(config, (store) => eraseUser({ store, ids: userIds(config), clock, accounts }, userId));
}
