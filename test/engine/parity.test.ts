// Parity with PyTorch: test/engine/ref/hf_math.py re-implements the transformers forward of
// LlamaForCausalLM / Qwen2ForCausalLM (+ PEFT LoRA) in torch from the same config.json and
// safetensors. The ONNX graphs must agree to 1e-4 on per-token log-probs (scoring graph) and on the
// packed-batch loss (training graph). Fails (does not skip) when python3/torch is missing, naming the
// command that installs it.

import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeSafetensors } from '../../shared/safetensors.ts';
import { createTrainStepSession } from '../../site-agent/engine/session.ts';
import { releaseInferenceSessions, scoreLogprobs } from '../../site-agent/engine/infer.ts';
import type { AdapterWeights, LoraConfig } from '../../shared/lora/types.ts';
import type { Checkpoint } from '../../site-agent/engine/types.ts';
import { loraConfig, randomAdapter, randomBatch, rng, writeFixture, type FixtureOptions } from './ref/fixture.ts';
import { PYTHON, requireTool, TORCH } from '../runner/reference-tools.ts';
import { runProcessOk } from '../runner/run-process.ts';

const SCRIPT = join(import.meta.dirname, 'ref', 'hf_math.py');

interface PyBatch { B: number; S: number; input_ids: number[]; position_ids: number[]; segment_ids: number[]; targets: number[] }

interface RefRequest { ckpt: Checkpoint; adapter: AdapterWeights | null; lora: LoraConfig | null; batch: PyBatch; denominator: number }

/** Run all requests in one python process (torch's import dominates the time). */
async function torchReference(reqs: RefRequest[]): Promise<{ token_logprobs: number[]; loss: number }[]> {
  await requireTool(TORCH);
  const out = await runProcessOk(PYTHON, [SCRIPT], { input: JSON.stringify(reqs.map(toPy)) });
  return JSON.parse(out);
}

function toPy({ ckpt, adapter, lora, batch, denominator }: RefRequest) {
  let adapterFile: string | null = null;
  if (adapter) {
    adapterFile = join(ckpt.dir, 'adapter_model.safetensors');
    writeSafetensors(adapterFile, new Map([...adapter].map(([k, t]) => [k, { dtype: 'F32' as const, shape: t.shape, data: t.data }])));
  }
  return {
    model_dir: ckpt.dir,
    adapter: adapterFile,
    lora: lora && { r: lora.r, alpha: lora.alpha, use_rslora: lora.useRslora, targets: lora.targets },
    batch,
    denominator,
  };
}

function randomSequences(n: number, vocab: number, seed: number): number[][] {
  const r = rng(seed);
  return Array.from({ length: n }, (_, i) => Array.from({ length: 5 + 3 * i }, () => Math.floor(r() * vocab)));
}

const CASES: { name: string; fx: FixtureOptions; lora: LoraConfig }[] = [
  { name: 'llama F32, GQA, LoRA q,v', fx: { arch: 'llama', heads: 4, kvHeads: 2 }, lora: loraConfig() },
  {
    name: 'llama BF16, llama3 rope scaling, LoRA on all projections',
    fx: { arch: 'llama', dtype: 'BF16', heads: 4, kvHeads: 1, ropeScaling: { rope_type: 'llama3', factor: 8, low_freq_factor: 1, high_freq_factor: 4, original_max_position_embeddings: 16 } },
    lora: loraConfig({ targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], useRslora: true }),
  },
  { name: 'qwen2 F32 (biases), tied embeddings, LoRA k,o,down', fx: { arch: 'qwen2', heads: 4, kvHeads: 2, tie: true }, lora: loraConfig({ targets: ['k_proj', 'o_proj', 'down_proj'] }) },
  { name: 'qwen2 F16, linear rope scaling, hidden 64', fx: { arch: 'qwen2', dtype: 'F16', hidden: 64, heads: 4, kvHeads: 2, ropeScaling: { type: 'linear', factor: 2 } }, lora: loraConfig({ r: 8, alpha: 16 }) },
];

afterAll(releaseInferenceSessions);

describe('parity with the PyTorch reference of transformers', () => {
  for (const c of CASES) {
    it(c.name, async () => {
      const ckpt = writeFixture({ ...c.fx, std: 0.2, vocab: 96 });
      const adapter = randomAdapter(ckpt, c.lora, 3, 0.2);

      // scoring graph with and without the adapter, training graph on a packed batch
      const seqs = randomSequences(3, ckpt.config.vocabSize, 21);
      const S = Math.max(...seqs.map((s) => s.length));
      const flat = (f: (s: number[], t: number) => number) => seqs.flatMap((s) => Array.from({ length: S }, (_, t) => (t < s.length ? f(s, t) : 0)));
      const batch: PyBatch = {
        B: seqs.length, S,
        input_ids: flat((s, t) => s[t]), position_ids: flat((_s, t) => t), segment_ids: flat(() => 1),
        targets: seqs.flatMap((s) => Array.from({ length: S }, (_, t) => (t + 1 < s.length ? s[t + 1] : -100))),
      };
      const withA = await scoreLogprobs(ckpt, adapter, c.lora, seqs);
      const without = await scoreLogprobs(ckpt, null, null, seqs);
      const pb = randomBatch(2, 12, ckpt.config.vocabSize, 5);
      const s = await createTrainStepSession(ckpt, c.lora, { batch: 2, seq: 12 });
      let loss: number;
      try {
        loss = (await s.run(pb, adapter, { lossDenominator: pb.countedTokens, dropoutSeed: 0 })).loss;
      } finally {
        await s.release();
      }
      const packed: PyBatch = {
        B: 2, S: 12, input_ids: [...pb.inputIds].map(Number), position_ids: [...pb.positionIds].map(Number),
        segment_ids: [...pb.segmentIds], targets: [...pb.targets].map(Number),
      };
      const [refA, refNo, refPacked] = await torchReference([
        { ckpt, adapter, lora: c.lora, batch, denominator: 1 },
        { ckpt, adapter: null, lora: null, batch, denominator: 1 },
        { ckpt, adapter, lora: c.lora, batch: packed, denominator: pb.countedTokens },
      ]);
      let adapterEffect = 0;
      for (const [ours, ref, label] of [[withA, refA, 'with adapter'], [without, refNo, 'without adapter']] as const) {
        let maxDiff = 0;
        seqs.forEach((sq, i) => {
          expect(Number.isNaN(ours[i][0])).toBe(true);
          for (let t = 1; t < sq.length; t++) {
            maxDiff = Math.max(maxDiff, Math.abs(ours[i][t] - ref.token_logprobs[i * S + t - 1]));
            adapterEffect = Math.max(adapterEffect, Math.abs(withA[i][t] - without[i][t]));
          }
        });
        expect(maxDiff, `max |log p| difference ${label}`).toBeLessThanOrEqual(1e-4);
      }
      expect(adapterEffect, 'the adapter must change the log-probs').toBeGreaterThan(1e-2);
      // training graph: packed batch loss (segments, padding, position restarts)
      expect(Math.abs(loss - refPacked.loss), `loss ${loss} vs torch ${refPacked.loss}`).toBeLessThanOrEqual(1e-4);
      expect(loss).toBeGreaterThan(0.5);
    });
  }
});
