// What a clinician reads from multiple-choice diagnosis items, with one definition for every
// evaluation (held-out items, cross-evaluation, exams):
//   accuracy; per diagnosis precision, recall (sensitivity), specificity, F1 and support;
//   macro (every diagnosis counts once) and weighted (by support) averages of precision, recall,
//   specificity and F1 over the diagnoses that occur as answer or prediction (scikit-learn's
//   labels); a diagnosis the model never predicts has precision 0 (scikit-learn's zero_division=0);
//   confusion counts (gold diagnosis x predicted option);
//   calibration of the option probabilities: probabilities = softmax over the options of the
//   score the prediction uses (mean per-token log-likelihood), so the predicted option is the most
//   probable; expected calibration error over 10 equal-width confidence bins (confidence = the
//   predicted option's probability) and the multi-class Brier score sum_k (p_k - y_k)^2;
//   answer latency: mean, p50 and p95 of the end-to-end time to a complete answer, in ms;
//   subgroup accuracy (sex, age band) where the records have the field.
// Per-diagnosis figures, confusion rows and subgroups with fewer than `minCount` items are withheld.
// Every estimate gets a 95% bootstrap interval over the items (resample.ts).
import { encodeSubset } from '../../../shared/metric-subset.ts';
import type { BootstrapOptions } from './resample.ts';
import { estimatedFigures, figureKey as K, weightedQuantiles, type Figure } from './figure.ts';

export interface ChoiceOutcome {
  /** The right diagnosis and the one the model chose (option texts). */
  gold: string;
  predicted: string;
  /** Index of the right option and of the chosen one. */
  answer: number;
  chosen: number;
  /** Probability of each option (softmax of the scores); null when the evaluator gave no scores. */
  probs: number[] | null;
  /** Seconds to the complete answer; null when the evaluator timed no single item. */
  seconds: number | null;
  /** Subgroups the case belongs to, e.g. { sex: 'F', age_band: '40-59' } (only fields the record has). */
  subgroups: Record<string, string>;
}

const ECE_BINS = 10;

/** Softmax of scores (numerically stable). */
export function softmax(scores: number[]): number[] {
  const m = Math.max(...scores);
  const e = scores.map((s) => Math.exp(s - m));
  const z = e.reduce((a, b) => a + b, 0);
  return e.map((x) => x / z);
}

/** The figures pooled across sites carry their replicates: whole-set figures and per-diagnosis recall. */
const pooled = (name: string, subset: string) => subset === '' || name === 'recall';

export function choiceFigures(items: ChoiceOutcome[], o: { minCount: number; bootstrap: BootstrapOptions }): Figure[] {
  const n = items.length;
  if (n === 0) return [];
  const labels = [...new Set(items.flatMap((x) => [x.gold, x.predicted]))].sort();
  const idx = new Map(labels.map((l, i) => [l, i]));
  const g = Int32Array.from(items, (x) => idx.get(x.gold)!);
  const p = Int32Array.from(items, (x) => idx.get(x.predicted)!);
  const support = new Array<number>(labels.length).fill(0);
  for (const gi of g) support[gi]++;
  const reported = labels.filter((_, c) => support[c] >= o.minCount);
  const withProbs = items.every((x) => x.probs !== null);
  const withTimes = items.every((x) => x.seconds !== null);
  const ms = Float64Array.from(items, (x) => (x.seconds ?? 0) * 1000);
  const subgroups = subgroupsOf(items, o.minCount);

  const counts = new Map<string, number>();
  const compute = (w: ArrayLike<number>): Map<string, number> => {
    const out = new Map<string, number>();
    const L = labels.length;
    const sup = new Float64Array(L), pred = new Float64Array(L), tp = new Float64Array(L);
    let total = 0, correct = 0;
    for (let i = 0; i < n; i++) {
      if (!w[i]) continue;
      total += w[i];
      sup[g[i]] += w[i];
      pred[p[i]] += w[i];
      if (g[i] === p[i]) {
        tp[g[i]] += w[i];
        correct += w[i];
      }
    }
    out.set(K('accuracy'), correct / total);
    const per = { precision: new Float64Array(L), recall: new Float64Array(L), specificity: new Float64Array(L), f1: new Float64Array(L) };
    for (let c = 0; c < L; c++) {
      const fp = pred[c] - tp[c], fn = sup[c] - tp[c], neg = total - sup[c];
      per.precision[c] = pred[c] > 0 ? tp[c] / pred[c] : 0;
      per.recall[c] = sup[c] > 0 ? tp[c] / sup[c] : 0;
      per.specificity[c] = neg > 0 ? (neg - fp) / neg : NaN;
      per.f1[c] = 2 * tp[c] + fp + fn > 0 ? (2 * tp[c]) / (2 * tp[c] + fp + fn) : 0;
    }
    for (const [name, v] of Object.entries(per)) {
      // the diagnoses occurring in this sample (as on the full sample: the statistic applied to the resampled items)
      const defined = [...v.keys()].filter((c) => (sup[c] > 0 || pred[c] > 0) && Number.isFinite(v[c]));
      out.set(K(`macro_${name}`), defined.reduce((a, c) => a + v[c], 0) / defined.length);
      const ws = defined.reduce((a, c) => a + sup[c], 0);
      out.set(K(`weighted_${name}`), defined.reduce((a, c) => a + sup[c] * v[c], 0) / ws);
    }
    for (const l of reported) {
      const c = idx.get(l)!;
      const s = encodeSubset([['diagnosis', l]]);
      out.set(K('precision', s), per.precision[c]);
      // undefined on a resample that drew no case of this diagnosis (left out of its interval)
      out.set(K('recall', s), sup[c] > 0 ? per.recall[c] : NaN);
      out.set(K('specificity', s), per.specificity[c]);
      out.set(K('f1', s), sup[c] > 0 ? per.f1[c] : NaN);
    }
    if (withProbs) {
      const { ece, brier } = calibration(items, w);
      out.set(K('ece'), ece);
      out.set(K('brier'), brier);
    }
    if (withTimes) {
      let sum = 0;
      for (let i = 0; i < n; i++) sum += w[i] * ms[i];
      const [p50, p95] = weightedQuantiles(ms, w, [0.5, 0.95]);
      out.set(K('latency_ms'), sum / total);
      out.set(K('latency_p50_ms'), p50);
      out.set(K('latency_p95_ms'), p95);
    }
    for (const sg of subgroups) {
      let m = 0, c = 0;
      for (const i of sg.items) {
        m += w[i];
        if (g[i] === p[i]) c += w[i];
      }
      out.set(K('accuracy', sg.subset), m > 0 ? c / m : NaN);
    }
    return out;
  };

  // Counts behind each figure (the full sample).
  for (const l of reported) {
    const c = idx.get(l)!;
    const s = encodeSubset([['diagnosis', l]]);
    counts.set(K('precision', s), p.filter((x) => x === c).length);
    counts.set(K('recall', s), support[c]);
    counts.set(K('specificity', s), n - support[c]);
    counts.set(K('f1', s), support[c]);
  }
  for (const sg of subgroups) counts.set(K('accuracy', sg.subset), sg.items.length);
  const figures = estimatedFigures(n, compute, o.bootstrap, (k) => counts.get(k) ?? n, pooled);

  // Counts, not estimates: support and the confusion rows of reported diagnoses.
  for (const l of reported) {
    const c = idx.get(l)!;
    figures.push({ name: 'support', subset: encodeSubset([['diagnosis', l]]), value: support[c], count: support[c] });
    const row = new Map<number, number>();
    for (let i = 0; i < n; i++) if (g[i] === c) row.set(p[i], (row.get(p[i]) ?? 0) + 1);
    for (const [pc, v] of [...row].sort((a, b) => a[0] - b[0])) {
      figures.push({ name: 'confusion', subset: encodeSubset([['diagnosis', l], ['predicted', labels[pc]]]), value: v, count: support[c] });
    }
  }
  return figures;
}

/** ECE (10 equal-width bins of confidence) and multi-class Brier score, with item multiplicities. */
export function calibration(items: Pick<ChoiceOutcome, 'probs' | 'answer' | 'chosen'>[], w: ArrayLike<number>): { ece: number; brier: number } {
  const binW = new Float64Array(ECE_BINS), binConf = new Float64Array(ECE_BINS), binAcc = new Float64Array(ECE_BINS);
  let total = 0, brier = 0;
  items.forEach((x, i) => {
    if (!w[i]) return;
    const probs = x.probs!;
    const conf = probs[x.chosen];
    const b = Math.min(ECE_BINS - 1, Math.floor(conf * ECE_BINS));
    binW[b] += w[i];
    binConf[b] += w[i] * conf;
    binAcc[b] += w[i] * (x.chosen === x.answer ? 1 : 0);
    let s = 0;
    probs.forEach((pk, k) => (s += (pk - (k === x.answer ? 1 : 0)) ** 2));
    brier += w[i] * s;
    total += w[i];
  });
  let ece = 0;
  for (let b = 0; b < ECE_BINS; b++) if (binW[b] > 0) ece += Math.abs(binAcc[b] - binConf[b]) / total;
  return { ece, brier: brier / total };
}

/** Subgroups (key=value) with at least minCount items, and their item indices. */
function subgroupsOf(items: ChoiceOutcome[], minCount: number): { subset: string; items: number[] }[] {
  const by = new Map<string, number[]>();
  items.forEach((x, i) => {
    for (const [k, v] of Object.entries(x.subgroups)) {
      const s = encodeSubset([[k, v]]);
      by.set(s, [...(by.get(s) ?? []), i]);
    }
  });
  return [...by].filter(([, ix]) => ix.length >= minCount).sort((a, b) => (a[0] < b[0] ? -1 : 1)).map(([subset, ix]) => ({ subset, items: ix }));
}
