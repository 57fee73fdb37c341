// A flat view of an adapter: every tensor laid end to end in a fixed order, so strategies can
// be small pure functions over one Float32Array. The layout says where each tensor sits.

export interface LayoutEntry {
  name: string; // PEFT key
  shape: number[];
  offset: number; // in elements
  length: number; // in elements
}

export interface AdapterLayout {
  entries: LayoutEntry[];
  total: number;
}

/** Layout in sorted-key order (the canonical order used on the wire and on disk). */
export function layoutOf(tensors: Map<string, { shape: number[] }>): AdapterLayout {
  const names = [...tensors.keys()].sort();
  let offset = 0;
  const entries = names.map((name) => {
    const shape = tensors.get(name)!.shape;
    const length = shape.reduce((a, b) => a * b, 1);
    const e = { name, shape: [...shape], offset, length };
    offset += length;
    return e;
  });
  return { entries, total: offset };
}

export function flatten(tensors: Map<string, { shape: number[]; data: Float32Array }>, layout = layoutOf(tensors)): Float32Array {
  const out = new Float32Array(layout.total);
  for (const e of layout.entries) out.set(tensors.get(e.name)!.data, e.offset);
  return out;
}

export function unflatten(flat: Float32Array, layout: AdapterLayout): Map<string, { shape: number[]; data: Float32Array }> {
  const m = new Map<string, { shape: number[]; data: Float32Array }>();
  for (const e of layout.entries) m.set(e.name, { shape: [...e.shape], data: flat.slice(e.offset, e.offset + e.length) });
  return m;
}

/** L2 norm of arrays taken end to end, accumulated in float64: the one norm the site reports,
 *  the coordinator measures and the trainer clips with (same order of summation, same result). */
export function l2norm(parts: Float32Array | Iterable<Float32Array>): number {
  let s = 0;
  for (const v of parts instanceof Float32Array ? [parts] : parts) for (let i = 0; i < v.length; i++) s += v[i] * v[i];
  return Math.sqrt(s);
}
