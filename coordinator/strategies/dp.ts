// DP-FedAvg (McMahan et al. 2018, "Learning Differentially Private Recurrent Language Models")
// as a wrapper around any mean-based strategy (FedAvg, FedProx, FedAdam/Yogi/Adagrad, FFA-LoRA):
//  1. every site's delta is clipped to L2 norm C over all (trainable) tensors;
//  2. the clipped deltas are summed with weights w_k <= 1 and divided by a FIXED denominator D
//     (the expected number of sites, or expected sum of capped weights) — not by the number
//     that actually arrived, which would itself depend on any one site's participation — so
//     one site changes the mean by at most C / D;
//  3. Gaussian noise N(0, (z C / D)^2) is added to every trainable coordinate;
//  4. the noised mean is handed to the inner strategy as the round's single update (so server
//     optimisers step on the privatised pseudo-gradient; post-processing keeps the guarantee).
// Adaptive clipping (Andrew et al. 2021, "Differentially Private Learning with Adaptive
// Clipping"): the sum of the sites' "not clipped" bits is noised with std sigma_b, giving
// b = fraction not clipped, and C <- C * exp(-eta (b - gamma)) for the next round. The delta
// noise uses the clip norm this round used, with multiplier z_delta = (z^-2 - (2 sigma_b)^-2)^-1/2
// so the two releases together cost what the accountant charges for z.
// Robust strategies are refused: their sensitivity is not C / D.
import { fail } from '../../shared/errors.ts';
import { createGaussian } from '../privacy/gaussian.ts';
import type { AggregateResult, RoundContext, RoundSampling, SecureSumStrategy, Strategy, UpdateRef } from './types.ts';
import { checkUpdate, checkUpdates, numOpt } from './common.ts';
import { poissonSample } from './selection.ts';

export interface AdaptiveClipOptions {
  /** gamma: target fraction of sites NOT clipped (e.g. 0.5 = median norm). */
  targetQuantile: number;
  /** eta_C: geometric learning rate of the clip norm (0.2 in the paper). */
  learningRate: number;
  /** sigma_b: std of the noise on the SUM of the bits (paper: expected sites / 20). */
  bitNoiseStd: number;
}

export interface DpOptions {
  clipNorm: number;
  /** z: the noise multiplier the accountant is charged for. */
  noiseMultiplier: number;
  /** 'uniform' (default): w_k = 1, D = expected sites. 'capped': w_k = min(n_k, weightCap) /
   *  weightCap, D = expected sites x expectedWeight. */
  weighting?: 'uniform' | 'capped';
  weightCap?: number;
  /** Expected mean of the capped weights in (0, 1] (for 'capped'); default 1. */
  expectedWeight?: number;
  adaptive?: AdaptiveClipOptions;
  /** Poisson sampling (sample rate q < 1): every round each of the job's `population` eligible
   *  sites is taken independently with probability q from the round's secret sampling key, and
   *  D = q x population (times expectedWeight for 'capped'), whatever the sample's size — an
   *  empty sample publishes noise only. Absent: the inner strategy's selection, D = selected. */
  sampling?: { rate: number; population: number };
  /** Derive the noise from the round seed (reproducible; for tests and audits ONLY — whoever
   *  knows the seed can subtract the noise). Default false: the noise comes from
   *  RoundContext.noiseKey (the coordinator's secret, see privacy/noise-key.ts), or from a fresh
   *  random 256-bit key when the context carries none. */
  deterministicNoise?: boolean;
}

export function splitNoiseMultiplier(z: number, bitNoiseStd: number): number {
  if (!(bitNoiseStd > 0)) throw fail('FEDLORA_ERR_CONFIG', `adaptive clipping: bit noise std must be > 0, got ${bitNoiseStd}`);
  if (z >= 2 * bitNoiseStd) throw fail('FEDLORA_ERR_CONFIG', `adaptive clipping: noise multiplier ${z} must be < 2 x bit noise std (${2 * bitNoiseStd}); raise the bit noise std or lower z`);
  if (z === 0) return 0;
  return Math.pow(Math.pow(z, -2) - Math.pow(2 * bitNoiseStd, -2), -0.5);
}

export function createDpStrategy(inner: Strategy, o: DpOptions): SecureSumStrategy {
  if (!inner.meanBased) throw fail('FEDLORA_ERR_CONFIG', `privacy.dp: strategy ${inner.name} is not mean-based; DP-FedAvg needs a sensitivity of C / D, which ${inner.name} does not have (use fedavg, fedprox, fedadam, fedyogi, fedadagrad or ffa)`);
  if (inner.payloadKind !== 'delta') throw fail('FEDLORA_ERR_CONFIG', `privacy.dp: strategy ${inner.name} sends full weights; DP needs deltas`);
  if (!(o.clipNorm > 0)) throw fail('FEDLORA_ERR_CONFIG', `privacy.dp.clip_norm must be > 0, got ${o.clipNorm}`);
  if (!(o.noiseMultiplier >= 0)) throw fail('FEDLORA_ERR_CONFIG', `privacy.dp.noise_multiplier must be >= 0, got ${o.noiseMultiplier}`);
  const weighting = o.weighting ?? 'uniform';
  if (weighting === 'capped' && !(o.weightCap && o.weightCap > 0)) throw fail('FEDLORA_ERR_CONFIG', 'privacy.dp: capped weighting needs weightCap > 0');
  const expectedWeight = o.expectedWeight ?? 1;
  if (!(expectedWeight > 0 && expectedWeight <= 1)) throw fail('FEDLORA_ERR_CONFIG', `privacy.dp: expectedWeight must be in (0, 1], got ${expectedWeight}`);
  const zDelta = o.adaptive ? splitNoiseMultiplier(o.noiseMultiplier, o.adaptive.bitNoiseStd) : o.noiseMultiplier;
  const clipOf = (state: Record<string, Float32Array | number>) => numOpt(state, 'dp_clip_norm') ?? o.clipNorm;
  const sampling = samplingOf(o.sampling);
  /** The expected number of sites: D before weighting. */
  const expectedSites = (ctx: RoundContext): number => {
    if (sampling) return sampling.denominator;
    if (!(ctx.selected >= 1)) throw fail('FEDLORA_ERR_AGGREGATION', `dp: RoundContext.selected must be >= 1 (the expected number of sites), got ${ctx.selected}`);
    return ctx.selected;
  };

  const strategy: SecureSumStrategy = {
    name: `dp(${inner.name})`,
    payloadKind: 'delta',
    meanBased: true,
    trainable: inner.trainable?.bind(inner),
    configureRound(round, candidates, state) {
      const plan = inner.configureRound(round, candidates, state);
      const config = { ...plan.config, dpClipNorm: clipOf(state) };
      if (!sampling) return { ...plan, config };
      // Every eligible site, online or not: one offline when sampled simply contributes nothing.
      const sites = poissonSample(candidates.map((c) => c.siteId), sampling.rate, round.samplingKey);
      return { sites, config, minUpdates: 0, sampling };
    },
    async aggregate(updates, ctx): Promise<AggregateResult> {
      if (updates.length > 0 || !sampling) checkUpdates(updates, ctx, `dp(${inner.name})`);
      else if (ctx.global.length !== ctx.layout.total) throw fail('FEDLORA_ERR_SHAPE', `dp(${inner.name}): global adapter has ${ctx.global.length} elements, layout has ${ctx.layout.total}`);
      const C = clipOf(ctx.state);
      const D = weighting === 'uniform' ? expectedSites(ctx) : expectedSites(ctx) * expectedWeight;
      const ranges = inner.trainable?.(ctx.layout) ?? [[0, ctx.layout.total]];
      const inRange = new Uint8Array(ctx.layout.total);
      for (const [a, b] of ranges) inRange.fill(1, a, b);
      const acc = new Float32Array(ctx.layout.total);
      let bits = 0;
      let clipped = 0;
      for (const u of updates) {
        const v = checkUpdate(await u.load(), u, ctx);
        let s2 = 0;
        for (const [a, b] of ranges) for (let i = a; i < b; i++) s2 += v[i] * v[i];
        const norm = Math.sqrt(s2);
        const scale = norm > C ? C / norm : 1;
        if (scale < 1) clipped++;
        bits += u.unclippedBit ?? (norm <= C ? 1 : 0);
        const w = weighting === 'uniform' ? 1 : Math.min(u.numExamples, o.weightCap!) / o.weightCap!;
        const c = (w * scale) / D;
        for (const [a, b] of ranges) for (let i = a; i < b; i++) acc[i] += c * v[i];
      }
      return finish(acc, bits, updates.length, clipped, C, D, ranges, inRange, ctx);
    },
    async aggregateSum(sum, count, ctx, unclippedCount) {
      if (weighting !== 'uniform') throw fail('FEDLORA_ERR_CONFIG', 'privacy.dp: secure aggregation supports only uniform DP weighting (the coordinator never sees per-site weights)');
      if (sum.length !== ctx.layout.total) throw fail('FEDLORA_ERR_SHAPE', `dp: secure sum has ${sum.length} elements, layout has ${ctx.layout.total}`);
      const C = clipOf(ctx.state);
      const D = expectedSites(ctx);
      const ranges = inner.trainable?.(ctx.layout) ?? [[0, ctx.layout.total]];
      const inRange = new Uint8Array(ctx.layout.total);
      for (const [a, b] of ranges) inRange.fill(1, a, b);
      const acc = new Float32Array(sum.length);
      for (let i = 0; i < acc.length; i++) acc[i] = sum[i] / D; // sites clipped to C before masking
      return finish(acc, unclippedCount ?? count, count, NaN, C, D, ranges, inRange, ctx);
    },
  };

  // Where the noise comes from. With the coordinator's secret round key (the engine's case) the
  // same round redone after a crash gets the same noise — the published adapter is the one an
  // uninterrupted run publishes — yet only the key's holder can recompute it (HKDF of key ||
  // seed, then AES-CTR: privacy/gaussian.ts). Without a key: fresh randomness.
  function noiseSeed(ctx: RoundContext): number | Buffer | undefined {
    if (o.deterministicNoise) return ctx.seed;
    if (ctx.noiseKey) {
      const seed = Buffer.alloc(4);
      seed.writeUInt32LE(ctx.seed >>> 0);
      return Buffer.concat([ctx.noiseKey, seed]);
    }
    return undefined;
  }

  async function finish(acc: Float32Array, bits: number, count: number, clipped: number, C: number, D: number,
    ranges: Array<[number, number]>, inRange: Uint8Array, ctx: RoundContext): Promise<AggregateResult> {
    const std = (zDelta * C) / D;
    const noise = createGaussian(noiseSeed(ctx), `dp-noise/round-${ctx.round}`);
    for (const [a, b] of ranges) noise.fill(acc.subarray(a, b), std, true);
    for (let i = 0; i < acc.length; i++) if (!inRange[i]) acc[i] = 0;
    let unclippedFraction = count > 0 ? bits / count : 0;
    let nextClip = C;
    if (o.adaptive) {
      const bitNoise = createGaussian(noiseSeed(ctx), `dp-bit-noise/round-${ctx.round}`);
      unclippedFraction = (bits + o.adaptive.bitNoiseStd * bitNoise.next()) / expectedSites(ctx);
      nextClip = C * Math.exp(-o.adaptive.learningRate * (unclippedFraction - o.adaptive.targetQuantile));
    }
    const single: UpdateRef = { siteId: 'dp-noised-mean', numExamples: 1, load: async () => acc };
    const r = await inner.aggregate([single], { ...ctx, state: ctx.state });
    return {
      global: r.global,
      state: { ...r.state, dp_clip_norm: nextClip },
      metrics: { ...r.metrics, sites: count, dp_clip_norm: C, dp_noise_std: std, ...(Number.isNaN(clipped) ? {} : { dp_clipped: clipped }), dp_unclipped_fraction: unclippedFraction },
    };
  }
  return strategy;
}

function samplingOf(s: DpOptions['sampling']): RoundSampling | undefined {
  if (!s || s.rate === 1) return undefined;
  if (!(s.rate > 0 && s.rate < 1)) throw fail('FEDLORA_ERR_CONFIG', `privacy.dp.sample_rate must be in (0, 1], got ${s.rate}`);
  if (!(Number.isInteger(s.population) && s.population >= 1)) throw fail('FEDLORA_ERR_CONFIG', `privacy.dp.sample_rate ${s.rate}: Poisson sampling needs the job's eligible sites (N >= 1), got ${s.population}`);
  return { rate: s.rate, population: s.population, denominator: s.rate * s.population };
}
