// The training loop on real ONNX Runtime sessions of a tiny llama: determinism, checkpoint/resume
// equivalence, gradient accumulation = one big batch, freezeA, FedProx, LoRA init.
import { afterAll, describe, expect, it } from 'vitest';
import { initLoraAdapter } from '../../shared/lora/init.ts';
import { trainableKeys } from '../../site-agent/engine/train/adapter-state.ts';
import { trainLora, type TrainOptions } from '../../site-agent/engine/train/trainer.ts';
import { hasRunCheckpoint } from '../../site-agent/engine/train/run-checkpoint.ts';
import { adapterBytes, digitRuns, LORA, tempDir, tinyModel } from './train-fixtures.ts';

const tmp = tempDir('train');
afterAll(() => tmp.cleanup());
const ckpt = tinyModel(`${tmp.dir}/model`);
const examples = digitRuns(24, 16, 1);
const base: TrainOptions = { model: ckpt, examples, lora: { ...LORA, dropout: 0.1 }, lr: 5e-3, steps: 6, microBatch: 2, seq: 32, seed: 3, maxGradNorm: 1, warmupSteps: 2 };

describe('LoRA init (PEFT)', () => {
  it('A ~ U(-1/sqrt(in), 1/sqrt(in)) from initSeed only, B = 0', () => {
    const a1 = initLoraAdapter(ckpt.config, { ...LORA, initSeed: 5 });
    const a2 = initLoraAdapter(ckpt.config, { ...LORA, initSeed: 5, dropout: 0.3, freezeA: true });
    const a3 = initLoraAdapter(ckpt.config, { ...LORA, initSeed: 6 });
    expect(adapterBytes(a1).equals(adapterBytes(a2))).toBe(true);
    expect(adapterBytes(a1).equals(adapterBytes(a3))).toBe(false);
    const keyA = 'base_model.model.model.layers.1.self_attn.v_proj.lora_A.weight';
    const A = a1.get(keyA)!;
    expect(A.shape).toEqual([4, 64]);
    const bound = 1 / Math.sqrt(64);
    let mean = 0, sq = 0;
    for (const x of A.data) {
      expect(Math.abs(x)).toBeLessThanOrEqual(bound);
      mean += x / A.data.length;
      sq += (x * x) / A.data.length;
    }
    expect(Math.abs(mean)).toBeLessThan(bound * 0.2);
    expect(sq).toBeGreaterThan((bound * bound) / 3 * 0.6); // var of U(-b, b) is b²/3
    for (const [k, t] of a1) if (k.includes('lora_B')) expect(t.data.every((x) => x === 0)).toBe(true);
    // A of one target does not depend on which other targets are adapted
    const wide = initLoraAdapter(ckpt.config, { ...LORA, initSeed: 5, targets: ['q_proj', 'k_proj', 'v_proj', 'down_proj'] });
    expect([...wide.get(keyA)!.data]).toEqual([...A.data]);
  });
});

describe('trainLora', () => {
  it('same seed -> identical adapter bytes and losses; another seed -> different', async () => {
    const r1 = await trainLora(base);
    const r2 = await trainLora(base);
    const r3 = await trainLora({ ...base, seed: 4 });
    expect(r1.metrics.steps).toBe(6);
    expect(r1.interrupted).toBe(false);
    expect(adapterBytes(r1.adapter).equals(adapterBytes(r2.adapter))).toBe(true);
    expect(r1.metrics.lossPerStep).toEqual(r2.metrics.lossPerStep);
    expect(adapterBytes(r1.adapter).equals(adapterBytes(r3.adapter))).toBe(false);
    expect(r1.metrics.tokens).toBe(6 * 2 * 16 * 2); // 6 steps x 2 rows x (2 examples of 16 per row of 32)
    expect(r1.metrics.tokensPerSecond).toBeGreaterThan(0);
    expect(r1.metrics.lossPerStep.every((l) => Number.isFinite(l) && l > 0)).toBe(true);
  });

  it('interrupt + resume from the checkpoint == uninterrupted run (bit-identical)', async () => {
    const opts: TrainOptions = { ...base, steps: 7, batchTokens: 128, proxMu: 0.01, optimizer: 'adamw', weightDecay: 0.01 }; // 2 micro-batches per step
    const full = await trainLora(opts);
    expect(full.metrics.accumulation).toBe(2);
    const dir = `${tmp.dir}/ckpt-resume`;
    const ac = new AbortController();
    const part = await trainLora({ ...opts, checkpointDir: dir, signal: ac.signal, onProgress: (e) => e.step === 3 && ac.abort() });
    expect(part.interrupted).toBe(true);
    expect(part.metrics.steps).toBe(3);
    expect(hasRunCheckpoint(dir)).toBe(true);
    const resumed = await trainLora({ ...opts, checkpointDir: dir, resume: true });
    expect(resumed.metrics.resumedFromStep).toBe(3);
    expect(resumed.metrics.steps).toBe(7);
    expect(resumed.metrics.lossPerStep).toEqual(full.metrics.lossPerStep);
    expect(adapterBytes(resumed.adapter).equals(adapterBytes(full.adapter))).toBe(true);
    // a checkpoint of another run is refused, naming the folder
    await expect(trainLora({ ...opts, lr: 1e-3, checkpointDir: dir, resume: true })).rejects.toThrow(/ckpt-resume: the checkpoint belongs to a different run/);
  });

  it('accumulating 2 micro-batches of 1 row == 1 micro-batch of 2 rows', async () => {
    const o: TrainOptions = { ...base, lora: LORA, seq: 16, steps: 3, optimizer: 'sgd', lr: 0.5, maxGradNorm: 0, warmupSteps: 0, schedule: 'constant' };
    const big = await trainLora({ ...o, microBatch: 2 });
    const acc = await trainLora({ ...o, microBatch: 1, batchTokens: 32 });
    expect(acc.metrics.accumulation).toBe(2);
    for (let i = 0; i < 3; i++) expect(acc.metrics.lossPerStep[i]).toBeCloseTo(big.metrics.lossPerStep[i], 5);
    const a = adapterBytes(acc.adapter), b = adapterBytes(big.adapter);
    const fa = new Float32Array(a.buffer, a.byteOffset, a.length / 4), fb = new Float32Array(b.buffer, b.byteOffset, b.length / 4);
    let maxDiff = 0, maxAbs = 0;
    for (let i = 0; i < fa.length; i++) { maxDiff = Math.max(maxDiff, Math.abs(fa[i] - fb[i])); maxAbs = Math.max(maxAbs, Math.abs(fb[i])); }
    expect(maxDiff).toBeLessThan(1e-5 * Math.max(1, maxAbs));
    // and B actually moved
    expect(big.metrics.gradNormPerStep[0]).toBeGreaterThan(0);
  });

  it('freezeA trains only B; A stays the seeded init shared by every site', async () => {
    const lora = { ...LORA, freezeA: true, initSeed: 11 };
    const r1 = await trainLora({ ...base, lora, seed: 1, steps: 3 });
    const r2 = await trainLora({ ...base, lora, seed: 2, steps: 3 });
    const init = initLoraAdapter(ckpt.config, lora);
    expect(trainableKeys(init, lora).every((k) => k.includes('lora_B'))).toBe(true);
    for (const [k, t] of init) {
      if (k.includes('lora_A')) {
        expect(adapterBytes(new Map([[k, r1.adapter.get(k)!]])).equals(adapterBytes(new Map([[k, t]])))).toBe(true);
        expect(adapterBytes(new Map([[k, r2.adapter.get(k)!]])).equals(adapterBytes(new Map([[k, t]])))).toBe(true);
      } else {
        expect(r1.adapter.get(k)!.data.some((x) => x !== 0)).toBe(true);
      }
    }
  });

  it('FedProx pulls the adapter towards the initial (global) adapter', async () => {
    const start = await trainLora({ ...base, steps: 2 });
    const o: TrainOptions = { ...base, lora: LORA, initialAdapter: start.adapter, optimizer: 'sgd', lr: 0.5, steps: 4, maxGradNorm: 0, schedule: 'constant', warmupSteps: 0 };
    const free = await trainLora(o);
    const prox = await trainLora({ ...o, proxMu: 1 });
    const dist = (a: typeof start.adapter) => {
      let s = 0;
      for (const [k, t] of a) { const g = start.adapter.get(k)!.data; for (let i = 0; i < t.data.length; i++) s += (t.data[i] - g[i]) ** 2; }
      return Math.sqrt(s);
    };
    expect(dist(free.adapter)).toBeGreaterThan(0);
    expect(dist(prox.adapter)).toBeLessThan(dist(free.adapter));
  });

  it('rejects an initial adapter of the wrong shape and bad settings with clear errors', async () => {
    const wrong = initLoraAdapter(ckpt.config, { ...LORA, r: 2 });
    await expect(trainLora({ ...base, initialAdapter: wrong })).rejects.toThrow(/initial adapter: tensor ".*lora_A.weight" has shape \[2,64\], expected \[4,64\]/);
    await expect(trainLora({ ...base, lr: -1 })).rejects.toThrow(/lr = -1/);
    await expect(trainLora({ ...base, examples: [] })).rejects.toThrow(/FEDLORA_ERR_DATASET|no training examples/);
    await expect(trainLora({ ...base, examples: [{ inputIds: [1, 99999], labels: [1, 99999] }] })).rejects.toThrow(/token id 99999/);
  });
});
