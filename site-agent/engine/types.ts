// Contracts of the LoRA training engine: what the checkpoint reader, the graph builder, the
// trainer and the site agent exchange. Keep these stable; other areas code against them.
// The LoRA vocabulary shared with the coordinator (ModelConfig, LoraConfig, adapters) is in
// shared/lora/types.ts.

import type { AdapterWeights, ModelConfig } from '../../shared/lora/types.ts';

export type WeightDtype = 'F32' | 'F16' | 'BF16';
export type Device = 'cpu' | 'cuda' | 'webgpu';
/** How the frozen base weights are held: float32, or blockwise int8/int4 (quant/weight-cache.ts). */
export type QuantMode = 'none' | 'int8' | 'int4';

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
  /** Distillation sessions: the loss's parts (each a mean over the same counted tokens). */
  parts?: { ce: number; kl: number };
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
