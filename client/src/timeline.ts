// The join's timeline as User Timing marks ("parley:<step>"), each step marked once per page load
// at its first occurrence after the last `join` mark. The benchmark reads them from the page
// (performance.getEntriesByType("mark")) to show where a join's time goes; nothing else does.
const marked = new Set<string>();

/** Marks a step of the join. `join` starts a new timeline (each later step marks again once). */
export function markStep(step: string): void {
  if (step === "join") marked.clear();
  if (marked.has(step)) return;
  marked.add(step);
  try {
    globalThis.performance?.mark?.(`parley:${step}`);
  } catch {
    // No User Timing here (a test runtime): the timeline is only for the benchmark.
  }
}
