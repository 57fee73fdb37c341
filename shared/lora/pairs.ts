// Pairs each module's `...lora_A.weight` [r, in] with its `...lora_B.weight` [out, r] in a flat
// adapter layout, for the LoRA-aware strategies (FFA, SVD).
import { fail } from '../errors.ts';
import type { AdapterLayout, LayoutEntry } from '../tensors.ts';

export interface LoraPair {
  module: string;
  a: LayoutEntry; // [r, in]
  b: LayoutEntry; // [out, r]
  r: number;
  inF: number;
  outF: number;
}

export function loraPairs(layout: AdapterLayout): { pairs: LoraPair[]; others: LayoutEntry[] } {
  const as = new Map<string, LayoutEntry>();
  const bs = new Map<string, LayoutEntry>();
  const others: LayoutEntry[] = [];
  for (const e of layout.entries) {
    const m = /^(.*)\.lora_([AB])\.weight$/.exec(e.name);
    if (!m) { others.push(e); continue; }
    if (e.shape.length !== 2) throw fail('FEDLORA_ERR_SHAPE', `${e.name}: LoRA factor must be 2-D, got [${e.shape.join(', ')}]`);
    (m[2] === 'A' ? as : bs).set(m[1], e);
  }
  const pairs: LoraPair[] = [];
  for (const [module, a] of as) {
    const b = bs.get(module);
    if (!b) throw fail('FEDLORA_ERR_ADAPTER', `${module}.lora_A.weight has no matching ${module}.lora_B.weight in the adapter layout`);
    if (a.shape[0] !== b.shape[1]) throw fail('FEDLORA_ERR_SHAPE', `${module}: lora_A is [${a.shape.join(', ')}] but lora_B is [${b.shape.join(', ')}] (ranks differ)`);
    pairs.push({ module, a, b, r: a.shape[0], inF: a.shape[1], outF: b.shape[0] });
  }
  for (const module of bs.keys()) if (!as.has(module)) throw fail('FEDLORA_ERR_ADAPTER', `${module}.lora_B.weight has no matching ${module}.lora_A.weight in the adapter layout`);
  return { pairs, others };
}
