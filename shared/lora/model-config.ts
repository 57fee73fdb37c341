// config.json -> ModelConfig. Defaults are those of transformers' LlamaConfig / Qwen2Config, so a
// config that omits a field means what it means to transformers (e.g. head_dim = hidden/heads,
// num_key_value_heads = num_attention_heads, rope_theta = 10000, rms_norm_eps = 1e-6).

import { fail } from '../errors.ts';
import type { Arch, ModelConfig } from './types.ts';

const ARCH_BY_CLASS: Record<string, Arch> = { LlamaForCausalLM: 'llama', Qwen2ForCausalLM: 'qwen2' };
const ARCH_BY_MODEL_TYPE: Record<string, Arch> = { llama: 'llama', qwen2: 'qwen2' };

/** transformers defaults per architecture (values used when config.json omits a field). */
const DEFAULTS: Record<Arch, Record<string, unknown>> = {
  llama: {
    vocab_size: 32000, hidden_size: 4096, intermediate_size: 11008, num_hidden_layers: 32, num_attention_heads: 32,
    max_position_embeddings: 2048, rms_norm_eps: 1e-6, rope_theta: 10000, tie_word_embeddings: false,
    attention_bias: false, mlp_bias: false, bos_token_id: 1, eos_token_id: 2, pad_token_id: null,
  },
  qwen2: {
    vocab_size: 151936, hidden_size: 4096, intermediate_size: 22016, num_hidden_layers: 32, num_attention_heads: 32,
    num_key_value_heads: 32, max_position_embeddings: 32768, rms_norm_eps: 1e-6, rope_theta: 10000,
    tie_word_embeddings: false, bos_token_id: null, eos_token_id: null, pad_token_id: null,
  },
};

function detectArch(raw: Record<string, unknown>, file = 'config.json'): Arch {
  const archs = raw.architectures;
  if (archs !== undefined && archs !== null) {
    if (!Array.isArray(archs) || archs.length === 0 || typeof archs[0] !== 'string') {
      throw fail('FEDLORA_ERR_UNSUPPORTED_ARCH', `${file}: architectures must be a non-empty list of class names, got ${JSON.stringify(archs)}`);
    }
    const a = ARCH_BY_CLASS[archs[0]];
    if (!a) {
      throw fail('FEDLORA_ERR_UNSUPPORTED_ARCH', `${file}: architectures ${JSON.stringify(archs)} is not supported (supported: ${Object.keys(ARCH_BY_CLASS).join(', ')})`);
    }
    return a;
  }
  const mt = raw.model_type;
  const a = typeof mt === 'string' ? ARCH_BY_MODEL_TYPE[mt] : undefined;
  if (!a) {
    throw fail('FEDLORA_ERR_UNSUPPORTED_ARCH', `${file}: model_type ${JSON.stringify(mt)} is not supported (supported: ${Object.keys(ARCH_BY_MODEL_TYPE).join(', ')}) and architectures is absent`);
  }
  return a;
}

function posInt(raw: Record<string, unknown>, key: string, file: string): number {
  const v = raw[key];
  if (!Number.isInteger(v) || (v as number) <= 0) throw fail('FEDLORA_ERR_CONFIG', `${file}: ${key} must be a positive integer, got ${JSON.stringify(v)}`);
  return v as number;
}

function posNum(raw: Record<string, unknown>, key: string, file: string): number {
  const v = raw[key];
  if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) throw fail('FEDLORA_ERR_CONFIG', `${file}: ${key} must be a positive number, got ${JSON.stringify(v)}`);
  return v;
}

function bool(raw: Record<string, unknown>, key: string, file: string): boolean {
  const v = raw[key];
  if (typeof v !== 'boolean') throw fail('FEDLORA_ERR_CONFIG', `${file}: ${key} must be true or false, got ${JSON.stringify(v)}`);
  return v;
}

function optId(v: unknown, key: string, file: string): number | null {
  if (v === null || v === undefined) return null;
  if (!Number.isInteger(v) || (v as number) < 0) throw fail('FEDLORA_ERR_CONFIG', `${file}: ${key} must be a token id, got ${JSON.stringify(v)}`);
  return v as number;
}

function ropeScaling(v: unknown, file: string): ModelConfig['ropeScaling'] {
  if (v === null || v === undefined) return null;
  if (typeof v !== 'object' || Array.isArray(v)) throw fail('FEDLORA_ERR_CONFIG', `${file}: rope_scaling must be an object or null`);
  const r = v as Record<string, unknown>;
  // transformers accepts both the old "type" and the new "rope_type" key.
  const type = r.rope_type ?? r.type;
  const num = (k: string): number => {
    const x = r[k];
    if (typeof x !== 'number' || !Number.isFinite(x) || x <= 0) throw fail('FEDLORA_ERR_CONFIG', `${file}: rope_scaling.${k} must be a positive number, got ${JSON.stringify(x)}`);
    return x;
  };
  if (type === 'default') return null;
  if (type === 'linear') return { type: 'linear', factor: num('factor') };
  if (type === 'llama3') {
    return {
      type: 'llama3', factor: num('factor'), lowFreqFactor: num('low_freq_factor'), highFreqFactor: num('high_freq_factor'),
      originalMaxPositionEmbeddings: num('original_max_position_embeddings'),
    };
  }
  throw fail('FEDLORA_ERR_CONFIG', `${file}: rope_scaling.rope_type ${JSON.stringify(type)} is not supported (supported: linear, llama3, default)`);
}

/** Validate config.json and fill transformers' defaults. `file` names the source in errors. */
export function normalizeConfig(raw: Record<string, unknown>, file = 'config.json'): ModelConfig {
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) throw fail('FEDLORA_ERR_CONFIG', `${file}: not a JSON object`);
  const arch = detectArch(raw, file);
  const c: Record<string, unknown> = { ...DEFAULTS[arch] };
  for (const [k, v] of Object.entries(raw)) if (v !== undefined) c[k] = v;
  // null means "use the default" for these in transformers.
  if (c.num_key_value_heads === null || c.num_key_value_heads === undefined) c.num_key_value_heads = c.num_attention_heads;
  if (c.rope_theta === null || c.rope_theta === undefined) c.rope_theta = 10000;

  // The graph implements SwiGLU MLPs and full causal attention; refuse what it does not compute.
  if ((c.hidden_act ?? 'silu') !== 'silu') throw fail('FEDLORA_ERR_UNSUPPORTED_ARCH', `${file}: hidden_act ${JSON.stringify(c.hidden_act)} is not supported (only "silu")`);
  if (arch === 'qwen2' && c.use_sliding_window === true) {
    throw fail('FEDLORA_ERR_UNSUPPORTED_ARCH', `${file}: use_sliding_window = true is not supported (sliding-window attention)`);
  }
  const hiddenSize = posInt(c, 'hidden_size', file);
  const numHeads = posInt(c, 'num_attention_heads', file);
  const numKvHeads = posInt(c, 'num_key_value_heads', file);
  let headDim: number;
  if (c.head_dim === null || c.head_dim === undefined) {
    if (hiddenSize % numHeads !== 0) throw fail('FEDLORA_ERR_CONFIG', `${file}: hidden_size ${hiddenSize} is not divisible by num_attention_heads ${numHeads} and head_dim is absent`);
    headDim = hiddenSize / numHeads;
  } else {
    headDim = posInt(c, 'head_dim', file);
  }
  if (numHeads % numKvHeads !== 0) throw fail('FEDLORA_ERR_CONFIG', `${file}: num_attention_heads ${numHeads} is not a multiple of num_key_value_heads ${numKvHeads}`);
  if (headDim % 2 !== 0) throw fail('FEDLORA_ERR_CONFIG', `${file}: head_dim ${headDim} must be even for rotary embeddings`);

  const eosRaw = c.eos_token_id;
  let eosTokenIds: number[];
  if (Array.isArray(eosRaw)) eosTokenIds = eosRaw.map((x, i) => optId(x, `eos_token_id[${i}]`, file) as number);
  else {
    const e = optId(eosRaw, 'eos_token_id', file);
    eosTokenIds = e === null ? [] : [e];
  }

  const attentionBias = arch === 'llama' ? bool(c, 'attention_bias', file) : false;
  const config: ModelConfig = {
    arch,
    vocabSize: posInt(c, 'vocab_size', file),
    hiddenSize,
    intermediateSize: posInt(c, 'intermediate_size', file),
    numLayers: posInt(c, 'num_hidden_layers', file),
    numHeads,
    numKvHeads,
    headDim,
    rmsNormEps: posNum(c, 'rms_norm_eps', file),
    ropeTheta: posNum(c, 'rope_theta', file),
    ropeScaling: ropeScaling(c.rope_scaling, file),
    maxPositionEmbeddings: posInt(c, 'max_position_embeddings', file),
    tieWordEmbeddings: bool(c, 'tie_word_embeddings', file),
    // Qwen2Attention hard-codes bias=True on q/k/v and bias=False on o_proj.
    qkvBias: arch === 'qwen2' ? true : attentionBias,
    oBias: arch === 'qwen2' ? false : attentionBias,
    mlpBias: arch === 'llama' ? bool(c, 'mlp_bias', file) : false,
    bosTokenId: optId(c.bos_token_id, 'bos_token_id', file),
    eosTokenIds,
    padTokenId: optId(c.pad_token_id, 'pad_token_id', file),
  };
  for (const id of [config.bosTokenId, config.padTokenId, ...config.eosTokenIds]) {
    if (id !== null && id >= config.vocabSize) throw fail('FEDLORA_ERR_CONFIG', `${file}: special token id ${id} is outside vocab_size ${config.vocabSize}`);
  }
  return config;
}
