// Percentile bootstrap intervals, shared by the site (intervals of its own figures) and the
// coordinator (consortium intervals from the sites' replicates). One definition of a percentile
// for both: numpy's default (linear interpolation between order statistics, "type 7"), so a test
// can check an interval against numpy.percentile.

/** Confidence level of every interval fedlora reports. */
const CI_LEVEL = 0.95;

/** The q-quantile (0..1) of values sorted ascending: numpy.percentile(x, 100q), method 'linear'. */
export function percentileSorted(sorted: ArrayLike<number>, q: number): number {
  const n = sorted.length;
  if (n === 0) return NaN;
  const pos = q * (n - 1);
  const lo = Math.floor(pos);
  const hi = Math.min(n - 1, lo + 1);
  return sorted[lo] + (pos - lo) * (sorted[hi] - sorted[lo]);
}

/** The q-quantile of unsorted values (non-finite ones left out). */
export function quantile(values: ArrayLike<number>, q: number): number {
  return percentileSorted(finiteSorted(values), q);
}

function finiteSorted(values: ArrayLike<number>): Float64Array {
  const out: number[] = [];
  for (let i = 0; i < values.length; i++) if (Number.isFinite(values[i])) out.push(values[i]);
  return Float64Array.from(out).sort();
}

/** The 95% percentile interval of bootstrap replicates. Replicates where the figure is undefined
 *  (NaN: e.g. no item of a diagnosis drawn) are left out; null when none is left. */
export function percentileInterval(replicates: ArrayLike<number>, level = CI_LEVEL): [number, number] | null {
  const s = finiteSorted(replicates);
  if (s.length === 0) return null;
  const a = (1 - level) / 2;
  return [percentileSorted(s, a), percentileSorted(s, 1 - a)];
}
