// The adapter the trainer holds: which tensors it updates, and copies of it. (Adapters it is
// handed are checked with shared/lora/peft.ts validateAdapterAgainst.)

import type { AdapterWeights, LoraConfig } from '../../../shared/lora/types.ts';

/** Keys the optimizer updates: everything, or only lora_B with freezeA. */
export function trainableKeys(adapter: AdapterWeights, lora: Pick<LoraConfig, 'freezeA'>): string[] {
  return [...adapter.keys()].filter((k) => !lora.freezeA || k.endsWith('lora_B.weight')).sort();
}

export function cloneAdapter(a: AdapterWeights): AdapterWeights {
  const m: AdapterWeights = new Map();
  for (const [k, t] of a) m.set(k, { shape: [...t.shape], data: new Float32Array(t.data) });
  return m;
}
