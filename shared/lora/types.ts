// The LoRA vocabulary the coordinator, the site agent, the engine and PEFT I/O share: the
// normalised model config (shapes come from it), LoRA settings and adapter tensors.

export type Arch = 'llama' | 'qwen2';

/** Hugging Face config.json, normalised (shared/lora/model-config.ts validates and fills defaults). */
export interface ModelConfig {
  arch: Arch;
  vocabSize: number;
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  headDim: number;
  rmsNormEps: number;
  ropeTheta: number;
  ropeScaling:
    | null
    | { type: 'linear'; factor: number }
    | { type: 'llama3'; factor: number; lowFreqFactor: number; highFreqFactor: number; originalMaxPositionEmbeddings: number };
  maxPositionEmbeddings: number;
  tieWordEmbeddings: boolean;
  /** q/k/v projections carry a bias (qwen2: true; llama: attention_bias). */
  qkvBias: boolean;
  /** o_proj bias (llama attention_bias applies to o_proj too). */
  oBias: boolean;
  mlpBias: boolean;
  bosTokenId: number | null;
  eosTokenIds: number[];
  padTokenId: number | null;
}

export type LoraTarget = 'q_proj' | 'k_proj' | 'v_proj' | 'o_proj' | 'gate_proj' | 'up_proj' | 'down_proj';

export interface LoraConfig {
  r: number;
  alpha: number;
  targets: LoraTarget[];
  dropout: number;
  useRslora: boolean;
  /** A generated from `initSeed` (same at every site) and frozen; only B is trained. */
  freezeA: boolean;
  initSeed: number;
}

/** A tensor of an adapter, float32 in memory. Key = PEFT key, e.g.
 *  base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight  [r, in]
 *  base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight  [out, r] */
export interface AdapterTensor {
  shape: number[];
  data: Float32Array;
}
export type AdapterWeights = Map<string, AdapterTensor>;
