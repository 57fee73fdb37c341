// FedAvg (McMahan et al. 2017) and FedProx (Li et al. 2020): the example-weighted mean of the
// sites' deltas (or weights), streamed one update at a time. FedProx aggregates exactly like
// FedAvg; it only tells sites the proximal coefficient mu through configureRound.
import type { AggregateResult, RoundConfig, RoundContext, Strategy, UpdateRef } from './types.ts';
import { fixedRoundConfig, type SiteSelector } from './selection.ts';
import { checkUpdates, streamingWeightedSum, weightsOf, type Weighting } from './common.ts';

export interface FedAvgOptions {
  /** Cap on a site's weight (its example count), so one large site cannot dominate. */
  weightCap?: number;
  /** 'examples' (default) or 'uniform'. */
  weighting?: 'examples' | 'uniform';
  payloadKind?: 'delta' | 'weights';
  /** How the round's sites are chosen (default: every online candidate). */
  select?: SiteSelector;
}

/** The weighted mean of the updates, plus `plus` when given (the global, for delta payloads). */
export async function weightedMean(updates: UpdateRef[], ctx: RoundContext, w: Weighting, name: string, plus?: Float32Array): Promise<Float32Array> {
  checkUpdates(updates, ctx, name);
  const ws = weightsOf(updates, w);
  const total = ws.reduce((a, b) => a + b, 0);
  return streamingWeightedSum(updates, ws.map((x) => x / total), ctx, undefined, { plus });
}

export function createFedAvg(opts: FedAvgOptions = {}, name = 'fedavg', config: RoundConfig = {}): Strategy {
  const payloadKind = opts.payloadKind ?? 'delta';
  const weighting: Weighting = opts.weighting === 'uniform' ? { kind: 'uniform' } : { kind: 'examples', cap: opts.weightCap };
  return {
    name,
    payloadKind,
    meanBased: true,
    configureRound: fixedRoundConfig(config, opts.select),
    async aggregate(updates, ctx): Promise<AggregateResult> {
      const global = await weightedMean(updates, ctx, weighting, name, payloadKind === 'delta' ? ctx.global : undefined);
      return { global, state: { ...ctx.state }, metrics: { sites: updates.length } };
    },
  };
}

export function createFedProx(opts: FedAvgOptions & { mu: number }): Strategy {
  return createFedAvg(opts, 'fedprox', { proxMu: opts.mu });
}
