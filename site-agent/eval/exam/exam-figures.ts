// Figures of an exam, one definition for the CLI and the federated exam task, each with its 95%
// bootstrap interval over the questions (eval/metrics/resample.ts):
//   accuracy, ece, brier, latency_ms, latency_p50_ms, latency_p95_ms            (log-likelihood)
//   generation_accuracy, generation_unanswered, generation_latency_p50_ms / _p95_ms (generation)
//   accuracy / generation_accuracy per subject (subset subject=<name>), withheld below minCount;
//   exam_items: the questions scored (a count).
// Accuracies keep their bootstrap replicates, so the coordinator pools them across sites.
import { encodeSubset } from '../../../shared/metric-subset.ts';
import { calibration } from '../metrics/choice-figures.ts';
import { estimatedFigures, figureKey as K, weightedQuantiles, type Figure } from '../metrics/figure.ts';
import type { BootstrapOptions } from '../metrics/resample.ts';

export interface ExamOutcome {
  subject: string;
  answer: number;
  /** The option chosen; null: a generated answer that names none. */
  chosen: number | null;
  /** Softmax of the options' scores (log-likelihood); null for generation. */
  probs: number[] | null;
  /** Seconds to the complete answer. */
  seconds: number;
}

export function examFigures(items: ExamOutcome[], mode: 'loglik' | 'generate', o: { minCount: number; bootstrap: BootstrapOptions }): Figure[] {
  const n = items.length;
  if (n === 0) return [];
  const acc = mode === 'loglik' ? 'accuracy' : 'generation_accuracy';
  const lat = mode === 'loglik' ? 'latency' : 'generation_latency';
  const right = items.map((x) => x.chosen === x.answer);
  const ms = Float64Array.from(items, (x) => x.seconds * 1000);
  const bySubject = new Map<string, number[]>();
  items.forEach((x, i) => x.subject && bySubject.set(x.subject, [...(bySubject.get(x.subject) ?? []), i]));
  const subjects = [...bySubject].filter(([, ix]) => ix.length >= o.minCount).sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([s, ix]) => ({ subset: encodeSubset([['subject', s]]), ix }));
  const calibrated = mode === 'loglik' && items.every((x) => x.probs !== null && x.chosen !== null);

  const compute = (w: ArrayLike<number>) => {
    const out = new Map<string, number>();
    let total = 0, hit = 0, none = 0, sum = 0;
    for (let i = 0; i < n; i++) {
      total += w[i];
      if (right[i]) hit += w[i];
      if (items[i].chosen === null) none += w[i];
      sum += w[i] * ms[i];
    }
    out.set(K(acc), hit / total);
    if (mode === 'generate') out.set(K('generation_unanswered'), none / total);
    if (calibrated) {
      const c = calibration(items.map((x) => ({ probs: x.probs, answer: x.answer, chosen: x.chosen! })), w);
      out.set(K('ece'), c.ece);
      out.set(K('brier'), c.brier);
    }
    const [p50, p95] = weightedQuantiles(ms, w, [0.5, 0.95]);
    if (mode === 'loglik') out.set(K('latency_ms'), sum / total);
    out.set(K(`${lat}_p50_ms`), p50);
    out.set(K(`${lat}_p95_ms`), p95);
    for (const s of subjects) {
      let m = 0, h = 0;
      for (const i of s.ix) {
        m += w[i];
        if (right[i]) h += w[i];
      }
      out.set(K(acc, s.subset), m > 0 ? h / m : NaN);
    }
    return out;
  };
  const counts = new Map(subjects.map((s) => [K(acc, s.subset), s.ix.length]));
  const figs = estimatedFigures(n, compute, o.bootstrap, (k) => counts.get(k) ?? n, (name) => name === acc);
  return [...figs, { name: 'exam_items', subset: '', value: n, count: n }];
}
