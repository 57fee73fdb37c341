// Tiny HF-format checkpoints for the engine's math tests: config.json + model.safetensors with
// random weights of a chosen scale (larger than HF's 0.02 so that gradients are well above float32
// noise), random biases and norm weights. The Checkpoint is built from the safetensors header.

import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readSafetensorsHeader, writeSafetensors, type TensorToWrite } from '../../../shared/safetensors.ts';
import { normalizeConfig } from '../../../shared/lora/model-config.ts';
import { expectedTensors } from '../../../site-agent/engine/checkpoint/expected-tensors.ts';
import type { AdapterWeights, Arch, LoraConfig } from '../../../shared/lora/types.ts';
import type { Checkpoint, TensorLocation, WeightDtype } from '../../../site-agent/engine/types.ts';
import { loraShapes } from '../../../shared/lora/keys.ts';
import { mulberry32 } from '../../../shared/prng.ts';

export interface FixtureOptions {
  arch: Arch;
  dtype?: WeightDtype;
  layers?: number;
  hidden?: number;
  heads?: number;
  kvHeads?: number;
  intermediate?: number;
  vocab?: number;
  ropeScaling?: Record<string, unknown> | null;
  tie?: boolean;
  std?: number;
  seed?: number;
}

/** Small deterministic PRNG (mulberry32) for test data. */
export const rng = mulberry32;

export function randn(r: () => number, n: number, std: number): Float32Array {
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.sqrt(-2 * Math.log(r() || 1e-12)) * Math.cos(2 * Math.PI * r()) * std;
  return out;
}

export function writeFixture(o: FixtureOptions, dir = mkdtempSync(join(tmpdir(), 'fedlora-fixture-'))): Checkpoint {
  mkdirSync(dir, { recursive: true });
  const hidden = o.hidden ?? 32;
  const raw: Record<string, unknown> = {
    architectures: [o.arch === 'llama' ? 'LlamaForCausalLM' : 'Qwen2ForCausalLM'],
    model_type: o.arch,
    hidden_size: hidden,
    intermediate_size: o.intermediate ?? hidden * 2,
    num_hidden_layers: o.layers ?? 2,
    num_attention_heads: o.heads ?? 4,
    num_key_value_heads: o.kvHeads ?? 2,
    vocab_size: o.vocab ?? 64,
    max_position_embeddings: 256,
    rms_norm_eps: 1e-6,
    rope_theta: 10000.0,
    rope_scaling: o.ropeScaling ?? null,
    tie_word_embeddings: o.tie ?? false,
    attention_bias: false,
    bos_token_id: 1,
    eos_token_id: 2,
  };
  const config = normalizeConfig(raw, join(dir, 'config.json'));
  writeFileSync(join(dir, 'config.json'), JSON.stringify(raw, null, 2));
  const r = rng(o.seed ?? 1);
  const std = o.std ?? 0.3;
  const tensors = new Map<string, TensorToWrite>();
  for (const [name, shape] of expectedTensors(config)) {
    const n = shape.reduce((a, b) => a * b, 1);
    let data: Float32Array;
    if (name.endsWith('norm.weight')) data = Float32Array.from(randn(r, n, 0.2), (v) => 1 + v);
    else if (name.endsWith('.bias')) data = randn(r, n, 0.1);
    else if (name === 'model.embed_tokens.weight') data = randn(r, n, 1);
    else data = randn(r, n, std);
    tensors.set(name, { dtype: o.dtype ?? 'F32', shape, data });
  }
  const file = join(dir, 'model.safetensors');
  writeSafetensors(file, tensors);
  const h = readSafetensorsHeader(file);
  const locs = new Map<string, TensorLocation>();
  for (const e of h.entries.values()) locs.set(e.name, { name: e.name, dtype: e.dtype as WeightDtype, shape: e.shape, file, offset: e.offset, length: e.length });
  return { dir, config, rawConfig: raw, tensors: locs, manifestSha256: `fixture-${dir}-${o.dtype ?? 'F32'}` };
}

export function loraConfig(o: Partial<LoraConfig> = {}): LoraConfig {
  return { r: 4, alpha: 8, targets: ['q_proj', 'v_proj'], dropout: 0, useRslora: false, freezeA: false, initSeed: 0, ...o };
}

/** A random non-zero adapter (B is not zero so LoRA changes the output). */
export function randomAdapter(ckpt: Checkpoint, lora: LoraConfig, seed = 7, std = 0.3): AdapterWeights {
  const r = rng(seed);
  const m: AdapterWeights = new Map();
  for (const [k, shape] of loraShapes(ckpt.config, lora)) m.set(k, { shape, data: randn(r, shape.reduce((a, b) => a * b, 1), std) });
  return m;
}

/** Random packed batch: each row holds two segments plus padding at the end. */
export function randomBatch(batch: number, seq: number, vocab: number, seed = 3) {
  const r = rng(seed);
  const N = batch * seq;
  const inputIds = new BigInt64Array(N), positionIds = new BigInt64Array(N), targets = new BigInt64Array(N);
  const segmentIds = new Int32Array(N);
  let counted = 0, real = 0;
  for (let row = 0; row < batch; row++) {
    const pad = row % 2 === 0 ? 2 : 0;
    const len = seq - pad;
    const cut = Math.floor(len / 2) + row;
    for (let t = 0; t < seq; t++) {
      const i = row * seq + t;
      inputIds[i] = BigInt(Math.floor(r() * vocab));
      if (t >= len) { targets[i] = -100n; continue; }
      const seg = t < cut ? 1 : 2;
      segmentIds[i] = seg;
      positionIds[i] = BigInt(seg === 1 ? t : t - cut);
      real++;
    }
    for (let t = 0; t < len; t++) {
      const i = row * seq + t;
      const last = t === cut - 1 || t === len - 1;
      targets[i] = last || t === 0 ? -100n : inputIds[i + 1];
      if (targets[i] !== -100n) counted++;
    }
  }
  return { batch, seq, inputIds, positionIds, segmentIds, targets, countedTokens: counted, realTokens: real };
}
