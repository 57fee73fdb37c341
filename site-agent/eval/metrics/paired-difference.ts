// The paired difference of two adapters scored on the SAME items (global vs local-only, at one
// site, on one item set): mean(a) − mean(b) with a 95% paired bootstrap interval — each resample
// draws the items once and applies the draw to both adapters, so what the two share (easy and
// hard items) cancels and the interval is that of the per-item difference. Two separate
// intervals of the same items overlap even where one adapter is ahead on nearly every resample.
//
// The draws are resample.ts's (seed, label): with the label of the item set's own figures, the
// difference on resample b is exactly the difference of the two accuracy replicates b.
import { estimatedFigures, figureKey, type Figure } from './figure.ts';
import type { BootstrapOptions } from './resample.ts';
import { fail } from '../../../shared/errors.ts';

/** Figure `name`: mean(a) − mean(b) over paired per-item scores (e.g. 1 = correct, 0 = not),
 *  its interval and replicates (the coordinator pools them into the consortium's difference). */
export function pairedDifference(name: string, a: ArrayLike<number>, b: ArrayLike<number>, bootstrap: BootstrapOptions): Figure {
  const n = a.length;
  if (b.length !== n) throw fail('FEDLORA_ERR_INTERNAL', `paired difference ${name}: ${n} items against ${b.length}; the two adapters must be scored on the same items`);
  if (n === 0) throw fail('FEDLORA_ERR_INTERNAL', `paired difference ${name}: no items`);
  const d = Float64Array.from({ length: n }, (_, i) => a[i] - b[i]);
  const key = figureKey(name);
  const compute = (w: ArrayLike<number>) => {
    let sum = 0, total = 0;
    for (let i = 0; i < n; i++) {
      sum += w[i] * d[i];
      total += w[i];
    }
    return new Map([[key, sum / total]]);
  };
  return estimatedFigures(n, compute, bootstrap, () => n, () => true)[0];
}
