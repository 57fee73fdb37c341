// A figure a site reports: a named value over a subset of the evaluation items (shared/metric-subset.ts),
// the count behind it, its 95% bootstrap interval, and the bootstrap replicates the coordinator
// pools into a consortium interval.
import { percentileSorted } from '../../../shared/bootstrap-interval.ts';
import { bootstrapFigures, type BootstrapOptions, type FigureFn } from './resample.ts';

export interface Figure {
  name: string;
  /** '' = the whole set; 'diagnosis=…', 'sex=…', 'age_band=…', 'subject=…', 'diagnosis=…;predicted=…'. */
  subset: string;
  value: number;
  /** Items (or tokens) behind the value: the weight of this site in a consortium figure. */
  count: number;
  /** 95% percentile bootstrap interval. Absent: a count or a throughput, not an estimate (support,
   *  confusion cells, tokens per second, item counts); null: undefined on every resample. */
  ci?: [number, number] | null;
  /** Bootstrap resamples behind the interval. */
  resamples?: number;
  /** The figure on each bootstrap resample (sent for the figures pooled across sites). */
  replicates?: Float32Array;
}

export const figureKey = (name: string, subset = ''): string => `${name}\u0000${subset}`;

function splitKey(k: string): { name: string; subset: string } {
  const i = k.indexOf('\u0000');
  return { name: k.slice(0, i), subset: k.slice(i + 1) };
}

/** Figures of `compute` with intervals; `count` gives each figure's count (by key), `pooled`
 *  says which keep their replicates for the consortium. */
export function estimatedFigures(n: number, compute: FigureFn, o: BootstrapOptions, count: (key: string) => number, pooled: (name: string, subset: string) => boolean): Figure[] {
  const out: Figure[] = [];
  for (const [k, b] of bootstrapFigures(n, compute, o)) {
    const { name, subset } = splitKey(k);
    out.push({ name, subset, value: b.value, count: count(k), ci: b.ci, resamples: o.resamples, ...(pooled(name, subset) ? { replicates: b.replicates } : {}) });
  }
  return out;
}

/** The q-quantile of values drawn with multiplicities (numpy.percentile of the expanded sample). */
export function weightedQuantiles(values: ArrayLike<number>, w: ArrayLike<number>, qs: number[]): number[] {
  const expanded: number[] = [];
  for (let i = 0; i < values.length; i++) for (let k = 0; k < w[i]; k++) expanded.push(values[i]);
  expanded.sort((a, b) => a - b);
  return qs.map((q) => percentileSorted(expanded, q));
}
