// PEFT's names and shapes for LoRA tensors of a llama/qwen2 decoder. PEFT saves
//   base_model.model.model.layers.{i}.self_attn.q_proj.lora_A.weight   [r, in_features]
//   base_model.model.model.layers.{i}.self_attn.q_proj.lora_B.weight   [out_features, r]
// (no adapter name in saved keys), and vLLM loads exactly these.

import type { LoraConfig, LoraTarget, ModelConfig } from './types.ts';

export const ALL_TARGETS: LoraTarget[] = ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'];

export function parentOf(target: LoraTarget): 'self_attn' | 'mlp' {
  return target.endsWith('_proj') && ['gate_proj', 'up_proj', 'down_proj'].includes(target) ? 'mlp' : 'self_attn';
}

export function loraKey(layer: number, target: LoraTarget, which: 'A' | 'B'): string {
  return `base_model.model.model.layers.${layer}.${parentOf(target)}.${target}.lora_${which}.weight`;
}

/** [in_features, out_features] of a projection, as in the HF modules. */
function projectionDims(cfg: ModelConfig, target: LoraTarget): [number, number] {
  const h = cfg.hiddenSize;
  const q = cfg.numHeads * cfg.headDim;
  const kv = cfg.numKvHeads * cfg.headDim;
  switch (target) {
    case 'q_proj': return [h, q];
    case 'k_proj': return [h, kv];
    case 'v_proj': return [h, kv];
    case 'o_proj': return [q, h];
    case 'gate_proj': return [h, cfg.intermediateSize];
    case 'up_proj': return [h, cfg.intermediateSize];
    case 'down_proj': return [cfg.intermediateSize, h];
  }
}

/** All adapter tensors (key -> shape) for a config, in layer then target order. */
export function loraShapes(cfg: ModelConfig, lora: Pick<LoraConfig, 'r' | 'targets'>): Map<string, number[]> {
  const m = new Map<string, number[]>();
  for (let l = 0; l < cfg.numLayers; l++) {
    for (const t of ALL_TARGETS) {
      if (!lora.targets.includes(t)) continue;
      const [inF, outF] = projectionDims(cfg, t);
      m.set(loraKey(l, t, 'A'), [lora.r, inF]);
      m.set(loraKey(l, t, 'B'), [outF, lora.r]);
    }
  }
  return m;
}

/** PEFT's scaling: alpha / r, or alpha / sqrt(r) with rsLoRA. */
export function loraScaling(lora: Pick<LoraConfig, 'r' | 'alpha' | 'useRslora'>): number {
  return lora.useRslora ? lora.alpha / Math.sqrt(lora.r) : lora.alpha / lora.r;
}
