// LoRA initialisation exactly as PEFT does it (init_lora_weights=True):
//   nn.init.kaiming_uniform_(lora_A.weight, a=math.sqrt(5))  ->  U(-1/sqrt(in), 1/sqrt(in))
//   nn.init.zeros_(lora_B.weight)
// so the adapted model starts equal to the base model. A is drawn from a stream derived from
// (lora.initSeed, tensor key) only: with the same initSeed every site gets bit-identical A
// matrices, which the federation's freezeA mode (only B trained and averaged) relies on.

import { fail } from '../errors.ts';
import { loraShapes } from './keys.ts';
import type { AdapterWeights, LoraConfig, ModelConfig } from './types.ts';
import { Rng } from '../prng.ts';

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
