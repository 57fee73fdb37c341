// Helpers every strategy shares: input validation (length, finiteness — errors name the site
// and the tensor), weight computation, and the streaming weighted mean that keeps one update in
// memory at a time (O(adapter), not O(sites x adapter)).
import { fail } from '../../shared/errors.ts';
import type { AdapterLayout } from '../../shared/tensors.ts';
import type { RoundContext, UpdateRef } from './types.ts';
import { F32Accumulator } from './f32-kernels.ts';

export function tensorAt(layout: AdapterLayout, index: number): string {
  for (const e of layout.entries) if (index >= e.offset && index < e.offset + e.length) return `${e.name}[${index - e.offset}]`;
  return `element ${index}`;
}

/** Reject a vector of the wrong length or with NaN/Inf (FEDLORA_ERR_UPDATE_NONFINITE). `layout`:
 *  the update's own (a lower-rank site's, for the strategies that take one), else the job's. */
export function checkUpdate(v: Float32Array, u: UpdateRef, ctx: RoundContext, layout: AdapterLayout = ctx.layout): Float32Array {
  if (!(v instanceof Float32Array)) throw fail('FEDLORA_ERR_UPDATE_INVALID', `update from site ${u.siteId} is not a Float32Array`);
  if (v.length !== layout.total) throw fail('FEDLORA_ERR_SHAPE', `update from site ${u.siteId} has ${v.length} elements, the adapter layout has ${layout.total}`);
  for (let i = 0; i < v.length; i++) {
    const x = v[i];
    if (x - x !== 0) throw fail('FEDLORA_ERR_UPDATE_NONFINITE', `update from site ${u.siteId} has ${x} at ${tensorAt(layout, i)}`);
  }
  return v;
}

export function checkUpdates(updates: UpdateRef[], ctx: RoundContext, strategy: string, o: { siteRanks?: boolean } = {}): void {
  const other = o.siteRanks ? undefined : updates.find((u) => u.layout && u.layout !== ctx.layout);
  if (other) throw fail('FEDLORA_ERR_AGGREGATION', `${strategy}: site ${other.siteId} trained a lower LoRA rank; only svd takes such factors as they are (ffa gets B deltas padded to the job's rank)`);
  if (updates.length === 0) throw fail('FEDLORA_ERR_AGGREGATION', `${strategy}: round ${ctx.round} has no updates to aggregate`);
  if (ctx.global.length !== ctx.layout.total) throw fail('FEDLORA_ERR_SHAPE', `${strategy}: global adapter has ${ctx.global.length} elements, layout has ${ctx.layout.total}`);
  const seen = new Set<string>();
  for (const u of updates) {
    if (seen.has(u.siteId)) throw fail('FEDLORA_ERR_AGGREGATION', `${strategy}: site ${u.siteId} has two updates in round ${ctx.round}`);
    seen.add(u.siteId);
    if (!(Number.isFinite(u.numExamples) && u.numExamples >= 0)) throw fail('FEDLORA_ERR_UPDATE_INVALID', `${strategy}: site ${u.siteId} reports numExamples ${u.numExamples}`);
  }
}

export type Weighting = { kind: 'examples'; cap?: number } | { kind: 'uniform' };

export function weightsOf(updates: UpdateRef[], w: Weighting): number[] {
  const ws = updates.map((u) => (w.kind === 'uniform' ? 1 : Math.min(u.numExamples, w.cap ?? Infinity)));
  const total = ws.reduce((a, b) => a + b, 0);
  if (!(total > 0)) throw fail('FEDLORA_ERR_AGGREGATION', `all ${updates.length} updates have zero weight (numExamples 0)`);
  return ws;
}

/** sum_k coef_k * load_k(), loading one update at a time. `transform` may rewrite a loaded
 *  vector in place (e.g. clipping) before it is accumulated. Float64 accumulation would double
 *  memory traffic; coefficients are normalised up front so float32 sums stay well-scaled.
 *  Contract for loaders: an update's array is never touched again after the next load() call,
 *  so a loader may reuse one buffer for every update (no page faults on fresh memory).
 *  The multiply-add runs in WebAssembly SIMD (f32-kernels.ts), fused with the NaN/Inf check.
 *  `plus`: a vector added to the sum at the end (the global adapter, for delta payloads). */
export async function streamingWeightedSum(
  updates: UpdateRef[], coefs: number[], ctx: RoundContext,
  transform?: ((v: Float32Array, u: UpdateRef) => void) | undefined,
  o: { plus?: Float32Array } = {},
): Promise<Float32Array> {
  // Loaders that can read into our buffers get two input slots in the kernel's memory: updates
  // k and k+1 are read while the one before is added (reads run on the thread pool).
  const direct = !transform && updates.length > 0 && updates.every((u) => u.loadInto);
  const acc = new F32Accumulator(ctx.layout.total, { inputs: direct ? 2 : 0 });
  const pending: Array<Promise<Float32Array> | undefined> = [];
  const startLoad = (k: number) => {
    if (!direct || k >= updates.length) return;
    const p = updates[k].loadInto!(acc.input(k % 2));
    p.catch(() => undefined); // surfaced when update k is awaited
    pending[k] = p;
  };
  startLoad(0);
  startLoad(1);
  try {
    for (let k = 0; k < updates.length; k++) {
      const u = updates[k];
      const v = direct ? await pending[k]! : await u.load();
      if (transform) {
        checkUpdate(v, u, ctx);
        transform(v, u);
        acc.addScaled(v, coefs[k]);
      } else {
        // one fused pass: finiteness check + multiply-add (the acc is discarded if it throws)
        if (!(v instanceof Float32Array) || v.length !== acc.length) checkUpdate(v, u, ctx);
        if (!acc.addScaled(v, coefs[k])) checkUpdate(v, u, ctx); // throws naming the site and tensor
      }
      pending[k] = undefined;
      startLoad(k + 2); // into the slot update k just left
    }
    // `plus` (the round's global for delta payloads) is added last: the same rounding as adding
    // it to the finished mean
    if (o.plus) acc.addScaled(o.plus, 1);
    return acc.takeResult();
  } catch (e) {
    // a read still in flight writes into the kernel memory: it is not reused then
    if (!pending.some((p) => p)) acc.release();
    throw e;
  }
}

/** New global = global + delta (payload 'delta') — the aggregate is returned as a fresh array. */
export function applyDelta(global: Float32Array, delta: Float32Array): Float32Array {
  const out = new Float32Array(global.length);
  for (let i = 0; i < out.length; i++) out[i] = global[i] + delta[i];
  return out;
}

export function numOpt(state: Record<string, Float32Array | number>, key: string): number | undefined {
  const v = state[key];
  return typeof v === 'number' ? v : undefined;
}
export function vecOpt(state: Record<string, Float32Array | number>, key: string, n: number): Float32Array | undefined {
  const v = state[key];
  if (v === undefined) return undefined;
  if (!(v instanceof Float32Array) || v.length !== n) throw fail('FEDLORA_ERR_AGGREGATION', `strategy state ${key} is not a Float32Array of ${n} elements`);
  return v;
}
