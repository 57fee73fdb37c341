// DP Poisson site sampling as the strategy runs it (Strategy.configureRound of the DP wrapper):
// over many simulated rounds every eligible site is included at rate q within a binomial bound,
// pairs independently, the sample comes from the coordinator's secret key (not the public
// selection seed), and the noised mean divides by q x N whatever the sample's size.
import { createHash } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createStrategy } from '../../coordinator/strategies/registry.ts';
import { roundSamplingKey } from '../../coordinator/privacy/noise-key.ts';
import type { Candidate, RoundInfo } from '../../coordinator/strategies/types.ts';
import { ctxOf, flatLayout, refs } from '../strategies/helpers.ts';

const dp = { clip_norm: 1, noise_multiplier: 0, delta: 1e-5, epsilon_budget: 1e9, sample_rate: 0.3, adaptive_clipping: false };
const KEY = createHash('sha256').update('coordinator noise key of this test').digest();
const N = 20;
const candidates: Candidate[] = Array.from({ length: N }, (_, k) => ({ siteId: `site-${String(k).padStart(2, '0')}`, online: k % 3 !== 0 }));
const roundOf = (round: number, key = KEY, seed = 7): RoundInfo => ({ round, attempt: 1, seed, samplingKey: roundSamplingKey(key, 'job-s', round, 1) });

/** Two-sided interval [lo, hi] of Binomial(n, p) holding all but `alpha` of its mass (exact, in logs). */
function binomialInterval(n: number, p: number, alpha: number): [number, number] {
  const logPmf: number[] = [n * Math.log1p(-p)];
  for (let k = 0; k < n; k++) logPmf.push(logPmf[k] + Math.log(n - k) - Math.log(k + 1) + Math.log(p) - Math.log1p(-p));
  const pmf = logPmf.map(Math.exp);
  let lo = 0, hi = n, below = 0, above = 0;
  while (below + pmf[lo] <= alpha / 2) below += pmf[lo++];
  while (above + pmf[hi] <= alpha / 2) above += pmf[hi--];
  return [lo, hi];
}

describe('DP Poisson site sampling', () => {
  const st = createStrategy({ name: 'fedavg' }, { dp, maxSites: 1000, population: N });
  const T = 4000;
  const samples = Array.from({ length: T }, (_, k) => st.configureRound(roundOf(k + 1), candidates, {}));

  it('each site is included at rate q over many rounds (exact binomial bound, 1e-6), offline ones too', () => {
    const [lo, hi] = binomialInterval(T, dp.sample_rate, 1e-6);
    expect(lo).toBeGreaterThan(T * dp.sample_rate - 5 * Math.sqrt(T * 0.21));
    for (const c of candidates) {
      const k = samples.filter((s) => s.sites.includes(c.siteId)).length;
      expect(k, `${c.siteId} (online: ${c.online}) sampled ${k} of ${T} rounds`).toBeGreaterThanOrEqual(lo);
      expect(k).toBeLessThanOrEqual(hi);
    }
    // sample sizes average q N; an empty sample occurs (0.7^20 ~ 8e-4 per round) and is a valid round
    const mean = samples.reduce((a, s) => a + s.sites.length, 0) / T;
    expect(Math.abs(mean - dp.sample_rate * N)).toBeLessThan(5 * Math.sqrt((N * 0.21) / T));
  });

  it('sites are sampled independently: pair co-inclusion at rate q^2', () => {
    const [lo, hi] = binomialInterval(T, dp.sample_rate ** 2, 1e-6);
    for (const [a, b] of [[0, 1], [2, 17], [5, 19]]) {
      const both = samples.filter((s) => s.sites.includes(candidates[a].siteId) && s.sites.includes(candidates[b].siteId)).length;
      expect(both).toBeGreaterThanOrEqual(lo);
      expect(both).toBeLessThanOrEqual(hi);
    }
  });

  it('the sample comes from the secret key: the public seed does not change it, another key does', () => {
    const a = st.configureRound(roundOf(3, KEY, 7), candidates, {});
    expect(st.configureRound(roundOf(3, KEY, 123456), candidates, {}).sites).toEqual(a.sites);
    const other = createHash('sha256').update('another key').digest();
    const differs = Array.from({ length: 20 }, (_, k) => st.configureRound(roundOf(k + 1, other), candidates, {}).sites.join() !== samples[k].sites.join());
    expect(differs.filter(Boolean).length).toBeGreaterThan(15);
    // the plan says how the round publishes: whatever arrives (0 = noise only), divided by q x N
    expect(a).toMatchObject({ minUpdates: 0, sampling: { rate: 0.3, population: N, denominator: 0.3 * N }, config: { dpClipNorm: 1 } });
  });

  it('the noised mean divides by q x N whatever the sample size; an empty sample publishes noise only', async () => {
    const L = flatLayout(3);
    const noisy = createStrategy({ name: 'fedavg' }, { dp: { ...dp, noise_multiplier: 2 }, population: N, deterministicNoise: true });
    const exact = createStrategy({ name: 'fedavg' }, { dp, population: N, deterministicNoise: true });
    const v = [Float32Array.from([0.3, 0, 0]), Float32Array.from([0, 0.6, 0])];
    const r = await exact.aggregate(refs(v), ctxOf(L, { selected: 2 }));
    expect([...r.global].map((x) => +x.toFixed(6))).toEqual([+(0.3 / 6).toFixed(6), +(0.6 / 6).toFixed(6), 0]); // D = 0.3 x 20 = 6, not 2
    const empty = await noisy.aggregate([], ctxOf(L, { selected: 0 }));
    expect(empty.metrics).toMatchObject({ sites: 0, dp_noise_std: (2 * 1) / 6 });
    expect(empty.global.some((x) => x !== 0)).toBe(true); // the noise is published
  });

  it('without sampling (q = 1) the strategy selects as before: max_sites of the online sites by the public seed', () => {
    const plain = createStrategy({ name: 'fedavg' }, { dp: { ...dp, sample_rate: 1 }, maxSites: 4 });
    const p = plain.configureRound({ round: 1, attempt: 1, seed: 7 }, candidates, {});
    expect(p.sites).toHaveLength(4);
    expect(p.sites.every((s) => candidates.find((c) => c.siteId === s)!.online)).toBe(true);
    expect(p.sampling).toBeUndefined();
    expect(plain.configureRound({ round: 1, attempt: 1, seed: 7 }, candidates, {}).sites).toEqual(p.sites);
  });
});
