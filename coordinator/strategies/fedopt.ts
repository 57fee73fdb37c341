// Adaptive server optimisers (Reddi et al. 2021, "Adaptive Federated Optimization"): the
// weighted mean delta Δ is the negative pseudo-gradient; the server keeps moments m, v
// (persisted in RoundContext.state as fedopt_m / fedopt_v) and steps
//   m = β1 m + (1-β1) Δ
//   Adam: v = β2 v + (1-β2) Δ²      Yogi: v = v - (1-β2) Δ² sign(v - Δ²)    Adagrad: v = v + Δ²
//   x = x + η m / (sqrt(v) + τ)
// Moments start at zero (as in Flower), no bias correction (as in the paper's Algorithm 2).
import { fail } from '../../shared/errors.ts';
import type { AggregateResult, Strategy } from './types.ts';
import { vecOpt } from './common.ts';
import { weightedMean } from './fedavg.ts';
import { fixedRoundConfig, type SiteSelector } from './selection.ts';

export interface FedOptOptions {
  eta: number;
  beta1: number;
  beta2: number;
  tau: number;
  weightCap?: number;
  select?: SiteSelector;
}

export function createFedOpt(variant: 'fedadam' | 'fedyogi' | 'fedadagrad', o: FedOptOptions): Strategy {
  return {
    name: variant,
    payloadKind: 'delta',
    meanBased: true,
    configureRound: fixedRoundConfig({}, o.select),
    async aggregate(updates, ctx): Promise<AggregateResult> {
      const delta = await weightedMean(updates, ctx, { kind: 'examples', cap: o.weightCap }, variant);
      const n = delta.length;
      const prevM = vecOpt(ctx.state, 'fedopt_m', n);
      const prevV = vecOpt(ctx.state, 'fedopt_v', n);
      const m = prevM ? Float32Array.from(prevM) : new Float32Array(n);
      const v = prevV ? Float32Array.from(prevV) : new Float32Array(n);
      const global = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        const d = delta[i];
        m[i] = o.beta1 * m[i] + (1 - o.beta1) * d;
        const d2 = d * d;
        if (variant === 'fedadam') v[i] = o.beta2 * v[i] + (1 - o.beta2) * d2;
        else if (variant === 'fedyogi') v[i] = v[i] - (1 - o.beta2) * d2 * Math.sign(v[i] - d2);
        else v[i] = v[i] + d2;
        global[i] = ctx.global[i] + o.eta * m[i] / (Math.sqrt(v[i]) + o.tau);
        if (!Number.isFinite(global[i])) throw fail('FEDLORA_ERR_AGGREGATION', `${variant}: non-finite parameter at element ${i} (eta ${o.eta}, tau ${o.tau})`);
      }
      return { global, state: { ...ctx.state, fedopt_m: m, fedopt_v: v }, metrics: { sites: updates.length } };
    },
  };
}
