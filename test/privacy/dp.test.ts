// DP-FedAvg wrapper details beyond the conformance vectors: adaptive clipping, the noise
// multiplier split, Poisson site selection, refusing non-mean strategies.
import { describe, expect, it } from 'vitest';
import { createDpStrategy, splitNoiseMultiplier } from '../../coordinator/strategies/dp.ts';
import { poissonSample as selectSites } from '../../coordinator/strategies/selection.ts';
import { createFedAvg } from '../../coordinator/strategies/fedavg.ts';
import { createMedian } from '../../coordinator/strategies/robust.ts';
import { createStrategy } from '../../coordinator/strategies/registry.ts';
import { ctxOf, flatLayout, refs } from '../strategies/helpers.ts';

describe('adaptive clipping (Andrew et al. 2021)', () => {
  it('noise multiplier split z_delta = (z^-2 - (2 sigma_b)^-2)^-1/2, error when z >= 2 sigma_b', () => {
    expect(splitNoiseMultiplier(1, 5)).toBeCloseTo(Math.pow(1 - 1 / 100, -0.5), 12);
    expect(() => splitNoiseMultiplier(1, 0.5)).toThrow(/must be < 2 x bit noise std/);
    const dp = { clip_norm: 1, noise_multiplier: 2, delta: 1e-5, epsilon_budget: 5, sample_rate: 1, adaptive_clipping: true };
    expect(() => createStrategy({ name: 'fedavg', dp: { bit_noise_std: 0.5 } }, { dp, expectedSites: 10 }))
      .toThrow(expect.objectContaining({ code: 'FEDLORA_ERR_JOB_INVALID', message: expect.stringMatching(/must be < 2 x bit noise std/) }));
    // the default sigma_b is raised to z for small consortia, so the split is always defined
    expect(createStrategy({ name: 'fedavg' }, { dp, expectedSites: 10 }).name).toBe('dp(fedavg)');
  });
  it('C <- C exp(-eta (b - gamma)) with b the fraction NOT clipped; noise uses the clip norm used', async () => {
    const L = flatLayout(2);
    // 4 sites, norms 1, 2, 3, 10 with C = 2.5: not clipped = 2 -> b = 0.5 (bit noise tiny), gamma 0.25
    const vs = [[1, 0], [0, 2], [3, 0], [0, 10]].map((x) => Float32Array.from(x));
    const st = createDpStrategy(createFedAvg(), { clipNorm: 2.5, noiseMultiplier: 0, adaptive: { targetQuantile: 0.25, learningRate: 0.2, bitNoiseStd: 1e-9 }, deterministicNoise: true });
    const r = await st.aggregate(refs(vs), ctxOf(L, { selected: 4 }));
    expect(r.metrics.dp_clip_norm).toBe(2.5);
    expect(r.metrics.dp_unclipped_fraction).toBeCloseTo(0.5, 6);
    expect(r.state.dp_clip_norm as number).toBeCloseTo(2.5 * Math.exp(-0.2 * (0.5 - 0.25)), 6);
    // next round uses the adapted clip norm (sent to sites too)
    expect(st.configureRound({ round: 2, attempt: 1, seed: 0 }, [], r.state).config.dpClipNorm).toBe(r.state.dp_clip_norm);
    const r2 = await st.aggregate(refs(vs), ctxOf(L, { selected: 4, round: 2, state: r.state }));
    expect(r2.metrics.dp_clip_norm).toBe(r.state.dp_clip_norm);
    // sites' reported bits take precedence over the server's own check
    const withBits = refs(vs).map((u) => ({ ...u, unclippedBit: 1 }));
    const r3 = await st.aggregate(withBits, ctxOf(L, { selected: 4 }));
    expect(r3.metrics.dp_unclipped_fraction).toBeCloseTo(1, 6);
  });
  it('refuses to wrap a robust strategy (sensitivity is not C / D)', () => {
    expect(() => createDpStrategy(createMedian(), { clipNorm: 1, noiseMultiplier: 1 })).toThrow(/not mean-based/);
  });
  it('capped weighting: w = min(n, cap)/cap, D = selected x expected weight', async () => {
    const L = flatLayout(1);
    const st = createDpStrategy(createFedAvg(), { clipNorm: 100, noiseMultiplier: 0, weighting: 'capped', weightCap: 10, expectedWeight: 0.5 });
    const r = await st.aggregate(refs([Float32Array.from([4]), Float32Array.from([2])], [5, 50]), ctxOf(L, { selected: 2 }));
    // (0.5 * 4 + 1 * 2) / (2 * 0.5) = 4
    expect(r.global[0]).toBeCloseTo(4, 6);
  });
});

describe('Poisson site selection', () => {
  const sites = Array.from({ length: 2000 }, (_, k) => `site-${k}`);
  it('selects about q N sites, deterministic per seed, independent of listing order', () => {
    const a = selectSites(sites, 0.1, 7);
    expect(a.length).toBeGreaterThan(200 - 5 * Math.sqrt(180));
    expect(a.length).toBeLessThan(200 + 5 * Math.sqrt(180));
    expect(selectSites([...sites].reverse(), 0.1, 7)).toEqual(a);
    expect(selectSites(sites, 0.1, 8)).not.toEqual(a);
    expect(selectSites(sites, 1, 3)).toHaveLength(2000);
    expect(() => selectSites(sites, 0, 1)).toThrow(/sample_rate/);
  });
});
