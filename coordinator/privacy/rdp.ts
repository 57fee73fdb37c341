// Rényi-DP accountant for the Poisson-subsampled Gaussian mechanism (Mironov, Talwar, Zhang
// 2019, "Rényi Differential Privacy of the Sampled Gaussian Mechanism"), ported from Google's
// dp_accounting (rdp_privacy_accountant.py: _compute_log_a_int, _compute_log_a_frac,
// compute_epsilon) so that the numbers match the published TensorFlow Privacy vectors.
// Everything is computed in log space: A_alpha overflows a double for large orders.
import { fail } from '../../shared/errors.ts';

/** dp_accounting's DEFAULT_RDP_ORDERS (same float expressions, so the same doubles). */
export const DEFAULT_RDP_ORDERS: readonly number[] = [
  ...Array.from({ length: 99 }, (_, k) => 1 + (k + 1) / 10),
  ...Array.from({ length: 53 }, (_, k) => 11 + k),
  128, 256, 512, 1024,
];

function logAdd(logx: number, logy: number): number {
  const a = Math.min(logx, logy);
  const b = Math.max(logx, logy);
  if (a === -Infinity) return b;
  return Math.log1p(Math.exp(a - b)) + b;
}

function logSub(logx: number, logy: number): number {
  if (logx < logy) throw fail('FEDLORA_ERR_INTERNAL', 'rdp: log-space subtraction would be negative');
  if (logy === -Infinity) return logx;
  if (logx === logy) return -Infinity;
  const d = Math.expm1(logx - logy);
  return Number.isFinite(d) ? Math.log(d) + logy : logx;
}

const LOG_SQRT_PI = 0.5 * Math.log(Math.PI);

/** log(erfc(x)) accurate in the far tail (where erfc underflows a double). For |x| < 2 the
 *  Maclaurin series of erf (at most ~2 digits lost to cancellation); for x >= 2 Laplace's
 *  continued fraction erfc(x) = e^{-x^2}/sqrt(pi) / (x + (1/2)/(x + 1/(x + (3/2)/(x + ...)))),
 *  evaluated with the modified Lentz method and kept in log space. */
export function logErfc(x: number): number {
  if (x === Infinity) return -Infinity;
  if (x === -Infinity) return Math.log(2);
  if (Math.abs(x) < 2) {
    // erf(x) = 2/sqrt(pi) sum_n (-1)^n x^(2n+1) / (n! (2n+1))
    let term = x; // x^(2n+1)/n! with sign
    let sum = x;
    const x2 = x * x;
    for (let n = 1; n < 200; n++) {
      term *= -x2 / n;
      const add = term / (2 * n + 1);
      sum += add;
      if (Math.abs(add) < 1e-17 * Math.abs(sum)) break;
    }
    const erf = (2 / Math.sqrt(Math.PI)) * sum;
    return Math.log(1 - erf);
  }
  if (x < 0) {
    // erfc(x) = 2 - erfc(-x), and erfc(-x) < erfc(2) ~ 4.7e-3: no cancellation.
    return Math.log(2 - Math.exp(logErfc(-x)));
  }
  // Modified Lentz for f = x + a1/(x + a2/(x + ...)), a_n = n/2.
  const tiny = 1e-300;
  let f = x;
  let C = f;
  let D = 0;
  for (let n = 1; n < 5000; n++) {
    const a = n / 2;
    D = x + a * D;
    if (D === 0) D = tiny;
    C = x + a / C;
    if (C === 0) C = tiny;
    D = 1 / D;
    const delta = C * D;
    f *= delta;
    if (Math.abs(delta - 1) < 1e-16) break;
  }
  return -x * x - LOG_SQRT_PI - Math.log(f);
}

/** log(A_alpha) for integer alpha, 0 < q < 1 (dp_accounting _compute_log_a_int). */
function computeLogAInt(q: number, sigma: number, alpha: number): number {
  let logA = -Infinity;
  let logBinom = 0; // log C(alpha, 0)
  const lq = Math.log(q);
  const l1q = Math.log1p(-q);
  for (let i = 0; i <= alpha; i++) {
    if (i > 0) logBinom += Math.log((alpha - i + 1) / i);
    const logCoef = logBinom + i * lq + (alpha - i) * l1q;
    const s = logCoef + (i * i - i) / (2 * sigma * sigma);
    logA = logAdd(logA, s);
  }
  return logA;
}

/** log(A_alpha) for fractional alpha, 0 < q < 1 (dp_accounting _compute_log_a_frac). The
 *  binomial coefficients of a real alpha alternate in sign, hence the signed log-space sums. */
function computeLogAFrac(q: number, sigma: number, alpha: number): number {
  let logA0 = -Infinity;
  let logA1 = -Infinity;
  const z0 = sigma * sigma * Math.log(1 / q - 1) + 0.5;
  const lq = Math.log(q);
  const l1q = Math.log1p(-q);
  let logAbsCoef = 0; // |C(alpha, 0)| = 1
  let coefSign = 1;
  for (let i = 0; ; i++) {
    if (i > 0) {
      const ratio = (alpha - i + 1) / i; // C(alpha,i) = C(alpha,i-1) * (alpha-i+1)/i
      if (ratio === 0) break; // cannot happen for fractional alpha
      if (ratio < 0) coefSign = -coefSign;
      logAbsCoef += Math.log(Math.abs(ratio));
    }
    const j = alpha - i;
    const logT0 = logAbsCoef + i * lq + j * l1q;
    const logT1 = logAbsCoef + j * lq + i * l1q;
    const logE0 = Math.log(0.5) + logErfc((i - z0) / (Math.SQRT2 * sigma));
    const logE1 = Math.log(0.5) + logErfc((z0 - j) / (Math.SQRT2 * sigma));
    const logS0 = logT0 + (i * i - i) / (2 * sigma * sigma) + logE0;
    const logS1 = logT1 + (j * j - j) / (2 * sigma * sigma) + logE1;
    if (coefSign > 0) {
      logA0 = logAdd(logA0, logS0);
      logA1 = logAdd(logA1, logS1);
    } else {
      logA0 = logSub(logA0, logS0);
      logA1 = logSub(logA1, logS1);
    }
    if (Math.max(logS0, logS1) < -30) break;
    if (i > 100_000) throw fail('FEDLORA_ERR_INTERNAL', `rdp: series for order ${alpha} did not converge`);
  }
  return logAdd(logA0, logA1);
}

/** RDP of one step of the Poisson-subsampled Gaussian mechanism at one order. */
export function rdpSubsampledGaussian(q: number, noiseMultiplier: number, alpha: number): number {
  if (!Number.isFinite(alpha) || noiseMultiplier === 0) return Infinity;
  if (q === 0) return 0;
  if (q === 1) return alpha / (2 * noiseMultiplier * noiseMultiplier);
  const logA = Number.isInteger(alpha) ? computeLogAInt(q, noiseMultiplier, alpha) : computeLogAFrac(q, noiseMultiplier, alpha);
  return logA / (alpha - 1);
}

/** RDP -> (epsilon, delta) with the improved conversion of Balle et al. 2020 (Prop. 12), as in
 *  dp_accounting: eps = min_a [ rdp_a + log1p(-1/a) - log(delta * a) / (a - 1) ]. */
export function rdpToEpsilon(orders: readonly number[], rdp: readonly number[], delta: number): { epsilon: number; order: number } {
  if (!(delta > 0 && delta < 1)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `delta must be in (0, 1), got ${delta}`);
  let best = Infinity;
  let bestOrder = orders[0];
  for (let k = 0; k < orders.length; k++) {
    const a = orders[k];
    const r = rdp[k];
    let eps: number;
    if (delta * delta + Math.expm1(-r) > 0) eps = 0; // KL bound already gives delta
    else if (a > 1.01) eps = r + Math.log1p(-1 / a) - Math.log(delta * a) / (a - 1);
    else eps = Infinity;
    if (eps < best) {
      best = eps;
      bestOrder = a;
    }
  }
  return { epsilon: Math.max(0, best), order: bestOrder };
}

export interface EpsilonQuery {
  noiseMultiplier: number;
  sampleRate: number;
  steps: number;
  delta: number;
  orders?: readonly number[];
}

function checkQuery(q: { sampleRate: number; steps: number; delta: number }): void {
  if (!(q.sampleRate > 0 && q.sampleRate <= 1)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `sample rate must be in (0, 1], got ${q.sampleRate}`);
  if (!(Number.isInteger(q.steps) && q.steps >= 0)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `steps (rounds) must be a non-negative integer, got ${q.steps}`);
  if (!(q.delta > 0 && q.delta < 1)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `delta must be in (0, 1), got ${q.delta}`);
}

/** Epsilon after `steps` compositions of the subsampled Gaussian (RDP composes additively). */
export function computeEpsilon(query: EpsilonQuery): { epsilon: number; order: number } {
  checkQuery(query);
  if (!(query.noiseMultiplier >= 0) || !Number.isFinite(query.noiseMultiplier)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `noise multiplier must be a finite number >= 0, got ${query.noiseMultiplier}`);
  const orders = query.orders ?? DEFAULT_RDP_ORDERS;
  if (query.steps === 0) return { epsilon: 0, order: orders[0] };
  const rdp = orders.map((a) => query.steps * rdpSubsampledGaussian(query.sampleRate, query.noiseMultiplier, a));
  return rdpToEpsilon(orders, rdp, query.delta);
}

/** Smallest noise multiplier z (to ~1e-4 relative) whose epsilon after `steps` is <= target.
 *  Epsilon is monotonically decreasing in z, so bisection on [0, hi] after doubling hi. */
export function findNoiseMultiplier(q: { targetEpsilon: number; sampleRate: number; steps: number; delta: number; tolerance?: number }): number {
  checkQuery(q);
  if (!(q.targetEpsilon > 0) || !Number.isFinite(q.targetEpsilon)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `target epsilon must be a finite number > 0, got ${q.targetEpsilon}`);
  const eps = (z: number) => computeEpsilon({ noiseMultiplier: z, sampleRate: q.sampleRate, steps: q.steps, delta: q.delta }).epsilon;
  let hi = 1;
  while (eps(hi) > q.targetEpsilon) {
    hi *= 2;
    if (hi > 1e6) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `no noise multiplier up to 1e6 reaches epsilon ${q.targetEpsilon}`);
  }
  let lo = 0;
  const tol = q.tolerance ?? 1e-4;
  while (hi - lo > tol * hi) {
    const mid = (lo + hi) / 2;
    if (eps(mid) > q.targetEpsilon) lo = mid;
    else hi = mid;
  }
  return hi; // always meets the target
}
