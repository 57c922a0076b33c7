// The retention job: Parley's records of a person go privacy.retentionDays after the event
// (attendance and audit rows, ended calls' records, deactivated guests' rows). Run at start and
// daily; the cut-off comes from the injected clock, so a test moves time instead of waiting.
import type { Clock } from "../calls/ports.ts";
import type { PersonalDataStore, PurgeCounts } from "../store/store.ts";

export const DAY_MS = 24 * 3600 * 1000;

export interface RetentionDeps {
  store: Pick<PersonalDataStore, "purgePersonalData">;
  clock: Clock;
}

export async function purgeExpired(deps: RetentionDeps, retentionDays: number): Promise<PurgeCounts & { cutoff: number }> {
  const cutoff = deps.clock.now() - retentionDays * DAY_MS;
  return { ...(await deps.store.purgePersonalData(cutoff)), cutoff };
}
