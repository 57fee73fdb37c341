// Helpers every strategy shares: input validation (length, finiteness — errors name the site
// and the tensor), weight computation, and the streaming weighted mean that keeps one update in
// memory at a time (O(adapter), not O(sites x adapter)).
import { fail } from '../../shared/errors.ts';
import type { AdapterLayout } from '../../shared/tensors.ts';
import type { RoundContext, UpdateRef } from './types.ts';

export function tensorAt(layout: AdapterLayout, index: number): string {
  for (const e of layout.entries) if (index >= e.offset && index < e.offset + e.length) return `${e.name}[${index - e.offset}]`;
  return `element ${index}`;
}

/** Reject a vector of the wrong length or with NaN/Inf (FEDLORA_ERR_UPDATE_NONFINITE). */
export function checkUpdate(v: Float32Array, u: UpdateRef, ctx: RoundContext): Float32Array {
  if (!(v instanceof Float32Array)) throw fail('FEDLORA_ERR_UPDATE_INVALID', `update from site ${u.siteId} is not a Float32Array`);
  if (v.length !== ctx.layout.total) throw fail('FEDLORA_ERR_SHAPE', `update from site ${u.siteId} has ${v.length} elements, the adapter layout has ${ctx.layout.total}`);
  for (let i = 0; i < v.length; i++) {
    const x = v[i];
    if (x - x !== 0) throw fail('FEDLORA_ERR_UPDATE_NONFINITE', `update from site ${u.siteId} has ${x} at ${tensorAt(ctx.layout, i)}`);
  }
  return v;
}

export function checkUpdates(updates: UpdateRef[], ctx: RoundContext, strategy: string): void {
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
 *  so a loader may reuse one buffer for every update (no page faults on fresh memory). */
export async function streamingWeightedSum(
  updates: UpdateRef[], coefs: number[], ctx: RoundContext,
  transform?: (v: Float32Array, u: UpdateRef) => void,
): Promise<Float32Array> {
  const acc = new Float32Array(ctx.layout.total);
  for (let k = 0; k < updates.length; k++) {
    const u = updates[k];
    const v = await u.load();
    if (transform) {
      checkUpdate(v, u, ctx);
      transform(v, u);
      accumulate(acc, v, coefs[k]);
    } else {
      // one fused pass: finiteness check + multiply-add (the acc is discarded if it throws)
      if (!(v instanceof Float32Array) || v.length !== acc.length) checkUpdate(v, u, ctx);
      const bad = accumulateChecked(acc, v, coefs[k]);
      if (bad >= 0) checkUpdate(v, u, ctx); // throws naming the site and tensor
    }
  }
  return acc;
}

function accumulate(acc: Float32Array, v: Float32Array, c: number): void {
  const n = acc.length;
  for (let i = 0; i < n; i++) acc[i] += c * v[i];
}

/** acc += c v; returns 0 if v held NaN/Inf, else -1. The products are also summed in a double:
 *  finite float32 inputs cannot overflow it (|sum| <= n * 3.4e38 << 1.8e308), while any NaN or
 *  Inf makes it non-finite (0 * Inf = NaN as well) — one add per element instead of a test. */
function accumulateChecked(acc: Float32Array, v: Float32Array, c: number): number {
  const n = acc.length;
  let s = 0;
  let i = 0;
  for (; i + 3 < n; i += 4) {
    const y0 = c * v[i], y1 = c * v[i + 1], y2 = c * v[i + 2], y3 = c * v[i + 3];
    acc[i] += y0; acc[i + 1] += y1; acc[i + 2] += y2; acc[i + 3] += y3;
    s += (y0 + y1) + (y2 + y3);
  }
  for (; i < n; i++) { const y = c * v[i]; acc[i] += y; s += y; }
  return s - s === 0 ? -1 : 0;
}

export function l2norm(v: Float32Array, ranges?: Array<[number, number]>): number {
  let s = 0;
  for (const [a, b] of ranges ?? [[0, v.length]]) for (let i = a; i < b; i++) s += v[i] * v[i];
  return Math.sqrt(s);
}

export function addInto(dst: Float32Array, src: Float32Array): Float32Array {
  for (let i = 0; i < dst.length; i++) dst[i] += src[i];
  return dst;
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
