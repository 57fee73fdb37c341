// Real-shape checkpoints without writing gigabytes: the presets' shapes against the public model
// sizes, Hugging Face sharding, the streaming writer (chunked writes, byte counts checked), and a
// small config written through the same path and read back by readCheckpoint.

import { closeSync, mkdtempSync, openSync, readFileSync, readdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { planShards, writeAllAt, writeSafetensorsStream, type TensorSpec } from '../../shared/safetensors-writer.ts';
import { readSafetensorsHeader, toFloat32 } from '../../shared/safetensors.ts';
import { isFedloraError } from '../../shared/errors.ts';
import { readCheckpoint } from '../../site-agent/engine/checkpoint/read.ts';
import { planCheckpoint, planRandomCheckpoint, writeRandomWeights } from '../../site-agent/engine/checkpoint/random-checkpoint.ts';
import { MODEL_PRESETS } from '../../site-agent/engine/checkpoint/presets.ts';

const tmp = (p: string) => mkdtempSync(join(tmpdir(), `fedlora-${p}-`));

describe('init-random presets', () => {
  // Sizes on each model's Hugging Face page (parameters, rounded to 0.01 B) and the config fields.
  const cases = [
    { like: 'deepseek-r1-distill-qwen-1.5b', billions: 1.78, arch: 'qwen2', hidden: 1536, layers: 28, heads: 12, kv: 2, inter: 8960, vocab: 151936, theta: 10000, qkvBias: true, maxPos: 131072 },
    { like: 'deepseek-r1-distill-qwen-7b', billions: 7.62, arch: 'qwen2', hidden: 3584, layers: 28, heads: 28, kv: 4, inter: 18944, vocab: 152064, theta: 10000, qkvBias: true, maxPos: 131072 },
    { like: 'deepseek-llm-7b', billions: 6.91, arch: 'llama', hidden: 4096, layers: 30, heads: 32, kv: 32, inter: 11008, vocab: 102400, theta: 10000, qkvBias: false, maxPos: 4096 },
    { like: 'deepseek-coder-1.3b', billions: 1.35, arch: 'llama', hidden: 2048, layers: 24, heads: 16, kv: 16, inter: 5504, vocab: 32256, theta: 100000, qkvBias: false, maxPos: 16384 },
  ];
  for (const c of cases) {
    it(`${c.like}: ${c.billions} B parameters with the published shapes`, () => {
      const p = planRandomCheckpoint({ like: c.like });
      const cfg = p.config;
      expect([cfg.arch, cfg.hiddenSize, cfg.numLayers, cfg.numHeads, cfg.numKvHeads, cfg.intermediateSize, cfg.vocabSize, cfg.ropeTheta, cfg.qkvBias, cfg.maxPositionEmbeddings])
        .toEqual([c.arch, c.hidden, c.layers, c.heads, c.kv, c.inter, c.vocab, c.theta, c.qkvBias, c.maxPos]);
      expect(cfg.tieWordEmbeddings).toBe(false);
      expect(Math.round(p.parameters / 1e7) / 100).toBe(c.billions);
      expect(p.totalBytes).toBe(2 * p.parameters); // bf16 by default
      expect(p.tensors[0].name).toBe('model.embed_tokens.weight'); // save_pretrained's order
      expect(p.tensors.at(-1)!.name).toBe('lm_head.weight');
    });
  }

  it('coder-1.3b keeps its linear rope scaling; --layers keeps the widths', () => {
    expect(planRandomCheckpoint({ like: 'deepseek-coder-1.3b' }).config.ropeScaling).toEqual({ type: 'linear', factor: 4 });
    const p = planRandomCheckpoint({ like: 'deepseek-r1-distill-qwen-7b', layers: 2, dtype: 'F32' });
    expect(p.config.numLayers).toBe(2);
    expect(p.rawConfig.torch_dtype).toBe('float32');
    expect(p.tensors.find((t) => t.name === 'model.layers.1.mlp.down_proj.weight')!.shape).toEqual([3584, 18944]);
  });

  it('every preset names its source and is a valid config', () => {
    for (const [name, preset] of Object.entries(MODEL_PRESETS)) {
      expect(preset.source).toMatch(/^https:\/\/huggingface\.co\/deepseek-ai\//);
      expect(planRandomCheckpoint({ like: name }).parameters).toBeGreaterThan(1e9);
    }
  });

  it('an unknown model or layer count is a clear error', () => {
    const err = (f: () => unknown) => { try { f(); } catch (e) { return e; } return null; };
    const e1 = err(() => planRandomCheckpoint({ like: 'gpt-5' }));
    expect(isFedloraError(e1) && e1.code).toBe('FEDLORA_ERR_INVALID_ARGUMENT');
    expect((e1 as Error).message).toContain('deepseek-r1-distill-qwen-1.5b');
    expect((err(() => planRandomCheckpoint({ like: 'deepseek-llm-7b', layers: 31 })) as Error).message).toContain('[1, 30]');
  });
});

describe('streaming safetensors writer', () => {
  it('splits writes into chunks and puts every byte where the header says', () => {
    const dir = tmp('chunks');
    const fd = openSync(join(dir, 'x.bin'), 'w');
    const bytes = Uint8Array.from({ length: 1000 }, (_, i) => i % 251);
    expect(writeAllAt(fd, bytes, 5, 64)).toBe(1005);
    closeSync(fd);
    expect([...readFileSync(join(dir, 'x.bin')).subarray(5)]).toEqual([...bytes]);
  });

  it('streams tensors given in any chunk sizes and checks their byte counts', () => {
    const dir = tmp('stream');
    const specs: TensorSpec[] = [{ name: 'b', dtype: 'F32', shape: [3, 5] }, { name: 'a', dtype: 'BF16', shape: [7] }];
    const values = new Map([['b', Float32Array.from({ length: 15 }, (_, i) => i / 4)], ['a', Float32Array.from({ length: 7 }, (_, i) => -i)]]);
    writeSafetensorsStream(join(dir, 'm.safetensors'), specs, (t, write) => {
      const v = values.get(t.name)!;
      const bytes = t.dtype === 'F32' ? new Uint8Array(v.buffer) : new Uint8Array(new Uint16Array([...v].map((x) => new Uint32Array(Float32Array.of(x).buffer)[0] >>> 16)).buffer);
      for (let i = 0; i < bytes.length; i += 3) write(bytes.subarray(i, i + 3)); // odd chunk sizes
    });
    const h = readSafetensorsHeader(join(dir, 'm.safetensors'));
    const file = readFileSync(join(dir, 'm.safetensors'));
    for (const [name, v] of values) {
      const e = h.entries.get(name)!;
      expect([...toFloat32(file.subarray(e.offset, e.offset + e.length), e.dtype)]).toEqual([...v]);
    }
    expect([...h.entries.keys()]).toEqual(['a', 'b']); // sorted like the Rust crate
    const short = (() => { try { writeSafetensorsStream(join(dir, 'bad.safetensors'), specs, (_t, write) => write(new Uint8Array(2))); } catch (e) { return e; } return null; })();
    expect(isFedloraError(short) && short.code).toBe('FEDLORA_ERR_SHAPE');
    expect(readdirSync(dir)).toEqual(['m.safetensors']); // no temp file left behind
  });

  it('shards like save_pretrained: in order, a new shard when the next tensor would not fit', () => {
    const t = (name: string, n: number): TensorSpec => ({ name, dtype: 'U8', shape: [n] });
    const shards = planShards([t('e', 6), t('l0', 3), t('l1', 3), t('big', 20), t('n', 1)], 10);
    expect(shards.map((s) => s.map((x) => x.name))).toEqual([['e', 'l0'], ['l1'], ['big'], ['n']]);
  });

  it('a sharded random checkpoint reads back with readCheckpoint, realistic scales included', () => {
    const raw = { ...MODEL_PRESETS['deepseek-r1-distill-qwen-1.5b'].config, hidden_size: 64, intermediate_size: 96, num_attention_heads: 4, num_key_value_heads: 2, num_hidden_layers: 2, max_window_layers: 2, vocab_size: 512, bos_token_id: 300, eos_token_id: 301 };
    const plan = planCheckpoint(raw, 'BF16', 'test config');
    const dir = tmp('sharded');
    const out = writeRandomWeights(plan, { out: dir, seed: 3, maxShardBytes: 40_000 });
    const shards = out.files.filter((f) => f.endsWith('.safetensors'));
    expect(shards.length).toBeGreaterThan(2);
    expect(shards[0]).toBe(`model-00001-of-${String(shards.length).padStart(5, '0')}.safetensors`);
    const index = JSON.parse(readFileSync(join(dir, 'model.safetensors.index.json'), 'utf8'));
    expect(index.metadata.total_size).toBe(plan.totalBytes);
    const ckpt = readCheckpoint(dir);
    expect(ckpt.config.hiddenSize).toBe(64);
    const loc = ckpt.tensors.get('model.layers.0.mlp.down_proj.weight')!;
    const w = toFloat32(readFileSync(loc.file).subarray(loc.offset, loc.offset + loc.length), 'BF16');
    const std = Math.sqrt(w.reduce((s, x) => s + x * x, 0) / w.length);
    expect(std).toBeGreaterThan(0.012);
    expect(std).toBeLessThan(0.03);
    // outlier input channels: some column is several times the typical one
    const colRms = Array.from({ length: 96 }, (_, c) => Math.sqrt(Array.from({ length: 64 }, (_, r) => w[r * 96 + c] ** 2).reduce((a, b) => a + b) / 64));
    expect(Math.max(...colRms) / colRms.sort((a, b) => a - b)[48]).toBeGreaterThan(3);
    const norm = ckpt.tensors.get('model.norm.weight')!;
    const g = toFloat32(readFileSync(norm.file).subarray(norm.offset, norm.offset + norm.length), 'BF16');
    expect(new Set(g).size).toBeGreaterThan(10); // norm weights spread around 1, not all ones
  });
});
