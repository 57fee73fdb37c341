// Contracts of the LoRA training engine: what the checkpoint reader, the graph builder, the
// trainer and the site agent exchange. Keep these stable; other areas code against them.

export type Arch = 'llama' | 'qwen2';
export type WeightDtype = 'F32' | 'F16' | 'BF16';
export type Device = 'cpu' | 'cuda' | 'webgpu';

/** Hugging Face config.json, normalised (checkpoint/config.ts validates and fills defaults). */
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

/** Where one weight lives: bytes [offset, offset+length) of a safetensors file (absolute). */
export interface TensorLocation {
  name: string;
  dtype: WeightDtype;
  shape: number[];
  file: string;
  offset: number;
  length: number;
}

export interface Checkpoint {
  dir: string;
  config: ModelConfig;
  rawConfig: Record<string, unknown>;
  tensors: Map<string, TensorLocation>;
  /** sha256 of the canonical manifest of config.json, tokenizer files and weight files. */
  manifestSha256: string;
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

/** One training or evaluation example: token ids and HF-style labels (same length, -100 = no loss).
 *  Labels are NOT shifted: the engine shifts (predict labels[t+1] from ids[..t]) like transformers. */
export interface Example {
  inputIds: number[];
  labels: number[];
}

/** A packed, fixed-shape batch ready for a training or scoring session. */
export interface PackedBatch {
  batch: number;
  seq: number;
  inputIds: BigInt64Array; // [batch * seq]
  positionIds: BigInt64Array; // [batch * seq], restart at 0 for each packed example
  segmentIds: Int32Array; // [batch * seq], 0 = padding, 1.. = example within the row (attention stays inside a segment)
  targets: BigInt64Array; // [batch * seq], next-token target per position, -100 where no loss
  /** Number of positions with a target != -100 (the denominator of the mean loss). */
  countedTokens: number;
  /** Real (non-padding) tokens in the batch, for tokens/s. */
  realTokens: number;
}

/** What a compiled training graph computes for one micro-batch. */
export interface StepResult {
  /** Sum over counted positions of -log p(target), divided by `lossDenominator`. */
  loss: number;
  /** d loss / d param for every trainable adapter tensor (same keys as the adapter). */
  grads: Map<string, Float32Array>;
}

export interface TrainStepSession {
  readonly batch: number;
  readonly seq: number;
  /** `lossDenominator`: tokens counted across the whole accumulated step (mean over counted tokens). */
  run(batch: PackedBatch, params: AdapterWeights, opts: { lossDenominator: number; dropoutSeed: number }): Promise<StepResult>;
  release(): Promise<void>;
}

export interface ProgressEvent {
  step: number;
  totalSteps: number;
  loss: number;
  lr: number;
  tokensPerSecond: number;
  gradNorm: number;
  elapsedMs: number;
}
