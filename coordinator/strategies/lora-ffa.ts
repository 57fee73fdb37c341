// FFA-LoRA (Sun et al. 2024): every A is frozen at its shared-seed initialisation (job spec
// lora.freeze_a / init_seed), sites train and send only B. Then sum_k p_k B_k A = (sum_k p_k B_k) A:
// averaging B is the exact average of the products. Mean-based, streams, and composes with DP
// and secure aggregation over the B ranges only (`trainable`).
// Two layouts reach it: the coordinator's update layout of a freeze_a job holds only the lora_B
// tensors (A is never sent), so all of it is trained; a full A+B layout (in-process uses) has
// its A ranges checked to be unchanged.
import { fail } from '../../shared/errors.ts';
import type { AdapterLayout } from '../../shared/tensors.ts';
import type { Strategy } from './types.ts';
import { applyDelta, checkUpdates, streamingWeightedSum, tensorAt, weightsOf } from './common.ts';
import { loraPairs } from '../../shared/lora/pairs.ts';
import { fixedRoundConfig, type SiteSelector } from './selection.ts';

const IS_A = /\.lora_A\.weight$/;
const IS_B = /\.lora_B\.weight$/;

/** The [start, end) element ranges of the lora_B tensors, sorted. */
export function bRanges(layout: AdapterLayout): Array<[number, number]> {
  if (!layout.entries.some((e) => IS_A.test(e.name))) {
    const other = layout.entries.find((e) => !IS_B.test(e.name));
    if (other) throw fail('FEDLORA_ERR_ADAPTER', `ffa: ${other.name} is neither a lora_A nor a lora_B tensor`);
    return layout.entries.map((e) => [e.offset, e.offset + e.length] as [number, number]).sort((x, y) => x[0] - y[0]);
  }
  const { pairs } = loraPairs(layout);
  return pairs.map((p) => [p.b.offset, p.b.offset + p.b.length] as [number, number]).sort((x, y) => x[0] - y[0]);
}

export function createFfa(opts: { weightCap?: number; select?: SiteSelector } = {}): Strategy {
  return {
    name: 'ffa',
    payloadKind: 'delta',
    meanBased: true,
    trainable: bRanges,
    configureRound: fixedRoundConfig({ freezeA: true }, opts.select),
    async aggregate(updates, ctx) {
      checkUpdates(updates, ctx, 'ffa');
      const ranges = bRanges(ctx.layout);
      const inB = new Uint8Array(ctx.layout.total);
      for (const [a, b] of ranges) inB.fill(1, a, b);
      const onlyB = inB.every((x) => x === 1);
      const ws = weightsOf(updates, { kind: 'examples', cap: opts.weightCap });
      const total = ws.reduce((a, b) => a + b, 0);
      const mean = await streamingWeightedSum(updates, ws.map((w) => w / total), ctx, onlyB ? undefined : (v, u) => {
        for (let i = 0; i < v.length; i++) {
          if (!inB[i] && v[i] !== 0) throw fail('FEDLORA_ERR_UPDATE_INVALID', `ffa: site ${u.siteId} changed frozen ${tensorAt(ctx.layout, i)} (A must stay at its shared-seed initialisation)`);
        }
      });
      return { global: applyDelta(ctx.global, mean), state: { ...ctx.state }, metrics: { sites: updates.length } };
    },
  };
}
