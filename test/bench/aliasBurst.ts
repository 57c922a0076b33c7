// Alias burst: 1,000 distinct alias lookups through Synapse's directory API, spread over 10 s,
// against Parley's configured limits (meetings.aliasRooms). Prints how many rooms they made, and
// the cap they met (claims kept while the homeserver's answer is unknown count against it); a
// refused lookup must cost no room and leave no record.
import type { Institution } from "../../scripts/stack/institutions.ts";
import type { TestUser } from "../support/matrix.ts";
import { bench } from "./lib.ts";

export async function aliasBurst(A: Institution, u: TestUser, opts: { lookups?: number; seconds?: number } = {}): Promise<void> {
  const lookups = opts.lookups ?? 1000;
  const spreadMs = (opts.seconds ?? 10) * 1000;
  const store = A.parleyStore();
  const limits = A.parley.config.meetings.aliasRooms;
  const before = await store.aliasCount();
  const run = Date.now().toString(36);
  const token = u.client.getAccessToken();
  const t0 = performance.now();
  const statuses = await Promise.all(
    Array.from({ length: lookups }, async (_, i) => {
      await new Promise((r) => setTimeout(r, (i * spreadMs) / lookups));
      const alias = A.alias(`burst-${run}-${i}`);
      const res = await fetch(`${A.synapse.clientUrl}/_matrix/client/v3/directory/room/${encodeURIComponent(alias)}`, {
        headers: { authorization: `Bearer ${token}` },
      });
      await res.arrayBuffer();
      return res.status;
    }),
  );
  const seconds = (performance.now() - t0) / 1000;
  const created = await store.aliasCount() - before;
  // Claims kept because the homeserver did not answer in time (it may still make those rooms).
  const pending = (await store.listAliases("creating")).length;
  const errors = statuses.filter((s) => s >= 500).length;
  bench("alias_burst_rooms_created", created, "rooms");
  bench("alias_burst_cap", limits.max, "rooms");
  console.log(
    `alias burst: ${lookups} lookups in ${seconds.toFixed(1)} s; ${before} alias rooms before, cap ${limits.max}, ` +
      `${limits.burst} at once, ${limits.perMinute}/min; ${statuses.filter((s) => s === 200).length} found, ${errors} answered 5xx; ` +
      `${pending} of the rooms counted still being settled`,
  );
  if (before + created > limits.max) throw new Error(`alias burst: ${before + created} alias rooms exceed the cap of ${limits.max}`);
}
