import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync, readFileSync, writeFileSync, unlinkSync, cpSync, appendFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { normalizeConfig } from '../../shared/lora/model-config.ts';
import { expectedTensors, readCheckpoint, computeModelManifest, computeModelManifestAsync, writeTinyModel, seededNormal } from '../../site-agent/engine/checkpoint/index.ts';
import { readSafetensorsHeader, readTensorBytes, toFloat32, writeSafetensors, encodeSafetensors } from '../../shared/safetensors.ts';
import { FedloraError } from '../../shared/errors.ts';

let root: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'fedlora-ckpt-'));
});
afterAll(() => rmSync(root, { recursive: true, force: true }));

function err(fn: () => unknown): FedloraError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(FedloraError);
    return e as FedloraError;
  }
  throw new Error('expected a FedloraError');
}

// Real config.json files (fields as published on the Hugging Face Hub).
const DEEPSEEK_LLM_7B = {
  architectures: ['LlamaForCausalLM'], bos_token_id: 100000, eos_token_id: 100001, hidden_act: 'silu', hidden_size: 4096,
  initializer_range: 0.02, intermediate_size: 11008, max_position_embeddings: 4096, model_type: 'llama', num_attention_heads: 32,
  num_hidden_layers: 30, num_key_value_heads: 32, pretraining_tp: 1, rms_norm_eps: 1e-6, rope_scaling: null, rope_theta: 10000,
  tie_word_embeddings: false, torch_dtype: 'bfloat16', transformers_version: '4.33.1', use_cache: true, vocab_size: 102400,
};
const DEEPSEEK_CODER_1_3B = {
  architectures: ['LlamaForCausalLM'], bos_token_id: 32013, eos_token_id: 32021, hidden_act: 'silu', hidden_size: 2048,
  initializer_range: 0.02, intermediate_size: 5504, max_position_embeddings: 16384, model_type: 'llama', num_attention_heads: 16,
  num_hidden_layers: 24, num_key_value_heads: 16, pretraining_tp: 1, rms_norm_eps: 1e-6, rope_scaling: { factor: 4.0, type: 'linear' },
  rope_theta: 100000, tie_word_embeddings: false, torch_dtype: 'bfloat16', transformers_version: '4.35.0', use_cache: true, vocab_size: 32256,
};
const R1_DISTILL_LLAMA_8B = {
  architectures: ['LlamaForCausalLM'], attention_bias: false, attention_dropout: 0.0, bos_token_id: 128000, eos_token_id: 128001,
  hidden_act: 'silu', hidden_size: 4096, initializer_range: 0.02, intermediate_size: 14336, max_position_embeddings: 131072,
  mlp_bias: false, model_type: 'llama', num_attention_heads: 32, num_hidden_layers: 32, num_key_value_heads: 8, pretraining_tp: 1,
  rms_norm_eps: 1e-5, rope_scaling: { factor: 8.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 8192, rope_type: 'llama3' },
  rope_theta: 500000.0, tie_word_embeddings: false, torch_dtype: 'bfloat16', transformers_version: '4.43.0.dev0', use_cache: true, vocab_size: 128256,
};
const R1_DISTILL_QWEN_1_5B = {
  architectures: ['Qwen2ForCausalLM'], attention_dropout: 0.0, bos_token_id: 151643, eos_token_id: 151643, hidden_act: 'silu',
  hidden_size: 1536, initializer_range: 0.02, intermediate_size: 8960, max_position_embeddings: 131072, max_window_layers: 21,
  model_type: 'qwen2', num_attention_heads: 12, num_hidden_layers: 28, num_key_value_heads: 2, rms_norm_eps: 1e-6, rope_theta: 10000,
  sliding_window: 4096, tie_word_embeddings: false, torch_dtype: 'bfloat16', transformers_version: '4.44.0', use_cache: true,
  use_sliding_window: false, vocab_size: 151936,
};

describe('config.json normalisation', () => {
  it('DeepSeek-LLM 7B: MHA, no scaling, ids from the config', () => {
    const c = normalizeConfig(DEEPSEEK_LLM_7B);
    expect(c).toMatchObject({ arch: 'llama', vocabSize: 102400, hiddenSize: 4096, numLayers: 30, numHeads: 32, numKvHeads: 32, headDim: 128,
      ropeScaling: null, ropeTheta: 10000, qkvBias: false, oBias: false, mlpBias: false, bosTokenId: 100000, eosTokenIds: [100001], padTokenId: null, tieWordEmbeddings: false });
  });
  it('DeepSeek-Coder 1.3B: linear rope scaling given with the old "type" key', () => {
    const c = normalizeConfig(DEEPSEEK_CODER_1_3B);
    expect(c.ropeScaling).toEqual({ type: 'linear', factor: 4 });
    expect(c.ropeTheta).toBe(100000);
    expect(c.headDim).toBe(128);
  });
  it('R1-Distill-Llama-8B: llama3 rope scaling and GQA', () => {
    const c = normalizeConfig(R1_DISTILL_LLAMA_8B);
    expect(c.ropeScaling).toEqual({ type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 8192 });
    expect([c.numKvHeads, c.rmsNormEps, c.maxPositionEmbeddings]).toEqual([8, 1e-5, 131072]);
  });
  it('R1-Distill-Qwen-1.5B: qwen2 has q/k/v biases, no o bias', () => {
    const c = normalizeConfig(R1_DISTILL_QWEN_1_5B);
    expect(c).toMatchObject({ arch: 'qwen2', numHeads: 12, numKvHeads: 2, headDim: 128, qkvBias: true, oBias: false });
    const ex = expectedTensors(c);
    expect(ex.get('model.layers.27.self_attn.k_proj.bias')).toEqual([256]);
    expect(ex.has('model.layers.0.self_attn.o_proj.bias')).toBe(false);
    expect(ex.get('lm_head.weight')).toEqual([151936, 1536]);
  });
  it('fills transformers defaults for omitted fields', () => {
    const c = normalizeConfig({ model_type: 'llama', hidden_size: 64, num_attention_heads: 4, intermediate_size: 128, num_hidden_layers: 1, vocab_size: 100 });
    expect(c).toMatchObject({ numKvHeads: 4, headDim: 16, ropeTheta: 10000, rmsNormEps: 1e-6, maxPositionEmbeddings: 2048, bosTokenId: 1, eosTokenIds: [2], tieWordEmbeddings: false });
    const q = normalizeConfig({ model_type: 'qwen2', hidden_size: 64, num_attention_heads: 4, num_key_value_heads: null, intermediate_size: 128, num_hidden_layers: 1, vocab_size: 100 });
    expect(q).toMatchObject({ numKvHeads: 4, maxPositionEmbeddings: 32768, bosTokenId: null, eosTokenIds: [] });
    expect(normalizeConfig({ ...DEEPSEEK_LLM_7B, head_dim: 64 }).headDim).toBe(64);
    expect(normalizeConfig({ ...DEEPSEEK_LLM_7B, eos_token_id: [100001, 100008] }).eosTokenIds).toEqual([100001, 100008]);
    expect(normalizeConfig({ ...DEEPSEEK_LLM_7B, attention_bias: true })).toMatchObject({ qkvBias: true, oBias: true });
  });
  it('rejects unsupported architectures naming the field and value', () => {
    const e = err(() => normalizeConfig({ ...DEEPSEEK_LLM_7B, architectures: ['DeepseekV3ForCausalLM'] }, 'x/config.json'));
    expect(e.code).toBe('FEDLORA_ERR_UNSUPPORTED_ARCH');
    expect(e.message).toContain('x/config.json: architectures');
    expect(e.message).toContain('DeepseekV3ForCausalLM');
    const e2 = err(() => normalizeConfig({ model_type: 'mistral', hidden_size: 8 }));
    expect(e2.code).toBe('FEDLORA_ERR_UNSUPPORTED_ARCH');
    expect(e2.message).toMatch(/model_type "mistral"/);
  });
  it('rejects bad values and unsupported rope scaling', () => {
    expect(err(() => normalizeConfig({ ...DEEPSEEK_LLM_7B, rope_scaling: { type: 'yarn', factor: 4 } })).message).toMatch(/rope_scaling.rope_type "yarn"/);
    expect(err(() => normalizeConfig({ ...DEEPSEEK_LLM_7B, num_key_value_heads: 5 })).message).toMatch(/not a multiple of num_key_value_heads 5/);
    expect(err(() => normalizeConfig({ ...DEEPSEEK_LLM_7B, hidden_size: -1 })).message).toMatch(/hidden_size must be a positive integer/);
    expect(err(() => normalizeConfig({ ...DEEPSEEK_CODER_1_3B, rope_scaling: { type: 'linear' } })).message).toMatch(/rope_scaling.factor/);
    expect(err(() => normalizeConfig({ ...DEEPSEEK_LLM_7B, hidden_act: 'gelu' })).message).toMatch(/hidden_act "gelu" is not supported/);
    expect(err(() => normalizeConfig({ ...R1_DISTILL_QWEN_1_5B, use_sliding_window: true })).code).toBe('FEDLORA_ERR_UNSUPPORTED_ARCH');
  });
});

describe('tiny real-format models and readCheckpoint', () => {
  it('writes a llama model that reads back with every tensor located, HF-like init', () => {
    const dir = join(root, 'llama');
    const info = writeTinyModel({ arch: 'llama', out: dir, seed: 7, layers: 2, hidden: 32, heads: 4, kvHeads: 2, intermediate: 48 });
    const ck = readCheckpoint(dir);
    expect(ck.config).toEqual(info.config);
    expect(ck.tensors.size).toBe(expectedTensors(ck.config).size);
    expect(ck.config.vocabSize).toBeGreaterThanOrEqual(261);
    const raw = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
    expect(raw).toMatchObject({ architectures: ['LlamaForCausalLM'], model_type: 'llama', torch_dtype: 'float32', initializer_range: 0.02 });
    // Weights: q_proj ~ N(0, 0.02), norms = 1, read through the TensorLocation.
    const q = ck.tensors.get('model.layers.1.self_attn.q_proj.weight')!;
    expect(q.shape).toEqual([32, 32]);
    const v = toFloat32(readTensorBytes({ ...q, dtype: q.dtype }, q.file), q.dtype);
    const mean = v.reduce((a, b) => a + b, 0) / v.length;
    const std = Math.sqrt(v.reduce((a, b) => a + (b - mean) ** 2, 0) / v.length);
    expect(Math.abs(mean)).toBeLessThan(0.004);
    expect(std).toBeGreaterThan(0.017);
    expect(std).toBeLessThan(0.023);
    const n = ck.tensors.get('model.norm.weight')!;
    expect([...toFloat32(readTensorBytes(n, n.file), n.dtype)].every((x) => x === 1)).toBe(true);
    expect(ck.manifestSha256).toMatch(/^[0-9a-f]{64}$/);
  });

  it('is deterministic from the seed; sharded and single files hold the same tensors', () => {
    const a = join(root, 'q-single');
    const b = join(root, 'q-shard');
    const c = join(root, 'q-other-seed');
    writeTinyModel({ arch: 'qwen2', out: a, seed: 3, layers: 3, hidden: 32, heads: 4, kvHeads: 1, dtype: 'BF16', biasStd: 0.02 });
    writeTinyModel({ arch: 'qwen2', out: b, seed: 3, layers: 3, hidden: 32, heads: 4, kvHeads: 1, dtype: 'BF16', biasStd: 0.02, sharded: true });
    writeTinyModel({ arch: 'qwen2', out: c, seed: 4, layers: 3, hidden: 32, heads: 4, kvHeads: 1, dtype: 'BF16', biasStd: 0.02 });
    const A = readCheckpoint(a), B = readCheckpoint(b), C = readCheckpoint(c);
    const idx = JSON.parse(readFileSync(join(b, 'model.safetensors.index.json'), 'utf8'));
    expect(new Set(Object.values(idx.weight_map))).toEqual(new Set(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']));
    expect(B.tensors.get('model.layers.2.mlp.down_proj.weight')!.file).toContain('model-00002-of-00002');
    for (const name of ['model.layers.2.self_attn.k_proj.bias', 'model.embed_tokens.weight', 'model.layers.0.mlp.up_proj.weight']) {
      const x = A.tensors.get(name)!, y = B.tensors.get(name)!, z = C.tensors.get(name)!;
      expect(x.dtype).toBe('BF16');
      expect(readTensorBytes(x, x.file).equals(readTensorBytes(y, y.file))).toBe(true);
      expect(readTensorBytes(x, x.file).equals(readTensorBytes(z, z.file))).toBe(false);
    }
    expect(A.config.qkvBias).toBe(true);
    expect(A.manifestSha256).not.toBe(B.manifestSha256); // different files -> different manifests
    expect(seededNormal(3, 't', 5, 1)).toEqual(seededNormal(3, 't', 5, 1));
  });

  it('tied embeddings: no lm_head expected; vocab must cover the tokenizer', () => {
    const dir = join(root, 'tied');
    writeTinyModel({ arch: 'qwen2', out: dir, seed: 1, layers: 1, hidden: 16, heads: 2, kvHeads: 2, tieWordEmbeddings: true });
    const ck = readCheckpoint(dir);
    expect(ck.config.tieWordEmbeddings).toBe(true);
    expect(ck.tensors.has('lm_head.weight')).toBe(false);
    expect(readSafetensorsHeader(join(dir, 'model.safetensors')).entries.has('lm_head.weight')).toBe(false);
    expect(err(() => writeTinyModel({ arch: 'llama', out: join(root, 'small'), seed: 1, layers: 1, hidden: 16, heads: 2, kvHeads: 2, vocab: 100 })).message).toMatch(/does not cover/);
  });

  it("with DeepSeek-V3's real tokenizer the vocab covers all 128815 ids", () => {
    const dir = join(root, 'dsv3');
    writeTinyModel({ arch: 'llama', out: dir, seed: 1, layers: 1, hidden: 8, heads: 2, kvHeads: 1, tokenizer: 'deepseek' });
    const ck = readCheckpoint(dir);
    expect(ck.config.vocabSize).toBe(129280);
    expect([ck.config.bosTokenId, ck.config.eosTokenIds]).toEqual([0, [1]]);
    const added = JSON.parse(readFileSync(join(dir, 'tokenizer.json'), 'utf8')).added_tokens as { id: number }[];
    expect(Math.max(...added.map((a) => a.id))).toBeLessThan(ck.config.vocabSize);
    expect(ck.tensors.get('model.embed_tokens.weight')!.shape).toEqual([129280, 8]);
  });

  it('rope scaling passes through config.json', () => {
    const dir = join(root, 'rope');
    const rope = { factor: 8.0, high_freq_factor: 4.0, low_freq_factor: 1.0, original_max_position_embeddings: 64, rope_type: 'llama3' };
    writeTinyModel({ arch: 'llama', out: dir, seed: 1, layers: 1, hidden: 16, heads: 2, kvHeads: 1, ropeScaling: rope, ropeTheta: 500000 });
    expect(readCheckpoint(dir).config.ropeScaling).toEqual({ type: 'llama3', factor: 8, lowFreqFactor: 1, highFreqFactor: 4, originalMaxPositionEmbeddings: 64 });
  });
});

describe('readCheckpoint errors name the file, tensor and shapes', () => {
  function fresh(name: string, sharded = false): string {
    const dir = join(root, name);
    writeTinyModel({ arch: 'llama', out: dir, seed: 2, layers: 2, hidden: 16, heads: 2, kvHeads: 2, sharded });
    return dir;
  }
  function rewrite(dir: string, edit: (m: Map<string, any>) => void): void {
    const f = join(dir, 'model.safetensors');
    const h = readSafetensorsHeader(f);
    const m = new Map<string, any>();
    for (const e of h.entries.values()) m.set(e.name, { dtype: e.dtype, shape: e.shape, data: new Uint8Array(readTensorBytes(e, f)) });
    edit(m);
    writeSafetensors(f, m);
  }

  it('missing folder pieces', () => {
    expect(err(() => readCheckpoint(join(root, 'nope'))).code).toBe('FEDLORA_ERR_MODEL_FILES');
    const d = fresh('nofile');
    unlinkSync(join(d, 'model.safetensors'));
    writeFileSync(join(d, 'pytorch_model.bin'), 'x');
    const e = err(() => readCheckpoint(d));
    expect(e.code).toBe('FEDLORA_ERR_MODEL_FILES');
    expect(e.message).toMatch(/pytorch_model.bin; convert them to safetensors/);
  });
  it('a missing tensor', () => {
    const d = fresh('missing');
    rewrite(d, (m) => m.delete('model.layers.1.mlp.up_proj.weight'));
    const e = err(() => readCheckpoint(d));
    expect(e.code).toBe('FEDLORA_ERR_MODEL_FILES');
    expect(e.message).toContain('"model.layers.1.mlp.up_proj.weight"');
  });
  it('a wrong shape', () => {
    const d = fresh('shape');
    rewrite(d, (m) => m.set('model.layers.0.self_attn.k_proj.weight', { dtype: 'F32', shape: [8, 16], data: new Float32Array(128) }));
    const e = err(() => readCheckpoint(d));
    expect(e.code).toBe('FEDLORA_ERR_SHAPE');
    expect(e.message).toContain('"model.layers.0.self_attn.k_proj.weight" has shape [8,16], expected [16,16]');
  });
  it('weights for more layers than config.json declares', () => {
    const d = fresh('layers');
    const cfg = JSON.parse(readFileSync(join(d, 'config.json'), 'utf8'));
    cfg.num_hidden_layers = 1;
    writeFileSync(join(d, 'config.json'), JSON.stringify(cfg));
    expect(err(() => readCheckpoint(d)).message).toMatch(/belongs to layer 1, but config.json num_hidden_layers = 1/);
  });
  it('an unsupported dtype', () => {
    const d = fresh('dtype');
    rewrite(d, (m) => m.set('model.norm.weight', { dtype: 'I32', shape: [16], data: new Int32Array(16) }));
    const e = err(() => readCheckpoint(d));
    expect(e.code).toBe('FEDLORA_ERR_UNSUPPORTED_DTYPE');
    expect(e.message).toContain('"model.norm.weight" has dtype I32');
  });
  it('a malformed or inconsistent shard index', () => {
    const d = fresh('idx', true);
    const ip = join(d, 'model.safetensors.index.json');
    const good = readFileSync(ip, 'utf8');
    writeFileSync(ip, '{"weight_map": 3}');
    expect(err(() => readCheckpoint(d)).message).toMatch(/weight_map is missing or not an object/);
    writeFileSync(ip, '{not json');
    expect(err(() => readCheckpoint(d)).message).toMatch(/not valid JSON/);
    const idx = JSON.parse(good);
    idx.weight_map['model.norm.weight'] = 'model-00001-of-00002.safetensors';
    writeFileSync(ip, JSON.stringify(idx));
    expect(err(() => readCheckpoint(d)).message).toMatch(/weight_map puts "model.norm.weight" in model-00001-of-00002.safetensors, but it is in/);
    idx.weight_map['model.norm.weight'] = '../evil.safetensors';
    writeFileSync(ip, JSON.stringify(idx));
    expect(err(() => readCheckpoint(d)).message).toMatch(/is not a .safetensors file name in the folder/);
    idx.weight_map['model.norm.weight'] = 'model-00003-of-00003.safetensors';
    writeFileSync(ip, JSON.stringify(idx));
    expect(err(() => readCheckpoint(d)).message).toMatch(/shard named in model.safetensors.index.json is missing/);
  });
  it('a truncated weight file', () => {
    const d = fresh('trunc');
    const f = join(d, 'model.safetensors');
    const buf = readFileSync(f);
    writeFileSync(f, buf.subarray(0, buf.length - 10));
    expect(err(() => readCheckpoint(d)).code).toBe('FEDLORA_ERR_SAFETENSORS');
  });
});

describe('model manifest', () => {
  it('async and sync manifests agree, with the cache off and on; file hashes are real sha256s', async () => {
    const d = join(root, 'man-async');
    writeTinyModel({ arch: 'qwen2', out: d, seed: 8, layers: 1, hidden: 16, heads: 2, kvHeads: 2, sharded: true });
    const prev = process.env.FEDLORA_HASH_CACHE;
    process.env.FEDLORA_HASH_CACHE = join(root, 'hash-cache');
    try {
      const a = await computeModelManifestAsync(d);
      const b = computeModelManifest(d);
      expect(a.json).toBe(b.json);
      expect(a.manifest.files.map((f) => f.file)).toContain('model.safetensors.index.json');
      const { createHash } = await import('node:crypto');
      for (const f of a.manifest.files) expect(f.sha256).toBe(createHash('sha256').update(readFileSync(join(d, f.file))).digest('hex'));
      expect(createHash('sha256').update(a.json).digest('hex')).toBe(a.sha256);
    } finally {
      if (prev === undefined) delete process.env.FEDLORA_HASH_CACHE;
      else process.env.FEDLORA_HASH_CACHE = prev;
    }
  });

  it('covers config, tokenizer and weights; changes when any of them changes', () => {
    const d = join(root, 'man');
    writeTinyModel({ arch: 'llama', out: d, seed: 5, layers: 1, hidden: 16, heads: 2, kvHeads: 2 });
    const m1 = computeModelManifest(d);
    expect(m1.manifest.files.map((f) => f.file)).toEqual(['config.json', 'model.safetensors', 'tokenizer.json', 'tokenizer_config.json']);
    expect(readCheckpoint(d).manifestSha256).toBe(m1.sha256);
    // a copy elsewhere has the same manifest (paths are relative)
    const copy = join(root, 'man-copy');
    cpSync(d, copy, { recursive: true });
    expect(computeModelManifest(copy).sha256).toBe(m1.sha256);
    // generation_config.json is not part of it; the tokenizer is
    appendFileSync(join(copy, 'generation_config.json'), ' ');
    expect(computeModelManifest(copy).sha256).toBe(m1.sha256);
    appendFileSync(join(copy, 'tokenizer_config.json'), ' ');
    expect(computeModelManifest(copy).sha256).not.toBe(m1.sha256);
    // a weight byte flipped (same size) changes it: the cache is keyed by size and mtime too
    const w = join(d, 'model.safetensors');
    const buf = readFileSync(w);
    buf[buf.length - 1] ^= 1;
    writeFileSync(w, buf);
    const m2 = computeModelManifest(d);
    expect(m2.sha256).not.toBe(m1.sha256);
    expect(m2.manifest.files.find((f) => f.file === 'model.safetensors')!.sha256).not.toBe(m1.manifest.files.find((f) => f.file === 'model.safetensors')!.sha256);
    expect(encodeSafetensors({}).length).toBeGreaterThan(0);
  });
});
