// Test helpers: small LoRA-shaped layouts, in-memory UpdateRefs, and a loader that detaches
// the previously loaded update's buffer when the next one is loaded — a strategy that keeps
// more than one update alive at a time then computes garbage or throws.
import { layoutOf, type AdapterLayout } from '../../shared/tensors.ts';
import type { RoundContext, UpdateRef } from '../../coordinator/strategies/types.ts';

export function loraLayout(modules = 2, r = 2, inF = 3, outF = 4): AdapterLayout {
  const m = new Map<string, { shape: number[] }>();
  for (let l = 0; l < modules; l++) {
    m.set(`base_model.model.model.layers.${l}.self_attn.q_proj.lora_A.weight`, { shape: [r, inF] });
    m.set(`base_model.model.model.layers.${l}.self_attn.q_proj.lora_B.weight`, { shape: [outF, r] });
  }
  return layoutOf(m);
}

export function flatLayout(n: number): AdapterLayout {
  return { entries: [{ name: 'x', shape: [n], offset: 0, length: n }], total: n };
}

/** Deterministic pseudo-random numbers (test data only). */
export function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13; s >>>= 0; s ^= s >>> 17; s ^= s << 5; s >>>= 0;
    return s / 4294967296 - 0.5;
  };
}

export function randomVec(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  return Float32Array.from({ length: n }, () => r() * 2 * scale);
}

export function refs(vecs: Float32Array[], examples?: number[], ids?: string[]): UpdateRef[] {
  return vecs.map((v, k) => ({ siteId: ids?.[k] ?? `site-${k}`, numExamples: examples?.[k] ?? 1, load: async () => Float32Array.from(v) }));
}

/** UpdateRefs whose load() detaches the buffer handed out by the previous load. */
export function detachingRefs(vecs: Float32Array[], examples?: number[]): { refs: UpdateRef[]; loads: () => number } {
  let prev: Float32Array | null = null;
  let loads = 0;
  const out = vecs.map((v, k) => ({
    siteId: `site-${k}`,
    numExamples: examples?.[k] ?? 1,
    load: async () => {
      if (prev) structuredClone(prev.buffer, { transfer: [prev.buffer as ArrayBuffer] });
      loads++;
      prev = Float32Array.from(v);
      return prev;
    },
  }));
  return { refs: out, loads: () => loads };
}

export function ctxOf(layout: AdapterLayout, over: Partial<RoundContext> = {}): RoundContext {
  return { round: 1, layout, global: new Float32Array(layout.total), selected: 1, state: {}, seed: 42, ...over };
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
