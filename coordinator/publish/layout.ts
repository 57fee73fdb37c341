// The adapter layout of a job, derived from its spec: the base model's config.json (shapes)
// and the LoRA settings. `full` is what a published version holds; `update` is what sites
// send (with freeze_a only the B matrices: A is regenerated from init_seed everywhere).
import { normalizeConfig } from '../../shared/lora/model-config.ts';
import { loraShapes } from '../../shared/lora/keys.ts';
import type { LoraTarget, ModelConfig } from '../../shared/lora/types.ts';
import { layoutOf, type AdapterLayout } from '../../shared/tensors.ts';
import type { JobSpec } from '../jobs/spec.ts';

export interface JobLayout {
  model: ModelConfig;
  full: AdapterLayout;
  update: AdapterLayout;
}

export function jobLayout(spec: JobSpec): JobLayout {
  const model = normalizeConfig(spec.base_model.config as Record<string, unknown>, `${spec.name}: base_model.config`);
  const shapes = loraShapes(model, { r: spec.lora.r, targets: spec.lora.target_modules as LoraTarget[] });
  const full = layoutOf(new Map([...shapes].map(([k, shape]) => [k, { shape }])));
  const update = spec.lora.freeze_a
    ? layoutOf(new Map([...shapes].filter(([k]) => k.includes('.lora_B.')).map(([k, shape]) => [k, { shape }])))
    : full;
  return { model, full, update };
}

/** Copy the `sub` layout's tensors out of a `full` flat vector (same names). */
export function extract(flat: Float32Array, full: AdapterLayout, sub: AdapterLayout): Float32Array {
  if (sub === full) return flat;
  const at = new Map(full.entries.map((e) => [e.name, e]));
  const out = new Float32Array(sub.total);
  for (const e of sub.entries) {
    const f = at.get(e.name)!;
    out.set(flat.subarray(f.offset, f.offset + f.length), e.offset);
  }
  return out;
}

/** Write the `sub` tensors back into a copy of `flat`. */
export function merge(flat: Float32Array, full: AdapterLayout, sub: AdapterLayout, values: Float32Array): Float32Array {
  if (sub === full) return values;
  const out = new Float32Array(flat);
  const at = new Map(full.entries.map((e) => [e.name, e]));
  for (const e of sub.entries) out.set(values.subarray(e.offset, e.offset + e.length), at.get(e.name)!.offset);
  return out;
}
