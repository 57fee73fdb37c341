// The site's evaluation figures against an independent computation (test/eval/ref/metrics_ref.py:
// the bootstrap draws re-implemented in Python from their documented definition, statistics and
// percentiles by numpy): a bootstrap interval of a small vector with a fixed seed, accuracy,
// macro/weighted averages, per-diagnosis figures, confusion counts, ECE and Brier; and what is
// withheld below the minimum count.
import { beforeAll, describe, it, expect } from 'vitest';
import { join } from 'node:path';
import { PYTHON, requireTool, TORCH } from '../runner/reference-tools.ts';
import { runProcess } from '../runner/run-process.ts';
import { bootstrapFigures, resampleWeights } from '../../site-agent/eval/metrics/resample.ts';
import { choiceFigures, softmax, type ChoiceOutcome } from '../../site-agent/eval/metrics/choice-figures.ts';
import { weightedQuantiles } from '../../site-agent/eval/metrics/figure.ts';
import { parseSubset } from '../../shared/metric-subset.ts';
import { mulberry32 } from '../../shared/prng.ts';

const REF = join(import.meta.dirname, 'ref', 'metrics_ref.py');

async function numpy(query: object): Promise<Record<string, any>> {
  await requireTool(TORCH);
  const r = await runProcess(PYTHON, [REF], { input: JSON.stringify(query) });
  if (r.status !== 0) throw new Error(`metrics_ref.py failed: ${r.stderr}`);
  return JSON.parse(r.stdout);
}

const near = (a: number, b: number, tol = 1e-9) => expect(Math.abs(a - b)).toBeLessThanOrEqual(tol);

describe('bootstrap intervals', () => {
  it('a 95% percentile interval of a small vector with a fixed seed equals numpy\'s hand computation', async () => {
    const values = [0.2, 1.5, 0.9, 3.1, 0.4, 2.2, 1.1, 0.7, 5.0, 1.9];
    const o = { resamples: 400, seed: 7, label: 'hand' };
    const got = bootstrapFigures(values.length, (w) => {
      let s = 0, n = 0;
      values.forEach((v, i) => { s += w[i] * v; n += w[i]; });
      return new Map([['mean', s / n], ['p50', weightedQuantiles(values, w, [0.5])[0]]]);
    }, o);
    const ref = await numpy({ ...o, B: o.resamples, values });
    near(got.get('mean')!.value, ref.mean);
    near(got.get('mean')!.ci![0], ref.mean_ci[0]);
    near(got.get('mean')!.ci![1], ref.mean_ci[1]);
    near(got.get('p50')!.ci![0], ref.p50_ci[0]);
    near(got.get('p50')!.ci![1], ref.p50_ci[1]);
    expect(got.get('mean')!.ci![0]).toBeLessThan(got.get('mean')!.ci![1]);
    expect(got.get('mean')!.replicates.length).toBe(400);
  });

  it('draws are fixed by (seed, label): same label same resamples, another label others, n draws each', () => {
    const a = [...resampleWeights(5, { resamples: 3, seed: 1, label: 'x' })].map((w) => [...w]);
    const b = [...resampleWeights(5, { resamples: 3, seed: 1, label: 'x' })].map((w) => [...w]);
    const c = [...resampleWeights(5, { resamples: 3, seed: 1, label: 'y' })].map((w) => [...w]);
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    for (const w of a) expect(w.reduce((x, y) => x + y, 0)).toBe(5);
  });
});

/** 40 multiple-choice outcomes over 4 diagnoses with option probabilities, seeded. */
function outcomes(): ChoiceOutcome[] {
  const r = mulberry32(5);
  const dx = ['Asthma', 'COPD', 'Pneumonia', 'Bronchitis'];
  return Array.from({ length: 40 }, (_, i) => {
    const gold = dx[i < 16 ? 0 : i < 28 ? 1 : i < 37 ? 2 : 3];
    const answer = Math.floor(r() * 4);
    const scores = [0, 1, 2, 3].map((k) => (k === answer ? 1.2 : 0) + 2 * r() - 1);
    const chosen = scores.indexOf(Math.max(...scores));
    const options = [...dx.filter((d) => d !== gold)];
    options.splice(answer, 0, gold);
    return { gold, predicted: options[chosen], answer, chosen, probs: softmax(scores), seconds: 0.05 + r(), subgroups: { sex: i % 3 === 0 ? 'F' : 'M', ...(i < 30 ? { age_band: '40-59' } : {}) } };
  });
}

describe('multiple-choice figures', () => {
  const items = outcomes();
  const o = { minCount: 5, bootstrap: { resamples: 300, seed: 11, label: 'site-a:choices' } };
  const figs = choiceFigures(items, o);
  const fig = (name: string, subset = '') => figs.find((f) => f.name === name && f.subset === subset);
  let ref: Record<string, any>;
  let t: { labels: string[]; support: number[]; confusion: number[][] } & Record<string, number[] | number>;
  beforeAll(async () => {
    ref = await numpy({ B: 300, seed: 11, label: 'site-a:choices', gold: items.map((x) => x.gold), pred: items.map((x) => x.predicted), probs: items.map((x) => x.probs), answer: items.map((x) => x.answer), chosen: items.map((x) => x.chosen) });
    t = ref.table;
  });

  it('accuracy, macro and weighted averages with intervals equal numpy\'s', () => {
    near(fig('accuracy')!.value, ref.accuracy);
    near(fig('accuracy')!.ci![0], ref.accuracy_ci[0]);
    near(fig('accuracy')!.ci![1], ref.accuracy_ci[1]);
    for (const m of ['precision', 'recall', 'specificity', 'f1']) {
      near(fig(`macro_${m}`)!.value, t[`macro_${m}`] as number);
      near(fig(`weighted_${m}`)!.value, t[`weighted_${m}`] as number);
    }
    near(fig('macro_f1')!.ci![0], ref.macro_f1_ci[0]);
    near(fig('macro_f1')!.ci![1], ref.macro_f1_ci[1]);
    near(fig('weighted_recall')!.ci![1], ref.weighted_recall_ci[1]);
    expect(fig('accuracy')!.count).toBe(40);
    expect(fig('accuracy')!.replicates!.length).toBe(300);
  });

  it('per-diagnosis precision, recall, specificity, F1, support and confusion counts equal numpy\'s; below the minimum count withheld', () => {
    t.labels.forEach((l, c) => {
      const s = `diagnosis=${l}`;
      if (t.support[c] < 5) {
        expect(fig('recall', s)).toBeUndefined();
        expect(figs.filter((f) => f.subset.startsWith(`${s};`))).toEqual([]);
        return;
      }
      for (const m of ['precision', 'recall', 'specificity', 'f1']) near(fig(m, s)!.value, (t[m] as number[])[c]);
      expect(fig('support', s)!.value).toBe(t.support[c]);
      expect(fig('support', s)!.ci).toBeUndefined();
      expect(fig('recall', s)!.count).toBe(t.support[c]);
      t.labels.forEach((l2, c2) => {
        const cell = fig('confusion', `${s};predicted=${l2}`);
        expect(cell?.value ?? 0).toBe(t.confusion[c][c2]);
      });
    });
    expect(fig('recall', 'diagnosis=Bronchitis')).toBeUndefined(); // 3 cases < 5
    expect(fig('recall', 'diagnosis=Asthma')!.replicates).toBeDefined(); // pooled across sites
    expect(fig('precision', 'diagnosis=Asthma')!.replicates).toBeUndefined();
    const first = t.labels[0];
    near(fig('recall', `diagnosis=${first}`)!.ci![0], ref.recall_first_ci[0]);
    near(fig('recall', `diagnosis=${first}`)!.ci![1], ref.recall_first_ci[1]);
  });

  it('calibration (ECE over 10 bins, Brier), latency quantiles, and subgroups with the minimum count', () => {
    near(fig('ece')!.value, ref.ece);
    near(fig('brier')!.value, ref.brier);
    expect(fig('ece')!.ci![0]).toBeLessThanOrEqual(fig('ece')!.ci![1]);
    const ms = items.map((x) => x.seconds! * 1000).sort((a, b) => a - b);
    near(fig('latency_p50_ms')!.value, (ms[19] + ms[20]) / 2);
    near(fig('latency_p95_ms')!.value, ms[37] + 0.05 * (ms[38] - ms[37]));
    expect(fig('accuracy', 'sex=F')!.count).toBe(14);
    expect(fig('accuracy', 'age_band=40-59')!.count).toBe(30);
    const f = items.filter((x) => x.subgroups.sex === 'F');
    near(fig('accuracy', 'sex=F')!.value, f.filter((x) => x.gold === x.predicted).length / f.length);
    // a subgroup below the minimum count is withheld
    expect(choiceFigures(items, { ...o, minCount: 15 }).some((x) => x.subset === 'sex=F')).toBe(false);
    expect(parseSubset('diagnosis=A%3Bb;predicted=C')).toEqual({ diagnosis: 'A;b', predicted: 'C' });
  });
});
