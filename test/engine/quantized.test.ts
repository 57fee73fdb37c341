// Quantized base weights (int8/int4, MatMulNBits): the blockwise layout against a numpy reference
// and against ONNX Runtime's own dequantization, scoring and LoRA gradients against the float32
// path on a tiny model with trained-like weight scales, the on-disk cache (reuse, invalidation),
// the float32 path's memory promise (no bf16 weights in its graph), and layer recomputation
// (identical gradients).

import { existsSync, linkSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { afterAll, describe, expect, it } from 'vitest';
import { initLoraAdapter } from '../../shared/lora/init.ts';
import type { LoraConfig, LoraTarget } from '../../shared/lora/types.ts';
import { readCheckpoint, writeTinyModel } from '../../site-agent/engine/checkpoint/index.ts';
import { packExamples } from '../../site-agent/engine/data/pack.ts';
import { Builder } from '../../site-agent/engine/graph/ir.ts';
import { encodeModel } from '../../site-agent/engine/graph/onnx-export.ts';
import { releaseInferenceSessions, scoreLogprobs } from '../../site-agent/engine/infer.ts';
import { blocksPerRow, dequantizeRows, quantizeMatrix, rowBytes, type QuantBits } from '../../site-agent/engine/quant/blockwise.ts';
import { ensureWeightCache, prepareBaseWeights } from '../../site-agent/engine/quant/weight-cache.ts';
import { createTrainStepSession } from '../../site-agent/engine/session.ts';
import type { Checkpoint, QuantMode } from '../../site-agent/engine/types.ts';
import { PYTHON, requireTool, TORCH } from '../runner/reference-tools.ts';
import { runProcessOk } from '../runner/run-process.ts';
import { randn, rng } from './ref/fixture.ts';

const root = mkdtempSync(join(tmpdir(), 'fedlora-quant-'));
const cacheDir = join(root, 'graphs');
afterAll(() => releaseInferenceSessions());

/** A tiny qwen2 (q/k/v biases) with trained-like weight scales (outlier input channels, spread norms). */
function model(name: string, o: { layers?: number; dtype?: 'BF16' | 'F32' } = {}): Checkpoint {
  const dir = join(root, name);
  writeTinyModel({ arch: 'qwen2', out: dir, seed: 5, layers: o.layers ?? 3, hidden: 256, heads: 4, kvHeads: 2, intermediate: 512, dtype: o.dtype ?? 'BF16', init: 'realistic' });
  return readCheckpoint(dir);
}

describe('blockwise quantization layout', () => {
  for (const [bits, block, cols] of [[4, 32, 96], [8, 128, 200], [4, 16, 40]] as [QuantBits, number, number][]) {
    it(`${bits} bits, block ${block}, ${cols} columns: numpy reference and ONNX Runtime dequantize it alike`, async () => {
      await requireTool(TORCH);
      const rows = 12;
      const r = rng(bits * 1000 + cols);
      const w = randn(r, rows * cols, 0.02).map((v, i) => (i % cols === 7 ? v * 6 : v)); // an outlier column
      const q = quantizeMatrix((r0, r1) => w.slice(r0 * cols, r1 * cols), rows, cols, bits, block, null);
      const ref = JSON.parse(await runProcessOk(PYTHON, [join(import.meta.dirname, 'ref', 'blockwise_ref.py')], { input: JSON.stringify({ w: [...w], rows, cols, bits, block }) }));
      expect([...q.data]).toEqual(ref.data);
      expect([...q.scales]).toEqual(ref.scales.map(Math.fround));
      const ours = dequantizeRows(q.data, q.scales, { rows, cols, bits, block });
      expect([...ours]).toEqual(ref.dequant.map(Math.fround));
      // the quantization error is what the block scale allows: at most half a step
      for (let i = 0; i < w.length; i++) expect(Math.abs(ours[i] - w[i])).toBeLessThanOrEqual(0.5 * Math.abs(q.scales[Math.floor(i / cols) * blocksPerRow({ rows, cols, bits, block }) + Math.floor((i % cols) / block)]) * (bits === 4 ? 2 : 1) + 1e-9);
      // ONNX Runtime's GatherBlockQuantized reads the same bytes as the same values
      const b = new Builder('gbq');
      const data = b.initializer('d', 'uint8', [rows, rowBytes({ rows, cols, bits, block })], { kind: 'raw', bytes: q.data });
      const scales = b.initializer('s', 'float32', [rows, blocksPerRow({ rows, cols, bits, block })], { kind: 'raw', bytes: new Uint8Array(q.scales.buffer) });
      b.input('idx', 'int64', [rows]);
      b.output(b.op1('GatherBlockQuantized', [data, 'idx', scales], { bits, block_size: block, gather_axis: 0, quantize_axis: 1 }, 'w'));
      const s = await ort.InferenceSession.create(encodeModel(b.g));
      const out = (await s.run({ idx: new ort.Tensor('int64', BigInt64Array.from({ length: rows }, (_, i) => BigInt(i)), [rows]) })).w;
      const padded = out.dims[1] as number;
      for (let i = 0; i < rows; i++) expect([...(out.data as Float32Array).subarray(i * padded, i * padded + cols)]).toEqual([...ours.subarray(i * cols, (i + 1) * cols)]);
      await s.release();
    });
  }
});

describe('quantized scoring and gradients against the float32 path', () => {
  const ckpt = model('m');
  const ids = [Array.from({ length: 48 }, (_, i) => (i * 37 + 11) % 270 + 3), Array.from({ length: 30 }, (_, i) => (i * 53 + 5) % 270 + 3)];
  const meanAbsDiff = (a: Float32Array[], b: Float32Array[]) => {
    let s = 0, n = 0;
    a.forEach((row, r) => { for (let t = 1; t < row.length; t++) { s += Math.abs(row[t] - b[r][t]); n++; } });
    return s / n;
  };

  it('int8 is near-lossless, int4 bounded, and both really differ from float32', async () => {
    const f32 = await scoreLogprobs(ckpt, null, null, ids, { cacheDir });
    const diff: Record<string, number> = {};
    for (const q of ['int8', 'int4'] as QuantMode[]) diff[q] = meanAbsDiff(await scoreLogprobs(ckpt, null, null, ids, { cacheDir, quantize: q }), f32);
    expect(diff.int8).toBeGreaterThan(0);
    expect(diff.int8).toBeLessThan(0.02);
    expect(diff.int4).toBeGreaterThan(diff.int8);
    expect(diff.int4).toBeLessThan(0.3);
  });

  it('LoRA gradients: int8 cosine >= 0.99 with the float32 path, int4 >= 0.85', async () => {
    const lora: LoraConfig = { r: 8, alpha: 16, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj'] as LoraTarget[], dropout: 0, useRslora: false, freezeA: false, initSeed: 0 };
    const [pb] = packExamples([{ inputIds: ids[0], labels: ids[0] }], { batch: 1, seq: 48, seed: 0, shuffle: false });
    const ad = initLoraAdapter(ckpt.config, lora);
    const r = rng(9);
    for (const [k, t] of ad) if (k.includes('lora_B')) t.data.set(randn(r, t.data.length, 0.01));
    const step = async (quantize: QuantMode) => {
      const s = await createTrainStepSession(ckpt, lora, { batch: 1, seq: 48, cacheDir, quantize });
      try { return await s.run(pb, ad, { lossDenominator: pb.countedTokens, dropoutSeed: 0 }); } finally { await s.release(); }
    };
    const flatB = (g: Map<string, Float32Array>) => [...g].filter(([k]) => k.includes('lora_B')).flatMap(([, v]) => [...v]);
    const cos = (a: number[], b: number[]) => a.reduce((s, x, i) => s + x * b[i], 0) / Math.sqrt(a.reduce((s, x) => s + x * x, 0) * b.reduce((s, x) => s + x * x, 0));
    const ref = await step('none');
    const int8 = await step('int8');
    const int4 = await step('int4');
    expect(Math.abs(int8.loss - ref.loss)).toBeLessThan(0.02);
    expect(cos(flatB(int8.grads), flatB(ref.grads))).toBeGreaterThanOrEqual(0.99);
    expect(cos(flatB(int4.grads), flatB(ref.grads))).toBeGreaterThanOrEqual(0.85);
    expect(cos(flatB(int4.grads), flatB(ref.grads))).toBeLessThan(cos(flatB(int8.grads), flatB(ref.grads)));
    // the adapter stays float32 and its keys are PEFT's, whatever the base weights
    expect([...int4.grads.keys()].sort()).toEqual([...ref.grads.keys()].sort());
  });
});

describe('the prepared-weights cache', () => {
  it('is built once, reused, and rebuilt when the checkpoint changes (the old entry removed)', () => {
    const ckpt = model('cache', { layers: 1 });
    const weights = join(root, 'wcache');
    const first = ensureWeightCache(ckpt, 'int4', weights);
    expect(first.built).toBe(true);
    const file = join(first.dir, 'weights.safetensors');
    const mtime = statSync(file).mtimeMs;
    const again = ensureWeightCache(readCheckpoint(ckpt.dir), 'int4', weights);
    expect(again).toMatchObject({ dir: first.dir, built: false });
    expect(statSync(file).mtimeMs).toBe(mtime);
    // a changed config.json is another checkpoint: another manifest, another entry
    const cfgPath = join(ckpt.dir, 'config.json');
    writeFileSync(cfgPath, JSON.stringify({ ...JSON.parse(readFileSync(cfgPath, 'utf8')), rms_norm_eps: 1e-5 }, null, 2));
    const graph = join(root, 'wgraphs', 'g1');
    mkdirSync(graph, { recursive: true });
    linkSync(file, join(graph, 'w0.safetensors')); // a graph built on the old entry
    const changed = ensureWeightCache(readCheckpoint(ckpt.dir), 'int4', weights, undefined, join(root, 'wgraphs'));
    expect(changed.built).toBe(true);
    expect(existsSync(graph)).toBe(false); // its link would have kept the old weights on disk
    expect(changed.dir).not.toBe(first.dir);
    expect(readdirSync(weights).filter((d) => d.endsWith('int4-b32-t128-w1'))).toEqual([changed.dir.split('/').at(-1)]);
    // another mode of the same checkpoint is its own entry, kept beside it
    ensureWeightCache(readCheckpoint(ckpt.dir), 'int8', weights);
    expect(readdirSync(weights).length).toBe(2);
  });

  it('quantizes every Linear weight, lm_head and the embedding; W^T only where the backward pass uses it', () => {
    const ckpt = model('names', { layers: 1 });
    const w = prepareBaseWeights(ckpt, 'int8', join(root, 'wnames'));
    expect([...w.quant.keys()].sort()).toEqual([
      'lm_head.weight', 'model.embed_tokens.weight',
      ...['mlp.down_proj', 'mlp.gate_proj', 'mlp.up_proj', 'self_attn.k_proj', 'self_attn.o_proj', 'self_attn.q_proj', 'self_attn.v_proj'].map((p) => `model.layers.0.${p}.weight`),
    ]);
    expect(w.quant.get('model.embed_tokens.weight')!.t).toBeNull(); // untied: no gradient flows into the embedding's input
    expect(w.quant.get('lm_head.weight')!.t).not.toBeNull();
    // int8 decoder layers pass the input gradient through their own dequantized blocks, int4's through W^T
    expect(w.quant.get('model.layers.0.mlp.up_proj.weight')!.t).toBeNull();
    const w4 = prepareBaseWeights(ckpt, 'int4', join(root, 'wnames'));
    expect(w4.quant.get('model.layers.0.mlp.up_proj.weight')!.t).not.toBeNull();
    expect([...w.float.keys()].every((k) => k.endsWith('norm.weight') || k.endsWith('.bias'))).toBe(true);
  });

  it('the float32 path of a bf16 checkpoint reads a float32 copy only (never the bf16 weights beside it)', async () => {
    const ckpt = model('f32path', { layers: 1 });
    const dir = join(root, 'graphs-f32');
    const s = await createTrainStepSession(ckpt, { r: 4, alpha: 8, targets: ['q_proj'], dropout: 0, useRslora: false, freezeA: false, initSeed: 0 }, { batch: 1, seq: 8, cacheDir: dir });
    await s.release();
    const graph = readdirSync(dir).find((d) => d !== 'weights')!;
    const links = readdirSync(join(dir, graph)).filter((f) => f.endsWith('.safetensors'));
    const cached = join(dir, 'weights', readdirSync(join(dir, 'weights'))[0], 'weights.safetensors');
    expect(links.map((f) => statSync(join(dir, graph, f)).ino)).toEqual([statSync(cached).ino]);
  });
});

describe('layer recomputation', () => {
  for (const quantize of ['none', 'int8'] as QuantMode[]) {
    it(`gives the same loss and gradients (${quantize}, LoRA dropout, attention and MLP targets)`, async () => {
      const ckpt = model(`rc-${quantize}`, { layers: 2, dtype: 'F32' });
      const lora: LoraConfig = { r: 4, alpha: 8, targets: ['q_proj', 'v_proj', 'down_proj'] as LoraTarget[], dropout: 0.1, useRslora: false, freezeA: false, initSeed: 1 };
      const ids = Array.from({ length: 24 }, (_, i) => (i * 29 + 3) % 270 + 3);
      const [pb] = packExamples([{ inputIds: ids.slice(0, 14), labels: ids.slice(0, 14) }, { inputIds: ids.slice(14), labels: ids.slice(14) }], { batch: 1, seq: 24, seed: 0, shuffle: false });
      const ad = initLoraAdapter(ckpt.config, lora);
      const r = rng(4);
      for (const [k, t] of ad) if (k.includes('lora_B')) t.data.set(randn(r, t.data.length, 0.02));
      const run = async (recompute: boolean) => {
        const s = await createTrainStepSession(ckpt, lora, { batch: 1, seq: 24, cacheDir, quantize, recompute });
        try { return await s.run(pb, ad, { lossDenominator: pb.countedTokens, dropoutSeed: 7 }); } finally { await s.release(); }
      };
      const [plain, rec] = [await run(false), await run(true)];
      expect(rec.loss).toBe(plain.loss);
      for (const [k, g] of plain.grads) expect([...rec.grads.get(k)!], k).toEqual([...g]);
      expect(Math.max(...[...plain.grads.values()].map((g) => Math.max(...g.map(Math.abs))))).toBeGreaterThan(1e-3);
    });
  }
});
