// Exact LoRA aggregation by re-compression: the weighted sum of the sites' low-rank products
//   W = sum_k p_k B_k A_k = [p_1 B_1 | ... | p_K B_K] [A_1; ...; A_K]
// re-compressed to the job's rank without forming the out x in matrix (shared/lora/recompress.ts:
// thin QR of both stacks, SVD of the small core). B'A' = W exactly when rank(W) <= r, else the
// best rank-r approximation (Eckart-Young). Sites send their full local A_k, B_k (payloadKind
// 'weights'); a site that trains a lower rank (job lora.min_site_r, the site's
// policy.max_lora_rank) sends rank-r_k factors (UpdateRef.layout) and its product counts the same;
// non-LoRA tensors are averaged. Memory: all updates are loaded (each module needs every site's
// factors): O(sites x adapter).
import { fail } from '../../shared/errors.ts';
import type { AdapterLayout } from '../../shared/tensors.ts';
import type { Strategy, UpdateRef } from './types.ts';
import { fixedRoundConfig, type SiteSelector } from './selection.ts';
import { checkUpdate, checkUpdates, weightsOf } from './common.ts';
import { mat } from '../../shared/lora/linalg.ts';
import { loraPairs } from '../../shared/lora/pairs.ts';
import { pairsByModule, recompress, type WeightedFactors } from '../../shared/lora/recompress.ts';

export function createLoraSvd(opts: { weightCap?: number; select?: SiteSelector } = {}): Strategy {
  return {
    name: 'svd',
    payloadKind: 'weights',
    configureRound: fixedRoundConfig({ payload: 'weights' }, opts.select),
    async aggregate(updates, ctx) {
      checkUpdates(updates, ctx, 'svd', { siteRanks: true });
      const ws = weightsOf(updates, { kind: 'examples', cap: opts.weightCap });
      const total = ws.reduce((a, b) => a + b, 0);
      const p = ws.map((w) => w / total);
      const vs: Float32Array[] = [];
      for (const u of updates) vs.push(checkUpdate(await u.load(), u, ctx, u.layout ?? ctx.layout));
      const out = new Float32Array(ctx.layout.total);
      const { pairs, others } = loraPairs(ctx.layout);
      const jobRanks = new Map(pairs.map((x) => [x.module, x.r]));
      const sitePairs = updates.map((u) => siteLayoutPairs(u, ctx.layout, jobRanks));
      for (const e of others) {
        for (let k = 0; k < vs.length; k++) {
          const at = (updates[k].layout ?? ctx.layout).entries.find((x) => x.name === e.name);
          if (!at || at.length !== e.length) throw fail('FEDLORA_ERR_SHAPE', `svd: site ${updates[k].siteId} has no ${e.name} of the job's shape`);
          for (let i = 0; i < e.length; i++) out[e.offset + i] += p[k] * vs[k][at.offset + i];
        }
      }
      let residual = 0;
      for (const pr of pairs) {
        const parts: WeightedFactors[] = vs.map((v, k) => {
          const sp = sitePairs[k].get(pr.module);
          if (!sp || sp.inF !== pr.inF || sp.outF !== pr.outF) throw fail('FEDLORA_ERR_SHAPE', `svd: site ${updates[k].siteId} has no ${pr.module} factors of the job's shape`);
          return { weight: p[k], b: mat(sp.outF, sp.r, v.subarray(sp.b.offset, sp.b.offset + sp.b.length)), a: mat(sp.r, sp.inF, v.subarray(sp.a.offset, sp.a.offset + sp.a.length)) };
        });
        const got = recompress(parts, pr.r);
        residual += got.truncatedEnergy;
        for (let i = 0; i < pr.b.length; i++) out[pr.b.offset + i] = got.b.data[i];
        for (let i = 0; i < pr.a.length; i++) out[pr.a.offset + i] = got.a.data[i];
      }
      return { global: out, state: { ...ctx.state }, metrics: { sites: updates.length, svd_truncated_energy: residual } };
    },
  };
}

/** A site's factor pairs by module (its own layout when it trained a lower rank). */
function siteLayoutPairs(u: UpdateRef, job: AdapterLayout, jobRanks: Map<string, number>) {
  const pairs = pairsByModule(u.layout ?? job);
  for (const p of pairs.values()) {
    const r = jobRanks.get(p.module);
    if (r !== undefined && p.r > r) throw fail('FEDLORA_ERR_SHAPE', `svd: site ${u.siteId} sent rank ${p.r} factors for ${p.module}, above the job's rank ${r}`);
  }
  return pairs;
}
