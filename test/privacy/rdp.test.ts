// The RDP accountant against published TensorFlow Privacy / dp_accounting vectors, plus the
// properties bisection and the ledger rely on.
import { describe, expect, it } from 'vitest';
import { computeEpsilon, DEFAULT_RDP_ORDERS, findNoiseMultiplier, logErfc, rdpSubsampledGaussian } from '../../coordinator/privacy/rdp.ts';
import { createPrivacyLedger } from '../../coordinator/privacy/ledger.ts';
import { runProcess, runProcessOk } from '../runner/run-process.ts';

const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);

describe('RDP accountant', () => {
  it('matches TF Privacy: q=0.0025, sigma=1.3, 6000 steps, delta=1e-5 -> eps 0.72422', () => {
    const r = computeEpsilon({ noiseMultiplier: 1.3, sampleRate: 0.0025, steps: 6000, delta: 1e-5 });
    expect(rel(r.epsilon, 0.72422)).toBeLessThan(1e-4);
  });
  it('matches TF Privacy: q=1, sigma=0.7, 2 steps, delta=1e-5 -> eps 10.8602', () => {
    const r = computeEpsilon({ noiseMultiplier: 0.7, sampleRate: 1, steps: 2, delta: 1e-5 });
    expect(rel(r.epsilon, 10.8602)).toBeLessThan(1e-4);
  });
  it('orders grid is dp_accounting default: 1.1..10.9, 11..63, 128, 256, 512, 1024', () => {
    expect(DEFAULT_RDP_ORDERS.length).toBe(99 + 53 + 4);
    expect(DEFAULT_RDP_ORDERS[0]).toBeCloseTo(1.1, 12);
    expect(DEFAULT_RDP_ORDERS[98]).toBeCloseTo(10.9, 12);
    expect(DEFAULT_RDP_ORDERS.slice(99, 101)).toEqual([11, 12]);
    expect(DEFAULT_RDP_ORDERS.slice(-5)).toEqual([63, 128, 256, 512, 1024]);
  });
  it('fractional-order series agrees with the integer-order sum near an integer order', () => {
    for (const [q, s] of [[0.01, 1.1], [0.1, 2], [0.3, 0.9]]) {
      const a = rdpSubsampledGaussian(q, s, 4);
      const b = rdpSubsampledGaussian(q, s, 4 + 1e-7);
      expect(rel(b, a)).toBeLessThan(1e-5);
    }
  });
  it('q = 1 is the plain Gaussian mechanism: alpha / (2 sigma^2)', () => {
    expect(rdpSubsampledGaussian(1, 2, 7.5)).toBeCloseTo(7.5 / 8, 14);
  });
  it('log erfc is accurate in the body and the far tail', () => {
    expect(rel(Math.exp(logErfc(0.5)), 0.4795001221869535)).toBeLessThan(1e-13);
    expect(rel(Math.exp(logErfc(1.9)), 0.007209570764742366)).toBeLessThan(1e-11);
    expect(rel(Math.exp(logErfc(5)), 1.5374597944280349e-12)).toBeLessThan(1e-11);
    expect(rel(Math.exp(logErfc(-1)), 1.8427007929497148)).toBeLessThan(1e-13);
    // asymptotic: log erfc(x) = -x^2 - log(x sqrt(pi)) + log(1 - 1/(2x^2) + 3/(4x^4) - 15/(8x^6))
    const x = 30;
    expect(logErfc(x)).toBeCloseTo(-x * x - Math.log(x * Math.sqrt(Math.PI)) + Math.log(1 - 1 / (2 * x * x) + 3 / (4 * x ** 4) - 15 / (8 * x ** 6)), 9);
  });
  it('epsilon decreases with noise, increases with rounds and sample rate; 0 rounds -> 0', () => {
    const e = (z: number, q: number, t: number) => computeEpsilon({ noiseMultiplier: z, sampleRate: q, steps: t, delta: 1e-5 }).epsilon;
    expect(e(1.0, 0.1, 100)).toBeGreaterThan(e(1.5, 0.1, 100));
    expect(e(1.0, 0.1, 200)).toBeGreaterThan(e(1.0, 0.1, 100));
    expect(e(1.0, 0.2, 100)).toBeGreaterThan(e(1.0, 0.1, 100));
    expect(e(1.0, 0.1, 0)).toBe(0);
    expect(e(0, 0.1, 1)).toBe(Infinity);
  });
  it('findNoiseMultiplier returns the smallest z meeting the target', () => {
    const q = { targetEpsilon: 2, sampleRate: 0.05, steps: 300, delta: 1e-6 };
    const z = findNoiseMultiplier(q);
    const eps = (x: number) => computeEpsilon({ noiseMultiplier: x, sampleRate: q.sampleRate, steps: q.steps, delta: q.delta }).epsilon;
    expect(eps(z)).toBeLessThanOrEqual(2);
    expect(eps(z * (1 - 5e-4))).toBeGreaterThan(2);
  });
  it('rejects bad arguments with FEDLORA_ERR_INVALID_ARGUMENT', () => {
    expect(() => computeEpsilon({ noiseMultiplier: 1, sampleRate: 1.5, steps: 1, delta: 1e-5 })).toThrow(/sample rate/);
    expect(() => computeEpsilon({ noiseMultiplier: 1, sampleRate: 0.1, steps: 1.5, delta: 1e-5 })).toThrow(/steps/);
    expect(() => findNoiseMultiplier({ targetEpsilon: -1, sampleRate: 0.1, steps: 1, delta: 1e-5 })).toThrow(/target epsilon/);
  });
});

describe('privacy ledger', () => {
  const dp = { noise_multiplier: 1.1, sample_rate: 0.1, delta: 1e-5, epsilon_budget: 3 };
  it('epsilon after each round matches computeEpsilon, and the budget check is exact', () => {
    const l = createPrivacyLedger(dp);
    const h = l.history(5);
    expect(h.map((e) => e.round)).toEqual([1, 2, 3, 4, 5]);
    for (const e of h) expect(e.epsilon).toBeCloseTo(computeEpsilon({ noiseMultiplier: 1.1, sampleRate: 0.1, steps: e.round, delta: 1e-5 }).epsilon, 10);
    const max = l.maxRounds();
    expect(max).toBeGreaterThan(5);
    expect(l.wouldExceedBudget(max)).toBe(false);
    expect(l.wouldExceedBudget(max + 1)).toBe(true);
    expect(() => l.assertWithinBudget(max + 1)).toThrow(expect.objectContaining({ code: 'FEDLORA_ERR_PRIVACY_BUDGET' }));
    expect(() => l.assertWithinBudget(max)).not.toThrow();
  });
  it('rejects invalid settings naming the field', () => {
    expect(() => createPrivacyLedger({ ...dp, sample_rate: 0 })).toThrow(/privacy\.dp\.sample_rate/);
  });
});

describe('fedlora privacy CLI', () => {
  const cli = (...args: string[]) => runProcess(process.execPath, ['cli/bin.mjs', 'privacy', ...args]);
  it('epsilon --json prints {epsilon, order}', async () => {
    const out = await runProcessOk(process.execPath, ['cli/bin.mjs', 'privacy', 'epsilon', '--noise-multiplier', '1.3', '--sample-rate', '0.0025', '--rounds', '6000', '--delta', '1e-5', '--json']);
    const j = JSON.parse(out);
    expect(rel(j.epsilon, 0.72422)).toBeLessThan(1e-4);
    expect(typeof j.order).toBe('number');
  });
  it('noise --json prints the smallest noise multiplier; bad flags give a clear error', async () => {
    const r = await cli('noise', '--target-epsilon', '1', '--sample-rate', '0.0025', '--rounds', '6000', '--delta', '1e-5', '--json');
    expect(r.status).toBe(0);
    const z = JSON.parse(r.stdout).noise_multiplier;
    expect(computeEpsilon({ noiseMultiplier: z, sampleRate: 0.0025, steps: 6000, delta: 1e-5 }).epsilon).toBeLessThanOrEqual(1);
    const bad = await cli('epsilon', '--noise-multiplier', '1', '--sample-rate', '2', '--rounds', '10', '--delta', '1e-5');
    expect(bad.status).not.toBe(0);
    expect(bad.stderr).toMatch(/FEDLORA_ERR_INVALID_ARGUMENT: --sample-rate: expected a number in \(0, 1\]/);
    const missing = await cli('epsilon', '--noise-multiplier', '1');
    expect(missing.status).not.toBe(0);
    expect(missing.stderr).toMatch(/sample-rate/);
  });
});
