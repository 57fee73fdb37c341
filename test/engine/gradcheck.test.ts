// Gradients of the whole LoRA training graph (real ORT sessions) against central finite differences
// of the loss the same graph computes. float32 graph: eps 2e-3 on parameters of scale 0.15 keeps the
// rounding error (~1e-6 / eps) and the truncation error (~eps^2 f''') both below the tolerance.

import { describe, expect, it } from 'vitest';
import { createTrainStepSession } from '../../site-agent/engine/session.ts';
import type { AdapterWeights, LoraConfig } from '../../shared/lora/types.ts';
import { loraConfig, randomAdapter, randomBatch, rng, writeFixture, type FixtureOptions } from './ref/fixture.ts';

const EPS = 2e-3;

async function gradcheck(fx: FixtureOptions, lora: LoraConfig, perTensor = 3) {
  const ckpt = writeFixture(fx);
  const s = await createTrainStepSession(ckpt, lora, { batch: 2, seq: 8, threads: 1 });
  try {
    const pb = randomBatch(2, 8, ckpt.config.vocabSize, 11);
    const params = randomAdapter(ckpt, lora, 7, 0.15);
    const opts = { lossDenominator: pb.countedTokens + 3, dropoutSeed: 5 };
    const base = await s.run(pb, params, opts);
    const expectedKeys = [...params.keys()].filter((k) => !(lora.freezeA && k.includes('lora_A')));
    expect([...base.grads.keys()].sort()).toEqual(expectedKeys.sort());
    const r = rng(99);
    let checked = 0;
    let maxErr = 0;
    for (const key of expectedKeys) {
      const t = params.get(key)!;
      const g = base.grads.get(key)!;
      expect(g.length).toBe(t.data.length);
      // Largest-gradient element plus random ones: a wrong rule cannot hide behind tiny entries.
      const idx = [g.reduce((bi, v, i) => (Math.abs(v) > Math.abs(g[bi]) ? i : bi), 0)];
      while (idx.length < perTensor) idx.push(Math.floor(r() * t.data.length));
      for (const i of idx) {
        const orig = t.data[i];
        const at = async (v: number) => {
          const p: AdapterWeights = new Map(params);
          const d = t.data.slice();
          d[i] = v;
          p.set(key, { shape: t.shape, data: d });
          return (await s.run(pb, p, opts)).loss;
        };
        const fd = ((await at(orig + EPS)) - (await at(orig - EPS))) / (2 * EPS);
        const err = Math.abs(fd - g[i]);
        maxErr = Math.max(maxErr, err / (Math.abs(g[i]) + 1e-3));
        expect(err, `${key}[${i}]: autodiff ${g[i]} vs finite difference ${fd}`).toBeLessThanOrEqual(2e-3 + 2e-2 * Math.abs(g[i]));
        checked++;
      }
    }
    // some gradients must be clearly non-zero, or the check proves nothing
    expect(Math.max(...[...base.grads.values()].map((g) => Math.max(...g.map(Math.abs))))).toBeGreaterThan(1e-2);
    return { checked, maxErr };
  } finally {
    await s.release();
  }
}

describe('LoRA training graph gradients vs central finite differences', () => {
  it('llama, GQA (4 heads / 2 kv), LoRA on q,v', async () => {
    const { checked } = await gradcheck({ arch: 'llama', heads: 4, kvHeads: 2 }, loraConfig());
    expect(checked).toBe(2 * 4 * 3);
  });

  it('qwen2 (q/k/v biases), GQA, all seven targets, rsLoRA, tied embeddings', async () => {
    await gradcheck(
      { arch: 'qwen2', heads: 4, kvHeads: 1, tie: true },
      loraConfig({ targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], useRslora: true, r: 2 }),
      2,
    );
  });

  it('freezeA: only B gets gradients, and they are right', async () => {
    await gradcheck({ arch: 'llama', heads: 4, kvHeads: 4 }, loraConfig({ freezeA: true, targets: ['k_proj', 'o_proj', 'down_proj'] }));
  });

  it('LoRA dropout with a fixed seed, llama3 rope scaling', async () => {
    await gradcheck(
      { arch: 'llama', ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 } },
      loraConfig({ dropout: 0.3, targets: ['q_proj', 'up_proj'] }),
    );
  });
});
