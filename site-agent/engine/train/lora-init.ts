// LoRA initialisation exactly as PEFT does it (init_lora_weights=True):
//   nn.init.kaiming_uniform_(lora_A.weight, a=math.sqrt(5))  ->  U(-1/sqrt(in), 1/sqrt(in))
//   nn.init.zeros_(lora_B.weight)
// so the adapted model starts equal to the base model. A is drawn from a stream derived from
// (lora.initSeed, tensor key) only: with the same initSeed every site gets bit-identical A
// matrices, which the federation's freezeA mode (only B trained and averaged) relies on.

import { fail } from '../../../shared/errors.ts';
import { loraShapes } from '../lora-keys.ts';
import type { AdapterWeights, LoraConfig, ModelConfig } from '../types.ts';
import { Rng } from './rng.ts';

export function initLoraAdapter(config: ModelConfig, lora: LoraConfig): AdapterWeights {
  if (!Number.isInteger(lora.r) || lora.r < 1) throw fail('FEDLORA_ERR_CONFIG', `lora.r = ${lora.r}: rank must be a positive integer`);
  if (lora.targets.length === 0) throw fail('FEDLORA_ERR_CONFIG', 'lora.targets is empty: name at least one projection (e.g. q_proj,v_proj)');
  if (!Number.isInteger(lora.initSeed)) throw fail('FEDLORA_ERR_CONFIG', `lora.initSeed = ${lora.initSeed}: must be an integer`);
  const out: AdapterWeights = new Map();
  for (const [key, shape] of loraShapes(config, lora)) {
    const n = shape[0] * shape[1];
    const data = new Float32Array(n);
    if (key.endsWith('lora_A.weight')) {
      const bound = 1 / Math.sqrt(shape[1]); // fan_in = in_features = shape[1] of [r, in]
      const rng = Rng.derive(lora.initSeed, 'lora_A', key);
      for (let i = 0; i < n; i++) data[i] = (2 * rng.nextFloat() - 1) * bound;
    }
    out.set(key, { shape: [...shape], data });
  }
  return out;
}

/** Keys the optimizer updates: everything, or only lora_B with freezeA. */
export function trainableKeys(adapter: AdapterWeights, lora: Pick<LoraConfig, 'freezeA'>): string[] {
  return [...adapter.keys()].filter((k) => !lora.freezeA || k.endsWith('lora_B.weight')).sort();
}

/** Check an adapter has exactly the tensors (and shapes) a config + LoRA setting needs. */
export function checkAdapterShapes(config: ModelConfig, lora: Pick<LoraConfig, 'r' | 'targets'>, adapter: AdapterWeights, where: string): void {
  const want = loraShapes(config, lora);
  for (const [key, shape] of want) {
    const t = adapter.get(key);
    if (!t) throw fail('FEDLORA_ERR_ADAPTER', `${where}: tensor ${key} is missing (expected shape [${shape}] for r=${lora.r}, targets ${lora.targets.join(',')})`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]) || t.data.length !== shape[0] * shape[1]) {
      throw fail('FEDLORA_ERR_SHAPE', `${where}: tensor ${key} has shape [${t.shape}], expected [${shape}]`);
    }
  }
  for (const key of adapter.keys()) {
    if (!want.has(key)) throw fail('FEDLORA_ERR_ADAPTER', `${where}: unexpected tensor ${key} (not a LoRA tensor of r=${lora.r}, targets ${lora.targets.join(',')} for this model)`);
  }
}

export function cloneAdapter(a: AdapterWeights): AdapterWeights {
  const m: AdapterWeights = new Map();
  for (const [k, t] of a) m.set(k, { shape: [...t.shape], data: new Float32Array(t.data) });
  return m;
}
