// The nearest-rank quantile every benchmark reports (p50, p99, max): the value at index
// floor(q * n) of the sorted samples, the largest for q = 1; NaN for no samples.
export function quantile(xs: readonly number[], q: number): number {
  if (xs.length === 0) return NaN;
  const s = Float64Array.from(xs).sort();
  return s[Math.min(s.length - 1, Math.floor(q * s.length))]!;
}
