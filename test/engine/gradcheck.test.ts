// Gradients of the whole LoRA training graph (real ORT sessions) against central finite differences
// of the loss the same graph computes. float32 graph: eps 2e-3 on parameters of scale 0.15 keeps the
// rounding error (~1e-6 / eps) and the truncation error (~eps^2 f''') both below the tolerance.

import { describe, expect, it } from 'vitest';
import { createTrainStepSession, type TeacherBatch } from '../../site-agent/engine/session.ts';
import type { DistillHeadSpec } from '../../site-agent/engine/model.ts';
import type { AdapterWeights, LoraConfig } from '../../shared/lora/types.ts';
import { loraConfig, randomAdapter, randomBatch, randn, rng, writeFixture, type FixtureOptions } from './ref/fixture.ts';

const EPS = 2e-3;

/** A random teacher's stored distribution at T for every position: top-k ids, their log-probs, the rest's. */
function randomTeacherRows(N: number, V: number, k: number, T: number, seed: number): TeacherBatch {
  const r = rng(seed);
  const ids = new BigInt64Array(N * k), logp = new Float32Array(N * k), rest = new Float32Array(N);
  for (let i = 0; i < N; i++) {
    const z = Array.from(randn(r, V, 3), (v) => v / T);
    const m = Math.max(...z), lse = m + Math.log(z.reduce((s, v) => s + Math.exp(v - m), 0));
    const order = z.map((_, j) => j).sort((a, c) => z[c] - z[a]);
    order.slice(0, k).forEach((j, c) => { ids[i * k + c] = BigInt(j); logp[i * k + c] = z[j] - lse; });
    rest[i] = Math.log(order.slice(k).reduce((s, j) => s + Math.exp(z[j] - lse), 0));
  }
  return { ids, logp, rest };
}

async function gradcheck(fx: FixtureOptions, lora: LoraConfig, perTensor = 3, distill?: DistillHeadSpec) {
  const ckpt = writeFixture(fx);
  const teacher = distill ? randomTeacherRows(16, ckpt.config.vocabSize, distill.topK, distill.temperature, 23) : null;
  const s = await createTrainStepSession(ckpt, lora, { batch: 2, seq: 8, threads: 1, ...(distill ? { distill: { head: distill, teacherRows: () => teacher! } } : {}) });
  try {
    const pb = randomBatch(2, 8, ckpt.config.vocabSize, 11);
    const params = randomAdapter(ckpt, lora, 7, 0.15);
    const opts = { lossDenominator: pb.countedTokens + 3, dropoutSeed: 5 };
    const base = await s.run(pb, params, opts);
    if (distill) {
      // the loss is the documented mix of its two reported parts, and the KL part is not zero
      expect(base.loss).toBeCloseTo((1 - distill.alpha) * base.parts!.ce + distill.alpha * distill.temperature ** 2 * base.parts!.kl, 4);
      expect(base.parts!.kl).toBeGreaterThan(1e-2);
    }
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

  it('distillation head: (1-α)·CE + α·T²·KL to a stored teacher top-k, llama, LoRA on q,v,down', async () => {
    const { checked } = await gradcheck({ arch: 'llama', heads: 4, kvHeads: 2 }, loraConfig({ targets: ['q_proj', 'v_proj', 'down_proj'] }), 3, { topK: 4, temperature: 2, alpha: 0.7 });
    expect(checked).toBe(2 * 6 * 3);
  });

  it('LoRA dropout with a fixed seed, llama3 rope scaling', async () => {
    await gradcheck(
      { arch: 'llama', ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 } },
      loraConfig({ dropout: 0.3, targets: ['q_proj', 'up_proj'] }),
    );
  });
});
