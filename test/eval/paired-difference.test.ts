// The paired difference of two adapters on the same items (global − local-only): its value and
// 95% interval checked against a hand computation on small vectors with a fixed seed, and what
// pairing buys over two separate intervals of the same items.
import { describe, it, expect } from 'vitest';
import { pairedDifference } from '../../site-agent/eval/metrics/paired-difference.ts';
import { bootstrapFigures, resampleWeights } from '../../site-agent/eval/metrics/resample.ts';
import { percentileInterval } from '../../shared/bootstrap-interval.ts';
import { pairedVsLocal, ACCURACY_MINUS_LOCAL } from '../../site-agent/agent/paired-comparison.ts';

const near = (a: number, b: number, tol = 1e-9) => expect(Math.abs(a - b)).toBeLessThanOrEqual(tol);

describe('paired bootstrap difference', () => {
  it('equals a hand computation: 5 items, 5 resamples, fixed seed', () => {
    const o = { resamples: 5, seed: 11, label: 'paired:hand' };
    // The draws (item multiplicities) of this seed and label, pinned so the hand computation below is of them.
    expect([...resampleWeights(5, o)].map((w) => Array.from(w))).toEqual([
      [0, 2, 1, 0, 2],
      [0, 1, 0, 0, 4],
      [1, 0, 1, 1, 2],
      [1, 0, 2, 1, 1],
      [2, 0, 2, 1, 0],
    ]);
    const global = [1, 1, 0, 1, 1], local = [0, 1, 0, 0, 1];
    // per-item difference d = [1, 0, 0, 1, 0], mean 4/5 − 2/5 = 0.4; each resample: sum(w·d) / sum(w) = 0/5, 0/5, 2/5, 2/5, 3/5
    // sorted [0, 0, 0.4, 0.4, 0.6]; numpy 'linear' percentiles: 2.5% at position 0.1 -> 0,
    // 97.5% at position 3.9 -> 0.4 + 0.9 * (0.6 - 0.4) = 0.58
    const f = pairedDifference('accuracy_minus_local', global, local, o);
    expect(f.name).toBe('accuracy_minus_local');
    expect(f.subset).toBe('');
    expect(f.count).toBe(5);
    near(f.value, 0.4);
    near(f.ci![0], 0);
    near(f.ci![1], 0.58);
    expect(Array.from(f.replicates!)).toEqual(Array.from(Float32Array.from([0, 0, 0.4, 0.4, 0.6])));
  });

  it('resamples the items once for both adapters: a lead on the same items shows where two separate intervals overlap', () => {
    // 40 items: local-only right on the first 20, global on the first 26 (never worse on an item).
    const n = 40;
    const local = Array.from({ length: n }, (_, i) => (i < 20 ? 1 : 0));
    const global = Array.from({ length: n }, (_, i) => (i < 26 ? 1 : 0));
    const o = { resamples: 1000, seed: 3, label: 'paired:lead' };
    const acc = (v: number[]) => bootstrapFigures(n, (w) => {
      let s = 0, t = 0;
      for (let i = 0; i < n; i++) { s += w[i] * v[i]; t += w[i]; }
      return new Map([['accuracy', s / t]]);
    }, o).get('accuracy')!;
    const g = acc(global), l = acc(local);
    expect(g.ci![0]).toBeLessThan(l.ci![1]); // separate intervals overlap
    const d = pairedDifference('d', global, local, o);
    near(d.value, 6 / 40);
    expect(d.ci![0]).toBeGreaterThan(0); // the paired one excludes 0
    // with the same draws, the paired replicates are the differences of the two accuracy replicates
    for (let b = 0; b < o.resamples; b++) near(d.replicates![b], g.replicates[b] - l.replicates[b], 1e-6);
    const ci = percentileInterval(Float64Array.from(g.replicates, (x, b) => x - l.replicates[b]))!;
    near(d.ci![0], ci[0], 1e-6);
    near(d.ci![1], ci[1], 1e-6);
  });

  it('identical outcomes give a difference of 0 with the interval [0, 0]; unequal lengths are an error', () => {
    const v = [1, 0, 1, 1, 0, 0, 1];
    const f = pairedDifference('d', v, v, { resamples: 200, seed: 1, label: 'same' });
    expect([f.value, ...f.ci!]).toEqual([0, 0, 0]);
    expect(() => pairedDifference('d', [1, 0], [1], { resamples: 10, seed: 1, label: 'x' })).toThrow(/same items/);
  });

  it('the site pairs a global version with the local-only adapter only on the same item set', () => {
    const o = { minItems: 5, resamples: 100, seed: 5 };
    const global = [
      { evalSet: '', draws: 'choices:aaaa', correct: [1, 1, 1, 0, 1, 1] },
      { evalSet: 'shared:consortium', draws: 'choices:bbbb', correct: [1, 0, 1, 0, 1, 1] },
      { evalSet: 'shared:other', draws: 'choices:cccc', correct: [1, 1, 1, 1, 1] },
    ];
    const local = [
      { evalSet: '', draws: 'choices:aaaa', correct: [0, 1, 0, 0, 1, 0] },
      { evalSet: 'shared:consortium', draws: 'choices:b-other-items', correct: [1, 1, 1, 1, 1, 1] },
    ];
    const got = pairedVsLocal(global, local, o);
    expect(got.map((p) => p.evalSet)).toEqual(['']);
    expect(got[0].figure.name).toBe(ACCURACY_MINUS_LOCAL);
    near(got[0].figure.value, 5 / 6 - 2 / 6);
  });
});
