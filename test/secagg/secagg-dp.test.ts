// Secure aggregation composed with the strategies: the coordinator finishes the round from the
// unmasked sum (plain FedAvg: uniform mean; DP: fixed denominator, noise added after unmasking).
import { describe, expect, it } from 'vitest';
import { createStrategy } from '../../coordinator/strategies/registry.ts';
import { aggregateSecureSum } from '../../coordinator/strategies/secure.ts';
import { levelsFor } from '../../shared/secagg/quantize.ts';
import { ctxOf, flatLayout, maxAbsDiff, randomVec } from '../strategies/helpers.ts';
import { runRound } from './helpers.ts';

const DIM = 32;
function clipL2(v: Float32Array, C: number): Float32Array {
  const n = Math.hypot(...v);
  return n > C ? v.map((x) => (x * C) / n) : v;
}

describe('secure aggregation + strategies', () => {
  const C = 0.5;
  // sites clip their deltas to the DP clip norm before masking (clipRange = C)
  const inputs = new Map<string, Float32Array>(Array.from({ length: 5 }, (_, k) => [`s${k}`, clipL2(randomVec(DIM, 900 + k, 0.3), C)]));
  const cfg = { round: 1, threshold: 3, clipRange: C, dim: DIM };
  const L = flatLayout(DIM);

  it('plain FedAvg from the secure sum = uniform mean of the survivors', async () => {
    const r = runRound(inputs, cfg, { dropBeforeMask: ['s1'] });
    const out = await aggregateSecureSum(createStrategy({ name: 'fedavg' }), r.sum, r.count, ctxOf(L, { selected: 5 }));
    const ids = ['s0', 's2', 's3', 's4'];
    const mean = new Float32Array(DIM).map((_, i) => ids.reduce((a, id) => a + inputs.get(id)![i], 0) / 4);
    expect(maxAbsDiff(out.global, mean)).toBeLessThan((4 * 2 * C) / levelsFor(5) + 1e-6);
  });
  it('DP-FedAvg from the secure sum: sum / D (D = selected), noise std z C / D added after unmasking', async () => {
    const r = runRound(inputs, cfg);
    const dp = { clip_norm: C, noise_multiplier: 0, delta: 1e-5, epsilon_budget: 5, sample_rate: 1, adaptive_clipping: false };
    const st = createStrategy({ name: 'fedavg' }, { dp, deterministicNoise: true });
    const out = await aggregateSecureSum(st, r.sum, r.count, ctxOf(L, { selected: 8 }));
    const expected = new Float32Array(DIM).map((_, i) => [...inputs.values()].reduce((a, v) => a + v[i], 0) / 8);
    expect(maxAbsDiff(out.global, expected)).toBeLessThan(1e-6);
    const noisy = createStrategy({ name: 'fedavg' }, { dp: { ...dp, noise_multiplier: 1 }, deterministicNoise: true });
    const o2 = await aggregateSecureSum(noisy, r.sum, r.count, ctxOf(L, { selected: 8 }));
    expect(o2.metrics.dp_noise_std).toBeCloseTo(C / 8, 12);
    expect(maxAbsDiff(o2.global, expected)).toBeGreaterThan(0.01);
  });
  it('robust strategies cannot run on a secure sum', async () => {
    await expect(aggregateSecureSum(createStrategy({ name: 'median' }), new Float32Array(DIM), 3, ctxOf(L))).rejects.toThrow(/not mean-based/);
  });
});

describe('FFA-LoRA + secure aggregation + DP: only the B factors are masked and noised', () => {
  it('pack -> secagg -> unpack -> DP(ffa) gives global + mean of B deltas, A untouched', async () => {
    const { loraLayout } = await import('../strategies/helpers.ts');
    const { packTrainable, unpackTrainable } = await import('../../coordinator/strategies/secure.ts');
    const layout = loraLayout(2, 2, 3, 4);
    const dp = { clip_norm: 10, noise_multiplier: 0, delta: 1e-5, epsilon_budget: 5, sample_rate: 1, adaptive_clipping: false };
    const st = createStrategy({ name: 'ffa' }, { dp, deterministicNoise: true });
    const global = randomVec(layout.total, 77);
    const deltas = [1, 2, 3].map((k) => unpackTrainable(st, layout, packTrainable(st, layout, randomVec(layout.total, 40 + k, 0.2))));
    const packed = new Map(deltas.map((d, k) => [`s${k}`, packTrainable(st, layout, d)]));
    const dim = packed.get('s0')!.length;
    expect(dim).toBe(2 * 4 * 2); // two lora_B [4, 2]
    const r = runRound(packed, { round: 1, threshold: 2, clipRange: 10, dim });
    const out = await aggregateSecureSum(st, unpackTrainable(st, layout, r.sum), r.count, ctxOf(layout, { global, selected: 3 }));
    const expected = global.map((g, i) => g + (deltas[0][i] + deltas[1][i] + deltas[2][i]) / 3);
    expect(maxAbsDiff(out.global, expected)).toBeLessThan(1e-5);
  });
});
