// The global adapter against this site's local-only adapter of the same round, on the same items:
// per item set (the held-out items, each consortium-wide set) the paired difference of accuracy,
// global − local-only, with its paired bootstrap interval (eval/metrics/paired-difference.ts). The
// per-item outcomes stay at the site; only the difference, its interval and replicates leave.
// The local-only adapter of round r is evaluated in round r's training task, the global version r
// after it (next round's task, or the job's final EVALUATE; a site runs its tasks one at a time),
// so the global evaluation finds the local-only outcomes already kept (workspace.localOutcomes).
import type { Figure } from '../eval/metrics/figure.ts';
import { pairedDifference } from '../eval/metrics/paired-difference.ts';
import type { FigureOptions, ItemOutcomes } from './evaluation.ts';

/** Metric name of the paired difference (reported with kind global, the global version's round). */
export const ACCURACY_MINUS_LOCAL = 'accuracy_minus_local';

/** The paired differences of the sets both adapters were scored on (same items, same order). */
export function pairedVsLocal(global: ItemOutcomes[], local: ItemOutcomes[], o: FigureOptions): { evalSet: string; figure: Figure }[] {
  const out: { evalSet: string; figure: Figure }[] = [];
  for (const g of global) {
    const l = local.find((x) => x.evalSet === g.evalSet);
    // Another item set (new records since, another max_items): not a paired comparison.
    if (!l || l.draws !== g.draws || l.correct.length !== g.correct.length) continue;
    out.push({ evalSet: g.evalSet, figure: pairedDifference(ACCURACY_MINUS_LOCAL, g.correct, l.correct, { resamples: o.resamples, seed: o.seed, label: g.draws }) });
  }
  return out;
}
