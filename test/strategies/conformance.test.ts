// One conformance suite for every strategy (same checks for all), then hand-computed vectors
// per strategy. Results are compared against numbers worked out by hand in the comments.
import { describe, expect, it } from 'vitest';
import { createStrategy } from '../../coordinator/strategies/registry.ts';
import type { Strategy } from '../../coordinator/strategies/types.ts';
import { bRanges } from '../../coordinator/strategies/lora-ffa.ts';
import { loraPairs } from '../../shared/lora/pairs.ts';
import { ctxOf, detachingRefs, flatLayout, loraLayout, maxAbsDiff, randomVec, refs } from './helpers.ts';

const layout = loraLayout(2, 2, 3, 4); // 2 modules x (A 2x3 + B 4x2) = 28 elements
const N = 5;

interface Case { spec: Record<string, unknown>; dp?: Record<string, unknown>; identity: 'exact' | 'single' | 'product'; prepare?: (v: Float32Array) => Float32Array }
const zeroA = (v: Float32Array) => {
  const out = new Float32Array(v.length);
  for (const [a, b] of bRanges(layout)) out.set(v.subarray(a, b), a);
  return out;
};
const CASES: Case[] = [
  { spec: { name: 'fedavg' }, identity: 'exact' },
  { spec: { name: 'fedavg', weight_cap: 3 }, identity: 'exact' },
  { spec: { name: 'fedavg', weighting: 'uniform' }, identity: 'exact' },
  { spec: { name: 'fedprox', mu: 0.01 }, identity: 'exact' },
  { spec: { name: 'fedadam' }, identity: 'single' },
  { spec: { name: 'fedyogi' }, identity: 'single' },
  { spec: { name: 'fedadagrad' }, identity: 'single' },
  { spec: { name: 'median' }, identity: 'exact' },
  { spec: { name: 'trimmed_mean', beta: 0.2 }, identity: 'exact' },
  { spec: { name: 'norm_bound', max_norm: 100 }, identity: 'exact' },
  { spec: { name: 'multi_krum', f: 1, m: 2 }, identity: 'exact' },
  { spec: { name: 'fedit' }, identity: 'exact' },
  { spec: { name: 'fedit', payload: 'weights' }, identity: 'exact' },
  { spec: { name: 'ffa' }, identity: 'exact', prepare: zeroA },
  { spec: { name: 'svd' }, identity: 'product' },
  { spec: { name: 'fedavg' }, dp: { clip_norm: 100, noise_multiplier: 0, delta: 1e-5, epsilon_budget: 10, sample_rate: 1, adaptive_clipping: false }, identity: 'exact' },
  { spec: { name: 'ffa' }, dp: { clip_norm: 100, noise_multiplier: 0, delta: 1e-5, epsilon_budget: 10, sample_rate: 1, adaptive_clipping: false }, identity: 'exact', prepare: zeroA },
];

const make = (c: Case): Strategy => createStrategy(c.spec, c.dp ? { dp: c.dp as never, deterministicNoise: true } : {});
const label = (c: Case) => `${c.dp ? 'dp+' : ''}${JSON.stringify(c.spec)}`;

function products(flat: Float32Array): number[] {
  const out: number[] = [];
  for (const p of loraPairs(layout).pairs) for (let o = 0; o < p.outF; o++) for (let i = 0; i < p.inF; i++) {
    let s = 0;
    for (let j = 0; j < p.r; j++) s += flat[p.b.offset + o * p.r + j] * flat[p.a.offset + j * p.inF + i];
    out.push(s);
  }
  return out;
}

describe.each(CASES)('conformance: $spec.name', (c) => {
  const prep = c.prepare ?? ((v: Float32Array) => v);
  const vecs = Array.from({ length: N }, (_, k) => prep(randomVec(layout.total, 100 + k)));
  const examples = [10, 20, 5, 40, 25];
  const global = prep(randomVec(layout.total, 7, 0.1));
  const ctx = () => ctxOf(layout, { global: Float32Array.from(global), selected: N });

  it(`${label(c)}: identical updates aggregate to that update`, async () => {
    const st = make(c);
    const u = vecs[0];
    const r = await st.aggregate(refs(Array(N).fill(u), examples), ctx());
    if (c.identity === 'exact') {
      const expected = st.payloadKind === 'delta' ? global.map((g, i) => g + u[i]) : u;
      expect(maxAbsDiff(r.global, expected)).toBeLessThan(1e-5);
    } else if (c.identity === 'single') {
      const one = await make(c).aggregate(refs([u], [7]), ctx());
      expect(maxAbsDiff(r.global, one.global)).toBeLessThan(1e-5);
    } else {
      expect(maxAbsDiff(products(r.global), products(u))).toBeLessThan(1e-5);
    }
  });

  it(`${label(c)}: permutation invariant, right length, finite`, async () => {
    const a = await make(c).aggregate(refs(vecs, examples), ctx());
    const perm = [3, 0, 4, 1, 2];
    const b = await make(c).aggregate(refs(perm.map((k) => vecs[k]), perm.map((k) => examples[k]), perm.map((k) => `site-${k}`)), ctx());
    expect(a.global.length).toBe(layout.total);
    expect(a.global.every(Number.isFinite)).toBe(true);
    if (c.identity === 'product') expect(maxAbsDiff(products(a.global), products(b.global))).toBeLessThan(1e-5);
    else expect(maxAbsDiff(a.global, b.global)).toBeLessThan(1e-6);
  });

  it(`${label(c)}: rejects NaN / Inf input with FEDLORA_ERR_UPDATE_NONFINITE naming the site and tensor`, async () => {
    for (const bad of [NaN, Infinity]) {
      const v = Float32Array.from(vecs[2]);
      v[bRanges(layout)[0][0] + 1] = bad;
      const all = [...vecs.slice(0, 2), v, ...vecs.slice(3)];
      await expect(make(c).aggregate(refs(all, examples), ctx())).rejects.toMatchObject({ code: 'FEDLORA_ERR_UPDATE_NONFINITE', message: expect.stringMatching(/site-2.*lora_B\.weight\[1\]/) });
    }
  });

  it(`${label(c)}: ${make(c).meanBased ? 'streams: at most one update loaded at a time' : 'loads all updates (documented, not streaming)'}`, async () => {
    const expected = await make(c).aggregate(refs(vecs, examples), ctx());
    const d = detachingRefs(vecs, examples);
    if (make(c).meanBased) {
      const r = await make(c).aggregate(d.refs, ctx());
      expect(d.loads()).toBe(N); // each update loaded exactly once
      expect(maxAbsDiff(r.global, expected.global)).toBeLessThan(1e-6);
    } else {
      // keeping earlier updates alive while loading later ones breaks under the detaching loader
      let broken = false;
      try {
        const r = await make(c).aggregate(d.refs, ctx());
        broken = maxAbsDiff(r.global, expected.global) > 1e-6 || r.global.some((x) => !Number.isFinite(x));
      } catch {
        broken = true;
      }
      expect(broken).toBe(true);
    }
  });
});

describe('hand-computed vectors', () => {
  const L = flatLayout(2);
  const g = Float32Array.from([1, -1]);
  const ctx = (over = {}) => ctxOf(L, { global: Float32Array.from(g), selected: 3, ...over });
  const U = [[1, 2], [3, 4], [10, -6]].map((x) => Float32Array.from(x));

  it('fedavg weighted by examples: (1*[1,2] + 3*[3,4] + 6*[10,-6]) / 10 = [7, -2.2]', async () => {
    const r = await createStrategy({ name: 'fedavg' }).aggregate(refs(U, [1, 3, 6]), ctx());
    expect(r.global[0]).toBeCloseTo(1 + 7, 5);
    expect(r.global[1]).toBeCloseTo(-1 - 2.2, 5);
  });
  it('fedavg capped weights (cap 3): weights 1,3,3 -> ([1,2] + 3[3,4] + 3[10,-6]) / 7 = [40/7, -4/7]', async () => {
    const r = await createStrategy({ name: 'fedavg', weight_cap: 3 }).aggregate(refs(U, [1, 3, 6]), ctx());
    expect(r.global[0]).toBeCloseTo(1 + 40 / 7, 5);
    expect(r.global[1]).toBeCloseTo(-1 - 4 / 7, 5);
  });
  it('fedprox sends prox_mu and aggregates like fedavg', async () => {
    const st = createStrategy({ name: 'fedprox', mu: 0.05 });
    expect(st.configureRound({ round: 1, attempt: 1, seed: 0 }, [], {}).config).toEqual({ proxMu: 0.05 });
    const r = await st.aggregate(refs(U, [1, 3, 6]), ctx());
    expect(r.global[0]).toBeCloseTo(8, 5);
  });
  it('fedadam one and two rounds (eta 0.1, b1 0.9, b2 0.99, tau 1e-9)', async () => {
    // round 1: delta = [7, -2.2]; m = 0.1 delta = [0.7, -0.22]; v = 0.01 delta^2 = [0.49, 0.0484]
    // step = 0.1 m / sqrt(v) = [0.1, -0.1]
    const st = createStrategy({ name: 'fedadam' });
    const r1 = await st.aggregate(refs(U, [1, 3, 6]), ctx());
    expect(r1.global[0]).toBeCloseTo(1.1, 5);
    expect(r1.global[1]).toBeCloseTo(-1.1, 5);
    // round 2 with delta = [1, 1]: m = [0.63+0.1, -0.198+0.1] = [0.73, -0.098]
    // v = [0.99*0.49 + 0.01, 0.99*0.0484 + 0.01] = [0.4951, 0.057916]
    const r2 = await st.aggregate(refs([Float32Array.from([1, 1])]), ctx({ round: 2, global: r1.global, state: r1.state }));
    expect(r2.global[0]).toBeCloseTo(1.1 + 0.1 * 0.73 / Math.sqrt(0.4951), 5);
    expect(r2.global[1]).toBeCloseTo(-1.1 + 0.1 * -0.098 / Math.sqrt(0.057916), 5);
  });
  it('fedyogi one and two rounds (eta 0.01, tau 1e-3)', async () => {
    const st = createStrategy({ name: 'fedyogi' });
    const r1 = await st.aggregate(refs(U, [1, 3, 6]), ctx());
    // v = 0 - 0.01 d^2 sign(0 - d^2) = 0.01 d^2 = [0.49, 0.0484]; step = 0.01 m / (sqrt v + 1e-3)
    expect(r1.global[0]).toBeCloseTo(1 + 0.01 * 0.7 / (0.7 + 1e-3), 6);
    expect(r1.global[1]).toBeCloseTo(-1 + 0.01 * -0.22 / (0.22 + 1e-3), 6);
    // round 2, delta [1,1]: v0 = 0.49 - 0.01*1*sign(0.49-1) = 0.50; v1 = 0.0484 + 0.01 = 0.0584
    const r2 = await st.aggregate(refs([Float32Array.from([1, 1])]), ctx({ round: 2, global: r1.global, state: r1.state }));
    expect(r2.global[0]).toBeCloseTo(r1.global[0] + 0.01 * 0.73 / (Math.sqrt(0.5) + 1e-3), 6);
    expect(r2.global[1]).toBeCloseTo(r1.global[1] + 0.01 * -0.098 / (Math.sqrt(0.0584) + 1e-3), 6);
  });
  it('median: coordinate-wise [3, 2]; even count averages the middle two', async () => {
    const r = await createStrategy({ name: 'median' }).aggregate(refs(U), ctx());
    expect([...r.global]).toEqual([1 + 3, -1 + 2]);
    const r4 = await createStrategy({ name: 'median' }).aggregate(refs([...U, Float32Array.from([0, 0])]), ctx());
    expect([...r4.global]).toEqual([1 + 2, -1 + 1]); // sorted x: 0,1,3,10 -> 2; y: -6,0,2,4 -> 1
  });
  it('trimmed mean beta 0.25 over 4 updates drops 1 each side', async () => {
    const r = await createStrategy({ name: 'trimmed_mean', beta: 0.25 }).aggregate(refs([...U, Float32Array.from([5, 100])]), ctx());
    // x: 1,3,5,10 -> mean(3,5)=4 ; y: -6,2,4,100 -> mean(2,4)=3
    expect([...r.global]).toEqual([5, 2]);
  });
  it('norm bound 5: [10,-6] (norm 11.66) scaled to norm 5, others kept; weights by examples', async () => {
    const r = await createStrategy({ name: 'norm_bound', max_norm: 5 }).aggregate(refs(U, [1, 1, 1]), ctx());
    const s = 5 / Math.hypot(10, -6);
    expect(r.global[0]).toBeCloseTo(1 + (1 + 3 + 10 * s) / 3, 5);
    expect(r.global[1]).toBeCloseTo(-1 + (2 + 4 - 6 * s) / 3, 5);
    expect(r.metrics.clipped).toBe(1);
  });
  it('multi-krum f=1, m=2 drops the outlier', async () => {
    const V = [[0, 0], [1, 0], [0, 1], [50, 50]].map((x) => Float32Array.from(x));
    // n=4, f=1: each score sums the 1 nearest squared distance: 0->1, 1->1, 2->1 (ties), 3->min(5000, 2401+2500, 2500+2401)=4901
    // ties among 0,1,2 broken by site id -> sites 0, 1 -> mean [0.5, 0]
    const r = await createStrategy({ name: 'multi_krum', f: 1, m: 2 }).aggregate(refs(V), ctxOf(L, { global: new Float32Array(2) }));
    expect([...r.global]).toEqual([0.5, 0]);
  });
  it('DP clip with z = 0: clipped deltas summed over the fixed denominator (selected = 4, 3 arrived)', async () => {
    const dp = { clip_norm: 5, noise_multiplier: 0, delta: 1e-5, epsilon_budget: 10, sample_rate: 1, adaptive_clipping: false };
    const st = createStrategy({ name: 'fedavg' }, { dp, deterministicNoise: true });
    expect(st.configureRound({ round: 1, attempt: 1, seed: 0 }, [], {}).config).toMatchObject({ dpClipNorm: 5 });
    const r = await st.aggregate(refs(U, [1, 3, 6]), ctx({ selected: 4 }));
    const n2 = Math.hypot(3, 4); // exactly 5: not clipped
    const s3 = 5 / Math.hypot(10, -6);
    expect(n2).toBe(5);
    expect(r.global[0]).toBeCloseTo(1 + (1 + 3 + 10 * s3) / 4, 5);
    expect(r.global[1]).toBeCloseTo(-1 + (2 + 4 - 6 * s3) / 4, 5);
    expect(r.metrics.dp_clipped).toBe(1);
  });
  it("DP noise with a fixed seed: std z*C/D on every coordinate, reproducible per seed, random without one", async () => {
    const n = 40_000;
    const Lb = flatLayout(n);
    const dp = { clip_norm: 2, noise_multiplier: 1.5, delta: 1e-5, epsilon_budget: 10, sample_rate: 1, adaptive_clipping: false };
    const zero = [new Float32Array(n)];
    const run = (seed: number, det = true) => createStrategy({ name: 'fedavg' }, { dp, deterministicNoise: det }).aggregate(refs(zero), ctxOf(Lb, { selected: 3, seed }));
    const a = await run(1);
    const expectedStd = (1.5 * 2) / 3;
    let s = 0, s2 = 0, s4 = 0;
    for (const x of a.global) { s += x; s2 += x * x; s4 += x ** 4; }
    const mean = s / n, varr = s2 / n - mean * mean;
    expect(Math.abs(mean)).toBeLessThan(5 * expectedStd / Math.sqrt(n));
    expect(Math.sqrt(varr) / expectedStd).toBeGreaterThan(0.98);
    expect(Math.sqrt(varr) / expectedStd).toBeLessThan(1.02);
    expect(s4 / n / (varr * varr)).toBeGreaterThan(2.85); // Gaussian kurtosis 3
    expect(s4 / n / (varr * varr)).toBeLessThan(3.15);
    expect(a.metrics.dp_noise_std).toBeCloseTo(expectedStd, 12);
    expect([...(await run(1)).global.slice(0, 50)]).toEqual([...a.global.slice(0, 50)]);
    expect(maxAbsDiff((await run(2)).global, a.global)).toBeGreaterThan(0.1);
    expect(maxAbsDiff((await run(1, false)).global, a.global)).toBeGreaterThan(0.1);
  });
});
