// The seeded nonparametric bootstrap behind every interval a site reports: B resamples of the
// evaluation items, drawn with replacement, each represented by how many times every item was
// drawn (a multiplicity vector), so one figure function serves the full sample (all ones) and
// every resample. All figures of one item set share the same resamples (their intervals are
// consistent with each other, and two adapters evaluated on the same set are compared on the same
// resamples). Interval: 95% percentile interval (shared/bootstrap-interval.ts).
//
// Draws: Rng.derive(seed, 'bootstrap', label) (shared/prng.ts: xoshiro128** seeded through
// sha256), item index = rng.nextInt(n), n draws per resample, B resamples in order. The label
// names the site and the item set, so sites draw independently of each other.
import { Rng } from '../../../shared/prng.ts';
import { percentileInterval } from '../../../shared/bootstrap-interval.ts';

/** Resamples per interval unless evaluation.bootstrap.resamples says otherwise. */
export const DEFAULT_RESAMPLES = 1000;
export const DEFAULT_BOOTSTRAP_SEED = 20240611;

export interface BootstrapOptions {
  resamples: number;
  seed: number;
  /** Names the draws (site id and item set). */
  label: string;
}

/** Multiplicities of B resamples of n items (each yields a fresh array). */
export function* resampleWeights(n: number, o: BootstrapOptions): Generator<Uint32Array> {
  const rng = Rng.derive(o.seed, 'bootstrap', o.label);
  for (let b = 0; b < o.resamples; b++) {
    const w = new Uint32Array(n);
    for (let i = 0; i < n; i++) w[rng.nextInt(n)]++;
    yield w;
  }
}

/** Figure values by key, for one multiplicity vector; NaN where a figure is undefined on it. */
export type FigureFn = (weights: ArrayLike<number>) => Map<string, number>;

export interface Bootstrapped {
  value: number;
  /** The 95% percentile interval; null when the figure is undefined on every resample. */
  ci: [number, number] | null;
  /** The figure on each resample, in draw order (NaN where undefined); float32, as it is sent. */
  replicates: Float32Array;
}

/** Every figure of `compute` on the full sample, with its interval and replicates. Keys are those
 *  of the full sample; a key missing on a resample counts as undefined there. */
export function bootstrapFigures(n: number, compute: FigureFn, o: BootstrapOptions): Map<string, Bootstrapped> {
  const full = compute(new Uint32Array(n).fill(1));
  const reps = new Map<string, Float64Array>([...full.keys()].map((k) => [k, new Float64Array(o.resamples).fill(NaN)]));
  let b = 0;
  if (n > 0) {
    for (const w of resampleWeights(n, o)) {
      const got = compute(w);
      for (const [k, arr] of reps) arr[b] = got.get(k) ?? NaN;
      b++;
    }
  }
  const out = new Map<string, Bootstrapped>();
  for (const [k, value] of full) {
    const replicates = reps.get(k)!;
    out.set(k, { value, ci: percentileInterval(replicates), replicates: Float32Array.from(replicates) });
  }
  return out;
}
