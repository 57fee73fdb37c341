// Finishing a round from a secure-aggregation sum (shared/secagg unmask() output). The
// coordinator never holds individual updates, so only mean-based strategies qualify, with
// UNIFORM weights (per-site example counts would have to be revealed to weight them):
//   plain:  mean = sum / count, handed to the strategy as the round's single update;
//   DP:     mean = sum / D (fixed denominator) + N(0, (z C / D)^2) — noise added AFTER unmasking,
//           sites clip to C before masking (the strategy's aggregateSum).
import { fail } from '../../shared/errors.ts';
import type { AggregateResult, RoundContext, SecureSumStrategy, Strategy } from './types.ts';

export async function aggregateSecureSum(strategy: Strategy, sum: Float32Array, count: number, ctx: RoundContext, unclippedCount?: number): Promise<AggregateResult> {
  if (!strategy.meanBased) throw fail('FEDLORA_ERR_CONFIG', `privacy.secure_aggregation: strategy ${strategy.name} is not mean-based; use fedavg, fedprox, fedadam, fedyogi, fedadagrad or ffa`);
  if (strategy.payloadKind !== 'delta') throw fail('FEDLORA_ERR_CONFIG', `privacy.secure_aggregation: strategy ${strategy.name} sends weights, secure aggregation needs deltas`);
  if (!(count >= 1)) throw fail('FEDLORA_ERR_AGGREGATION', `secure sum of ${count} sites`);
  const s = strategy as Partial<SecureSumStrategy>;
  if (typeof s.aggregateSum === 'function') return s.aggregateSum(sum, count, ctx, unclippedCount);
  const mean = new Float32Array(sum.length);
  for (let i = 0; i < sum.length; i++) mean[i] = sum[i] / count;
  const r = await strategy.aggregate([{ siteId: 'secure-sum', numExamples: 1, load: async () => mean }], ctx);
  return { ...r, metrics: { ...r.metrics, sites: count } };
}

/** The strategy's trainable elements (all, or e.g. FFA's lora_B ranges) packed end to end:
 *  what a site masks in secure aggregation (dim = packed length). */
export function packTrainable(strategy: Strategy, layout: RoundContext['layout'], vec: Float32Array): Float32Array {
  const ranges = strategy.trainable?.(layout) ?? [[0, layout.total]];
  const out = new Float32Array(ranges.reduce((a, [s, e]) => a + (e - s), 0));
  let o = 0;
  for (const [s, e] of ranges) { out.set(vec.subarray(s, e), o); o += e - s; }
  return out;
}

/** Inverse of packTrainable: a full-layout vector with zeros outside the trainable ranges. */
export function unpackTrainable(strategy: Strategy, layout: RoundContext['layout'], packed: Float32Array): Float32Array {
  const ranges = strategy.trainable?.(layout) ?? [[0, layout.total]];
  const out = new Float32Array(layout.total);
  let o = 0;
  for (const [s, e] of ranges) { out.set(packed.subarray(o, o + e - s), s); o += e - s; }
  if (o !== packed.length) throw fail('FEDLORA_ERR_SHAPE', `secure sum has ${packed.length} elements, the strategy's trainable ranges hold ${o}`);
  return out;
}
