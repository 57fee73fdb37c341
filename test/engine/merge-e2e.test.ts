// End to end: a merged checkpoint (W + s·B·A baked in) scores text like the base model with the
// adapter applied on the fly by the ONNX graph. Ties merge.ts to the engine's LoRA semantics.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeTinyModel, readCheckpoint } from '../../site-agent/engine/checkpoint/index.ts';
import { mergeAdapter } from '../../site-agent/engine/merge.ts';
import { writePeftAdapter, readPeftAdapter, type PeftSettings } from '../../shared/lora/peft.ts';
import { scoreLogprobs, releaseInferenceSessions } from '../../site-agent/engine/infer.ts';
import { loraShapes } from '../../shared/lora/keys.ts';
import type { AdapterWeights, LoraConfig } from '../../shared/lora/types.ts';

let root: string;
beforeAll(() => {
  root = mkdtempSync(join(tmpdir(), 'fedlora-merge-e2e-'));
});
afterAll(async () => {
  await releaseInferenceSessions();
  rmSync(root, { recursive: true, force: true });
});

describe('merged checkpoint == base + adapter at inference', () => {
  it('qwen2 (biases, GQA): token log-probs agree, and differ from the base alone', async () => {
    const base = join(root, 'base');
    writeTinyModel({ arch: 'qwen2', out: base, seed: 21, layers: 2, hidden: 32, heads: 4, kvHeads: 2, intermediate: 48, biasStd: 0.02 });
    const ck = readCheckpoint(base);
    const s: PeftSettings = { r: 4, alpha: 8, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], dropout: 0, useRslora: false, baseModel: base };
    let x = 5;
    const rnd = () => ((x = (x * 1664525 + 1013904223) >>> 0) / 2 ** 32 - 0.5) * 2;
    const w: AdapterWeights = new Map();
    for (const [k, shape] of loraShapes(ck.config, s)) w.set(k, { shape, data: Float32Array.from({ length: shape[0] * shape[1] }, rnd) });
    writePeftAdapter(join(root, 'ad'), w, s);
    mergeAdapter(base, join(root, 'ad'), join(root, 'merged'));
    const merged = readCheckpoint(join(root, 'merged'));
    const lora: LoraConfig = { r: s.r, alpha: s.alpha, targets: s.targets, dropout: 0, useRslora: false, freezeA: false, initSeed: 0 };
    const ids = [[272, 274, 72, 105, 32, 116, 104, 101, 114, 101, 275, 79, 107, 273]];
    const [withAdapter] = await scoreLogprobs(ck, readPeftAdapter(join(root, 'ad')).weights, lora, ids);
    const [fromMerged] = await scoreLogprobs(merged, null, null, ids);
    const [baseOnly] = await scoreLogprobs(ck, null, null, ids);
    let maxDiff = 0, maxMoved = 0;
    for (let t = 1; t < ids[0].length; t++) {
      maxDiff = Math.max(maxDiff, Math.abs(withAdapter[t] - fromMerged[t]));
      maxMoved = Math.max(maxMoved, Math.abs(withAdapter[t] - baseOnly[t]));
    }
    expect(maxDiff).toBeLessThan(1e-4);
    expect(maxMoved).toBeGreaterThan(1e-2);
  });
});
