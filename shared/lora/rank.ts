// Sites that train a lower LoRA rank than the job's (job lora.min_site_r, site
// policy.max_lora_rank): the settings, layouts and factors at rank k that the site (which trains
// and sends rank-k factors) and the coordinator (which checks and aggregates them) share.
//   scaling   PEFT multiplies B A by alpha / r (alpha / sqrt(r) with rsLoRA); a rank-k site keeps
//             the job's factor (its alpha scaled), so its B_k A_k adds to the model exactly what
//             the same product adds in the job's rank-r adapter, and the coordinator can sum them.
//   layout    the same tensor names with rank k: A [k, in], B [out, k].
//   padding   FFA (A frozen): the rank-k site trains B[:, :k] against A's first k rows; padded
//             with zero columns its B delta moves the job's product by exactly dB_k A[:k].
import { fail } from '../errors.ts';
import { flatten, layoutOf, unflatten, type AdapterLayout } from '../tensors.ts';
import { adapterAtRank } from './recompress.ts';
import type { AdapterWeights, LoraConfig } from './types.ts';

const FACTOR = /\.lora_([AB])\.weight$/;

/** The alpha that gives rank k the scaling alpha has at rank r (file comment). */
export function alphaAtRank(lora: Pick<LoraConfig, 'r' | 'alpha' | 'useRslora'>, k: number): number {
  if (!Number.isInteger(k) || k < 1 || k > lora.r) throw fail('FEDLORA_ERR_SHAPE', `LoRA rank ${k} must be an integer in 1..${lora.r} (the job's rank)`);
  return k === lora.r ? lora.alpha : lora.useRslora ? lora.alpha * Math.sqrt(k / lora.r) : (lora.alpha * k) / lora.r;
}

/** The job's LoRA settings at rank k with the job's scaling (file comment). */
export function loraAtRank(lora: LoraConfig, k: number): LoraConfig {
  const alpha = alphaAtRank(lora, k);
  return k === lora.r ? lora : { ...lora, r: k, alpha };
}

/** `layout` with every LoRA factor at rank k (other tensors unchanged). */
export function layoutAtRank(layout: AdapterLayout, k: number): AdapterLayout {
  return layoutOf(new Map(layout.entries.map((e) => {
    const m = FACTOR.exec(e.name);
    return [e.name, { shape: !m ? e.shape : m[1] === 'A' ? [k, e.shape[1]] : [e.shape[0], k] }];
  })));
}

/** The rank of a layout's LoRA factors (B-only layouts too); undefined without factors. Throws
 *  when two factors disagree. */
export function rankOfLayout(layout: AdapterLayout, what = 'adapter'): number | undefined {
  let r: number | undefined;
  for (const e of layout.entries) {
    const m = FACTOR.exec(e.name);
    if (!m || e.shape.length !== 2) continue;
    const k = m[1] === 'A' ? e.shape[0] : e.shape[1];
    if (r !== undefined && k !== r) throw fail('FEDLORA_ERR_SHAPE', `${what}: ${e.name} has rank ${k}, other factors rank ${r}`);
    r = k;
  }
  return r;
}

/** Rank-k factors (`from`) zero-padded into a higher-rank layout `to` (same names): A's rows
 *  and B's columns first, zeros after; other tensors copied. */
export function padToRank(flat: Float32Array, from: AdapterLayout, to: AdapterLayout): Float32Array {
  const src = new Map(from.entries.map((e) => [e.name, e]));
  const out = new Float32Array(to.total);
  for (const e of to.entries) {
    const f = src.get(e.name);
    if (!f || f.shape.length !== e.shape.length) throw fail('FEDLORA_ERR_SHAPE', `padToRank: ${e.name} is not in the rank-${rankOfLayout(from)} layout`);
    const m = FACTOR.exec(e.name);
    if (m?.[1] === 'B') {
      const [rows, k] = f.shape, r = e.shape[1];
      if (rows !== e.shape[0] || k > r) throw fail('FEDLORA_ERR_SHAPE', `padToRank: ${e.name} [${f.shape}] does not fit [${e.shape}]`);
      for (let o = 0; o < rows; o++) out.set(flat.subarray(f.offset + o * k, f.offset + (o + 1) * k), e.offset + o * r);
    } else {
      // A [k, in] -> the first k rows of [r, in] (row-major: a prefix); other tensors: same shape
      if (f.length > e.length || f.shape.slice(1).some((d, i) => d !== e.shape[i + 1]) || (!m && f.length !== e.length)) throw fail('FEDLORA_ERR_SHAPE', `padToRank: ${e.name} [${f.shape}] does not fit [${e.shape}]`);
      out.set(flat.subarray(f.offset, f.offset + f.length), e.offset);
    }
  }
  return out;
}

/**
 * A rank-r adapter at rank k, as the site starts its round from it: the best rank-k factors of
 * its B A products (A trained), or with a frozen A the first k rows of A and the B that best keeps
 * the product (FFA). `initial`: the job's version-0 adapter, whose A rows fill directions the
 * product does not use (they stay trainable; B is zero there).
 */
export function adapterWeightsAtRank(adapter: AdapterWeights, k: number, o: { frozenA: boolean; initial?: AdapterWeights }): AdapterWeights {
  const from = layoutOf(adapter);
  const to = layoutAtRank(from, k);
  const fill = o.initial ? flatten(o.initial, from) : undefined;
  return unflatten(adapterAtRank(flatten(adapter, from), from, to, { frozenA: o.frozenA, fill }), to);
}
