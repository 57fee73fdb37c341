// Scoring and generation on real ORT sessions: KV-cache generation equals no-cache recomputation
// (greedy = argmax of the re-computed logits at every step), sampling is reproducible by seed, the
// scoring graph agrees with the logits graph, and bad inputs get clear errors.

import { afterAll, describe, expect, it } from 'vitest';
import { generate, nextTokenLogits, releaseInferenceSessions, sampleToken, scoreLogprobs } from '../../site-agent/engine/infer.ts';
import { loraConfig, randomAdapter, rng, writeFixture } from './ref/fixture.ts';

afterAll(releaseInferenceSessions);

const ckpt = writeFixture({ arch: 'qwen2', heads: 4, kvHeads: 2, std: 0.4, vocab: 80 });
const lora = loraConfig({ targets: ['q_proj', 'v_proj', 'down_proj'] });
const adapter = randomAdapter(ckpt, lora, 9, 0.3);
const argmax = (a: Float32Array) => a.reduce((bi, v, i) => (v > a[bi] ? i : bi), 0);

describe('generation with a KV cache', () => {
  it('greedy generation equals argmax of no-cache logits at every step (with adapter)', async () => {
    const prompt = [5, 17, 3, 44, 9];
    const out = await generate(ckpt, adapter, lora, prompt, { maxNewTokens: 12, temperature: 0, stopTokenIds: [] });
    expect(out.length).toBe(12);
    for (let i = 0; i < out.length; i++) {
      const logits = await nextTokenLogits(ckpt, adapter, lora, [...prompt, ...out.slice(0, i)]);
      expect(out[i], `step ${i}`).toBe(argmax(logits));
    }
    const plain = await generate(ckpt, null, null, prompt, { maxNewTokens: 12, stopTokenIds: [] });
    expect(plain).not.toEqual(out); // the adapter changes the continuation
  });

  it('stops at a stop token and sampling is reproducible by seed', async () => {
    const prompt = [1, 2, 3];
    const full = await generate(ckpt, null, null, prompt, { maxNewTokens: 6, stopTokenIds: [] });
    const stopped = await generate(ckpt, null, null, prompt, { maxNewTokens: 6, stopTokenIds: [full[2]] });
    expect(stopped).toEqual(full.slice(0, full.indexOf(full[2])));
    const a = await generate(ckpt, null, null, prompt, { maxNewTokens: 10, temperature: 1.5, topP: 0.95, seed: 4, stopTokenIds: [] });
    const b = await generate(ckpt, null, null, prompt, { maxNewTokens: 10, temperature: 1.5, topP: 0.95, seed: 4, stopTokenIds: [] });
    const c = await generate(ckpt, null, null, prompt, { maxNewTokens: 10, temperature: 1.5, topP: 0.95, seed: 5, stopTokenIds: [] });
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
  });

  it('top-p keeps only the nucleus', () => {
    const logits = Float32Array.from([0, 5, 4.9, -3]);
    const r = rng(1);
    const seen = new Set(Array.from({ length: 200 }, () => sampleToken(logits, 1, 0.5, r)));
    expect([...seen]).toEqual([1]);
    const seen2 = new Set(Array.from({ length: 200 }, () => sampleToken(logits, 1, 0.9, r)));
    expect([...seen2].sort()).toEqual([1, 2]);
  });
});

describe('scoring', () => {
  it('log-probs match log_softmax of the logits graph, with and without adapter', async () => {
    const seqs = [[4, 8, 15, 16, 23, 42], [7, 7, 7]];
    for (const [ad, lc] of [[adapter, lora], [null, null]] as const) {
      const lp = await scoreLogprobs(ckpt, ad, lc, seqs);
      for (const [i, s] of seqs.entries()) {
        expect(lp[i].length).toBe(s.length);
        expect(Number.isNaN(lp[i][0])).toBe(true);
        for (let t = 1; t < s.length; t++) {
          const logits = await nextTokenLogits(ckpt, ad, lc, s.slice(0, t));
          const m = Math.max(...logits);
          const lse = m + Math.log(logits.reduce((a, v) => a + Math.exp(v - m), 0));
          expect(Math.abs(lp[i][t] - (logits[s[t]] - lse))).toBeLessThan(1e-4);
        }
      }
    }
    const withA = await scoreLogprobs(ckpt, adapter, lora, seqs);
    const without = await scoreLogprobs(ckpt, null, null, seqs);
    expect(Math.abs(withA[0][3] - without[0][3])).toBeGreaterThan(1e-3);
  });

  it('scores more sequences than one batch holds, and rejects bad ids', async () => {
    const r = rng(3);
    const seqs = Array.from({ length: 11 }, (_, i) => Array.from({ length: 2 + (i % 5) }, () => Math.floor(r() * 80)));
    const many = await scoreLogprobs(ckpt, null, null, seqs);
    const one = await scoreLogprobs(ckpt, null, null, [seqs[9]]);
    expect(many.map((x) => x.length)).toEqual(seqs.map((s) => s.length));
    for (let t = 1; t < seqs[9].length; t++) expect(Math.abs(many[9][t] - one[0][t])).toBeLessThan(1e-5);
    await expect(scoreLogprobs(ckpt, null, null, [[1, 80]])).rejects.toThrow(/ids\[0\]\[1\] = 80/);
    await expect(generate(ckpt, adapter, null, [1], { maxNewTokens: 1 })).rejects.toThrow(/without its LoraConfig/);
  });
});
