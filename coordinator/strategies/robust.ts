// Byzantine-robust aggregation. Coordinate-wise median, trimmed mean and Multi-Krum need all
// updates at once (memory O(sites x adapter)): they sort per coordinate or compare pairwise
// distances. Norm bounding (Sun et al. 2019) clips each delta to L2 norm M and then averages,
// so it streams like FedAvg.
import { fail } from '../../shared/errors.ts';
import type { AggregateResult, RoundContext, Strategy, UpdateRef } from './types.ts';
import { applyDelta, checkUpdate, checkUpdates, streamingWeightedSum, weightsOf } from './common.ts';
import { l2norm } from '../../shared/tensors.ts';
import { fixedRoundConfig, type SiteSelector } from './selection.ts';

async function loadAll(updates: UpdateRef[], ctx: RoundContext, name: string): Promise<Float32Array[]> {
  checkUpdates(updates, ctx, name);
  const out: Float32Array[] = [];
  for (const u of updates) out.push(checkUpdate(await u.load(), u, ctx));
  return out;
}

function result(ctx: RoundContext, delta: Float32Array, metrics: Record<string, number>): AggregateResult {
  return { global: applyDelta(ctx.global, delta), state: { ...ctx.state }, metrics };
}

/** Per coordinate: sort the n values and average those with rank in [lo, hi). */
function coordinatewise(vs: Float32Array[], lo: number, hi: number): Float32Array {
  const n = vs.length;
  const out = new Float32Array(vs[0].length);
  const col = new Float64Array(n);
  for (let i = 0; i < out.length; i++) {
    for (let k = 0; k < n; k++) col[k] = vs[k][i];
    col.sort();
    let s = 0;
    for (let k = lo; k < hi; k++) s += col[k];
    out[i] = s / (hi - lo);
  }
  return out;
}

export function createMedian(select?: SiteSelector): Strategy {
  return {
    name: 'median', payloadKind: 'delta', configureRound: fixedRoundConfig({}, select),
    async aggregate(updates, ctx) {
      const vs = await loadAll(updates, ctx, 'median');
      const n = vs.length;
      // odd n: the middle value; even n: mean of the two middle values
      const lo = Math.floor((n - 1) / 2);
      const hi = Math.floor(n / 2) + 1;
      return result(ctx, coordinatewise(vs, lo, hi), { sites: n });
    },
  };
}

export function createTrimmedMean(beta: number, select?: SiteSelector): Strategy {
  if (!(beta >= 0 && beta < 0.5)) throw fail('FEDLORA_ERR_CONFIG', `aggregation.beta must be in [0, 0.5), got ${beta}`);
  return {
    name: 'trimmed_mean', payloadKind: 'delta', configureRound: fixedRoundConfig({}, select),
    async aggregate(updates, ctx) {
      const vs = await loadAll(updates, ctx, 'trimmed_mean');
      const n = vs.length;
      const t = Math.floor(beta * n); // removed from each end
      return result(ctx, coordinatewise(vs, t, n - t), { sites: n, trimmed_each_side: t });
    },
  };
}

export function createNormBound(maxNorm: number, weightCap?: number, select?: SiteSelector): Strategy {
  if (!(maxNorm > 0)) throw fail('FEDLORA_ERR_CONFIG', `aggregation.max_norm must be > 0, got ${maxNorm}`);
  return {
    name: 'norm_bound', payloadKind: 'delta', meanBased: true, configureRound: fixedRoundConfig({}, select),
    async aggregate(updates, ctx) {
      checkUpdates(updates, ctx, 'norm_bound');
      const ws = weightsOf(updates, { kind: 'examples', cap: weightCap });
      const total = ws.reduce((a, b) => a + b, 0);
      let clipped = 0;
      const mean = await streamingWeightedSum(updates, ws.map((w) => w / total), ctx, (v) => {
        const norm = l2norm(v);
        if (norm > maxNorm) {
          clipped++;
          const s = maxNorm / norm;
          for (let i = 0; i < v.length; i++) v[i] *= s;
        }
      });
      return result(ctx, mean, { sites: updates.length, clipped });
    },
  };
}

/** Multi-Krum (Blanchard et al. 2017): score_k = sum of squared distances to its n - f - 2
 *  nearest neighbours; average the m updates with the lowest scores (plain mean). */
export function createMultiKrum(f: number, m?: number, select?: SiteSelector): Strategy {
  if (!(Number.isInteger(f) && f >= 0)) throw fail('FEDLORA_ERR_CONFIG', `aggregation.f must be an integer >= 0, got ${f}`);
  return {
    name: 'multi_krum', payloadKind: 'delta', configureRound: fixedRoundConfig({}, select),
    async aggregate(updates, ctx) {
      const vs = await loadAll(updates, ctx, 'multi_krum');
      const n = vs.length;
      const nb = n - f - 2;
      if (nb < 1) throw fail('FEDLORA_ERR_AGGREGATION', `multi_krum: needs n > f + 2 updates (n ${n}, aggregation.f ${f})`);
      const sel = m ?? n - f;
      if (!(Number.isInteger(sel) && sel >= 1 && sel <= n)) throw fail('FEDLORA_ERR_CONFIG', `aggregation.m must be an integer in [1, ${n}], got ${sel}`);
      const d = Array.from({ length: n }, () => new Float64Array(n));
      for (let a = 0; a < n; a++) for (let b = a + 1; b < n; b++) {
        let s = 0;
        const x = vs[a], y = vs[b];
        for (let i = 0; i < x.length; i++) { const t = x[i] - y[i]; s += t * t; }
        d[a][b] = d[b][a] = s;
      }
      const scores = d.map((row, a) => [...row].filter((_, b) => b !== a).sort((p, q) => p - q).slice(0, nb).reduce((p, q) => p + q, 0));
      // ties broken by site id so the result does not depend on arrival order
      const order = [...Array(n).keys()].sort((a, b) => scores[a] - scores[b] || (updates[a].siteId < updates[b].siteId ? -1 : 1));
      const chosen = order.slice(0, sel);
      const out = new Float32Array(ctx.layout.total);
      for (const k of chosen) for (let i = 0; i < out.length; i++) out[i] += vs[k][i] / sel;
      return result(ctx, out, { sites: n, selected: sel });
    },
  };
}
