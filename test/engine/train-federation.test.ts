// The engine facade the site agent calls each round: trainForFederation from the global adapter,
// over a JSONL file, and a cancelled round rejects instead of returning a partial update.
import { afterAll, expect, it } from 'vitest';
import { initLoraAdapter, trainForFederation, type FederationTrainRequest } from '../../site-agent/engine/index.ts';
import { adapterBytes, digitJsonl, LORA, tempDir, tinyModel } from './train-fixtures.ts';

const tmp = tempDir('train-fed');
afterAll(() => tmp.cleanup());

it('trains from the global adapter with the round settings; cancel rejects', async () => {
  const ckpt = tinyModel(`${tmp.dir}/model`);
  digitJsonl(`${tmp.dir}/train.jsonl`, 30, 4);
  const lora = { ...LORA, freezeA: true, initSeed: 9 };
  const global = initLoraAdapter(ckpt.config, lora);
  const req: FederationTrainRequest = {
    modelDir: ckpt.dir, device: 'cpu', lora, initAdapter: global, trainFile: `${tmp.dir}/train.jsonl`, maxSeqLen: 64,
    train: { steps: 3, epochs: 0, learningRate: 1e-2, optimizer: 'adamw', batchTokens: 64, seed: 1, proxMu: 0.01, weightDecay: 0, warmupSteps: 0, maxGradNorm: 1 },
  };
  const events: number[] = [];
  const r = await trainForFederation({ ...req, onProgress: (e) => events.push(e.step) });
  expect(r.numExamples).toBe(30);
  expect(r.lossPerStep).toHaveLength(3);
  expect(events).toEqual([1, 2, 3]);
  expect(r.tokensPerSecond).toBeGreaterThan(0);
  // freezeA: A is still the shared init, B moved
  for (const [k, t] of global) {
    const same = adapterBytes(new Map([[k, t]])).equals(adapterBytes(new Map([[k, r.adapter.get(k)!]])));
    expect(same).toBe(k.includes('lora_A'));
  }
  // epochs mode (steps 0): one epoch over 30 examples
  const e = await trainForFederation({ ...req, train: { ...req.train, steps: 0, epochs: 1 } });
  expect(e.lossPerStep.length).toBeGreaterThan(1);
  const ac = new AbortController();
  ac.abort();
  await expect(trainForFederation({ ...req, signal: ac.signal })).rejects.toThrow(/local training was cancelled after step 0/);
});
