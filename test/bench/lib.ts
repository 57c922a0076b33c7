// Helpers every benchmark shares: figures are printed as `BENCH <name> <value> <unit>`.

/** The p-th percentile (nearest rank) of the samples. */
export function percentile(samples: number[], p: number): number {
  if (samples.length === 0) return Number.NaN;
  const sorted = [...samples].sort((a, b) => a - b);
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export function bench(name: string, value: number, unit: string): void {
  console.log(`BENCH ${name} ${value.toFixed(2)} ${unit}`);
}

/** Milliseconds one run of `fn` takes. */
export async function timed<T>(fn: () => Promise<T>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}
