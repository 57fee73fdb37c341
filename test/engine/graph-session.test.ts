// The training-step session around the built graph: .onnx caching and external data (weights stay
// in the safetensors files), the lean forward (no weight transposes, no K/V Expand), loss
// normalisation for gradient accumulation, dropout determinism, execution-provider errors and
// input validation.

import { mkdirSync, mkdtempSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { buildDecoder } from '../../site-agent/engine/model.ts';
import { readCheckpoint, writeTinyModel } from '../../site-agent/engine/checkpoint/index.ts';
import { releaseInferenceSessions, scoreLogprobs } from '../../site-agent/engine/infer.ts';
import { baseWeightsFor, buildTrainGraph, createTrainStepSession, graphKey } from '../../site-agent/engine/session.ts';
import type { AdapterWeights } from '../../shared/lora/types.ts';
import { loraConfig, randomAdapter, randomBatch, writeFixture } from './ref/fixture.ts';
import { ORT_CUDA_INSTALL_COMMAND } from '../../shared/onnxruntime-install.ts';

const ckpt = writeFixture({ arch: 'llama', heads: 4, kvHeads: 2, dtype: 'BF16' });
const pb = randomBatch(2, 8, ckpt.config.vocabSize, 4);

describe('training-step session', () => {
  it('writes one small .onnx per graph, reuses it, and points at the weights through hard links', async () => {
    const cacheDir = mkdtempSync(join(tmpdir(), 'fedlora-cache-'));
    const lora = loraConfig();
    const ckpt = writeFixture({ arch: 'llama', hidden: 64, vocab: 512 }); // ~1 MB of weights
    const s1 = await createTrainStepSession(ckpt, lora, { batch: 2, seq: 8, cacheDir });
    const [key] = readdirSync(cacheDir);
    const model = join(cacheDir, key, 'model.onnx');
    const mtime = statSync(model).mtimeMs;
    const weights = statSync(join(ckpt.dir, 'model.safetensors'));
    expect(statSync(join(cacheDir, key, 'w0.safetensors')).ino).toBe(weights.ino); // a link, not a copy
    expect(statSync(model).size).toBeLessThan(weights.size / 4); // weights are external data
    const s2 = await createTrainStepSession(ckpt, lora, { batch: 2, seq: 8, cacheDir });
    expect(readdirSync(cacheDir)).toEqual([key]);
    expect(statSync(model).mtimeMs).toBe(mtime);
    const params = randomAdapter(ckpt, lora);
    const batch = randomBatch(2, 8, 512, 4);
    const a = await s1.run(batch, params, { lossDenominator: 10, dropoutSeed: 0 });
    const b = await s2.run(batch, params, { lossDenominator: 10, dropoutSeed: 0 });
    expect(b.loss).toBe(a.loss);
    // a different batch shape is a different graph
    const s3 = await createTrainStepSession(ckpt, lora, { batch: 1, seq: 8, cacheDir });
    expect(readdirSync(cacheDir).length).toBe(2);
    await Promise.all([s1.release(), s2.release(), s3.release()]);
  });

  it('falls back to an .onnx next to the weights when the cache folder cannot link them', async () => {
    const cacheDir = mkdtempSync(join(tmpdir(), 'fedlora-cache-'));
    const ck = writeFixture({ arch: 'qwen2' });
    const lora = loraConfig();
    // Occupy the link name with another file: the cache cannot point at the weights.
    const spec = { batch: 1, seq: 8, pastLen: 0, maxPositions: 8, lora, loraDropout: false, head: 'loss', presentKv: false };
    const key = graphKey(ck, { kind: 'train', spec, weights: baseWeightsFor(ck, { cacheDir }).key });
    mkdirSync(join(cacheDir, key), { recursive: true });
    writeFileSync(join(cacheDir, key, 'w0.safetensors'), 'not the weights');
    const s = await createTrainStepSession(ck, lora, { batch: 1, seq: 8, cacheDir });
    expect(readdirSync(ck.dir).filter((f) => f.startsWith('.fedlora-graph-'))).toEqual([`.fedlora-graph-${key}.onnx`]);
    const r = await s.run(randomBatch(1, 8, 64), randomAdapter(ck, lora), { lossDenominator: 5, dropoutSeed: 0 });
    expect(Number.isFinite(r.loss) && r.loss > 0).toBe(true);
    await s.release();
  });

  it('works on checkpoints read by readCheckpoint, sharded or not, with identical results', async () => {
    const root = mkdtempSync(join(tmpdir(), 'fedlora-tiny-'));
    const opts = { arch: 'llama' as const, seed: 3, layers: 2, hidden: 32, heads: 4, kvHeads: 2, dtype: 'BF16' as const };
    writeTinyModel({ ...opts, out: join(root, 'one') });
    writeTinyModel({ ...opts, out: join(root, 'two'), sharded: true });
    const one = readCheckpoint(join(root, 'one'));
    const two = readCheckpoint(join(root, 'two'));
    expect(new Set([...two.tensors.values()].map((t) => t.file)).size).toBe(2);
    const seqs = [[1, 5, 9, 33, 70], [4, 4, 2]];
    const a = await scoreLogprobs(one, null, null, seqs);
    const b = await scoreLogprobs(two, null, null, seqs);
    expect(a.map((x) => Array.from(x.slice(1)))).toEqual(b.map((x) => Array.from(x.slice(1))));
    expect(a[0][1]).toBeLessThan(0);
    await releaseInferenceSessions();
  });

  it('loss and gradients scale with 1/lossDenominator (gradient accumulation gives the mean)', async () => {
    const lora = loraConfig();
    const s = await createTrainStepSession(ckpt, lora, { batch: 2, seq: 8 });
    const params = randomAdapter(ckpt, lora);
    const a = await s.run(pb, params, { lossDenominator: pb.countedTokens, dropoutSeed: 0 });
    const b = await s.run(pb, params, { lossDenominator: 2 * pb.countedTokens, dropoutSeed: 0 });
    expect(b.loss).toBeCloseTo(a.loss / 2, 5);
    for (const [k, g] of a.grads) expect(b.grads.get(k)![3]).toBeCloseTo(g[3] / 2, 6);
    // mean cross-entropy of a near-random model is near log(vocab)
    expect(a.loss).toBeGreaterThan(0.3 * Math.log(ckpt.config.vocabSize));
    await s.release();
  });

  it('dropout masks are a pure function of dropoutSeed', async () => {
    const lora = loraConfig({ dropout: 0.5 });
    const s = await createTrainStepSession(ckpt, lora, { batch: 2, seq: 8 });
    const params = randomAdapter(ckpt, lora);
    const o = (seed: number) => s.run(pb, params, { lossDenominator: 10, dropoutSeed: seed });
    const [a, b, c] = [await o(1), await o(1), await o(2)];
    expect(b.loss).toBe(a.loss);
    expect(c.loss).not.toBe(a.loss);
    await s.release();
  });

  it('freezeA: A is an input without a gradient output', async () => {
    const lora = loraConfig({ freezeA: true });
    const s = await createTrainStepSession(ckpt, lora, { batch: 2, seq: 8 });
    const r = await s.run(pb, randomAdapter(ckpt, lora), { lossDenominator: 10, dropoutSeed: 0 });
    expect([...r.grads.keys()].every((k) => k.includes('.lora_B.'))).toBe(true);
    expect(r.grads.size).toBe(2 * 2);
    await s.release();
  });

  it('the forward is lean: weights feed Gemm directly, GQA uses reshapes, no Expand', () => {
    const lora = loraConfig();
    const { b } = buildDecoder(ckpt, { batch: 2, seq: 8, pastLen: 0, maxPositions: 8, lora, loraDropout: false, head: 'loss', presentKv: false });
    const weights = new Set(b.g.initializers.filter((i) => i.data.kind === 'external').map((i) => i.name));
    expect(weights.size).toBe(ckpt.tensors.size);
    expect(b.g.nodes.filter((n) => n.op === 'Transpose' && n.inputs.some((i) => weights.has(i)))).toEqual([]);
    expect(b.g.nodes.filter((n) => n.op === 'Expand')).toEqual([]);
    // BF16 weights are Cast to float32 inside the graph
    expect(b.g.nodes.filter((n) => n.op === 'Cast').length).toBe(weights.size);
    const train = buildTrainGraph(ckpt, { batch: 2, seq: 8, pastLen: 0, maxPositions: 8, lora, loraDropout: false, head: 'loss', presentKv: false });
    expect(train.graph.outputs.map((o) => o.name)).toEqual(['loss', ...train.trainable.map((k) => `grad.${k}`)]);
  });

  it('rejects bad inputs with clear errors', async () => {
    const lora = loraConfig();
    const s = await createTrainStepSession(ckpt, lora, { batch: 2, seq: 8 });
    const params = randomAdapter(ckpt, lora);
    const missing: AdapterWeights = new Map(params);
    const k = [...params.keys()][1];
    missing.delete(k);
    await expect(s.run(pb, missing, { lossDenominator: 1, dropoutSeed: 0 })).rejects.toMatchObject({ code: 'FEDLORA_ERR_ADAPTER', message: expect.stringContaining(k) });
    const wrong: AdapterWeights = new Map(params);
    wrong.set(k, { shape: [3, 3], data: new Float32Array(9) });
    await expect(s.run(pb, wrong, { lossDenominator: 1, dropoutSeed: 0 })).rejects.toMatchObject({ code: 'FEDLORA_ERR_SHAPE' });
    await expect(s.run(randomBatch(1, 8, 64), params, { lossDenominator: 1, dropoutSeed: 0 })).rejects.toMatchObject({ code: 'FEDLORA_ERR_SHAPE' });
    await expect(s.run(pb, params, { lossDenominator: 0, dropoutSeed: 0 })).rejects.toMatchObject({ code: 'FEDLORA_ERR_INVALID_ARGUMENT' });
    await s.release();
  });

  it('cuda either works or fails with FEDLORA_ERR_EXECUTION_PROVIDER and the install hint', async () => {
    const lora = loraConfig();
    try {
      const s = await createTrainStepSession(ckpt, lora, { batch: 2, seq: 8, device: 'cuda' });
      const r = await s.run(pb, randomAdapter(ckpt, lora), { lossDenominator: 10, dropoutSeed: 0 });
      expect(Number.isFinite(r.loss)).toBe(true);
      await s.release();
    } catch (e) {
      expect(e).toMatchObject({ code: 'FEDLORA_ERR_EXECUTION_PROVIDER', message: expect.stringContaining(ORT_CUDA_INSTALL_COMMAND) });
    }
  });
});
