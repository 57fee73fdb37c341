// Prepares, on a fedlora checkout (CPU, Node), everything deploy/trainers/gpu_check.py needs on a
// GPU machine that has PyTorch + transformers + peft but no Node.js and no network:
//   tiny-qwen2/, tiny-llama/   tiny checkpoints in the Hugging Face format (F32, byte tokenizer)
//   adapters/*/                PEFT adapters trained by our engine on them (a few steps)
//   expected.json              our engine's log-probabilities of fixed token ids, per model/adapter
//   r1-1.5b/                   DeepSeek-R1-Distill-Qwen-1.5B's config.json (engine presets) + tokenizer
//                              (no weights: gpu_check.py makes random ones there)
//   job/                       a training job folder written by the agent's contract writer
//                              (job.json, global_adapter/, train.jsonl) for those shapes
//
//   npx tsx test/gpu/prepare-gpu-check.ts --out gpu-check-bundle
//   (on the GPU machine) python3 deploy/trainers/gpu_check.py --bundle gpu-check-bundle --out OUT
//   npx tsx test/gpu/read-back.ts OUT gpu-check-bundle
import { copyFileSync, mkdirSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { mkdtempSync } from 'node:fs';
import { initTinyModel, loadModel, train, writePeftAdapter, initLoraAdapter, MODEL_PRESETS, type LoraConfig } from '../../site-agent/engine/index.ts';
import { normalizeConfig } from '../../shared/lora/model-config.ts';
import { buildDatasets, defaultDataConfig, generateSites, ingestFiles, loadOrCreateSiteKey, openSiteDataStore } from '../../site-agent/data/index.ts';
import { writeTrainJob } from '../../site-agent/agent/train-contract.ts';

const TEXT = 'Chief complaint: chest pain radiating to the left arm for two hours. Diagnosis: acute myocardial infarction.';

async function chatRecords(dir: string, n: number): Promise<string[]> {
  const [site] = generateSites({ sites: 1, records: n * 2, lang: 'en', skew: 0.5, seed: 21, format: 'jsonl', out: join(dir, 'export') });
  const store = openSiteDataStore(join(dir, 'site.sqlite'));
  try {
    await ingestFiles(store, [site.file!], { format: 'jsonl', config: defaultDataConfig(), key: loadOrCreateSiteKey(dir) });
    const ds = buildDatasets(store, { config: defaultDataConfig(), allowedFields: ['department', 'chiefComplaint', 'history', 'diagnosis'], maxTrainExamples: n });
    return ds.train.map((e) => JSON.stringify(e));
  } finally {
    store.close();
  }
}

async function main(): Promise<void> {
  const at = process.argv.indexOf('--out');
  const out = resolve(at > 0 ? process.argv[at + 1] : 'gpu-check-bundle');
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const scratch = mkdtempSync(join(tmpdir(), 'fedlora-gpu-prep-'));
  const records = await chatRecords(scratch, 48);
  const tinyTrain = join(scratch, 'train.jsonl');
  writeFileSync(tinyTrain, records.slice(0, 16).join('\n') + '\n');

  const cases: { model: string; adapter: string | null; ids: number[]; logprobs: (number | null)[] }[] = [];
  const tiny = [
    { name: 'tiny-llama', arch: 'llama' as const, lora: { r: 4, alpha: 8, targets: ['q_proj', 'v_proj'], dropout: 0, useRslora: false, freezeA: false, initSeed: 3 } as LoraConfig },
    { name: 'tiny-qwen2', arch: 'qwen2' as const, lora: { r: 8, alpha: 16, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj', 'gate_proj', 'up_proj', 'down_proj'], dropout: 0, useRslora: true, freezeA: false, initSeed: 4 } as LoraConfig },
  ];
  for (const t of tiny) {
    const dir = join(out, t.name);
    initTinyModel({ arch: t.arch, out: dir, seed: 17, layers: 2, hidden: 64, heads: 4, kvHeads: 2, intermediate: 128, tokenizer: 'byte', dtype: 'F32', biasStd: t.arch === 'qwen2' ? 0.02 : 0 });
    const trained = await train({ model: dir, data: tinyTrain, lora: t.lora, lr: 2e-2, steps: 4, maxSeqLen: 1024, seed: 5 });
    const adapterDir = join(out, 'adapters', t.name);
    writePeftAdapter(adapterDir, trained.adapter, { r: t.lora.r, alpha: t.lora.alpha, targets: t.lora.targets, dropout: 0, useRslora: t.lora.useRslora, baseModel: t.name });
    for (const adapter of [null, adapterDir]) {
      const m = await loadModel(dir, adapter ? { adapter } : {});
      const ids = m.encode(TEXT);
      cases.push({ model: t.name, adapter: adapter ? join('adapters', t.name) : null, ids, logprobs: await m.scoreTokens(ids) });
      await m.release();
    }
  }
  writeFileSync(join(out, 'expected.json'), JSON.stringify({ text: TEXT, cases }, null, 1));

  // The 1.5B shapes: the model's exact config.json + the tiny models' tokenizer (its ids are < 151936).
  const r1 = join(out, 'r1-1.5b');
  mkdirSync(r1);
  const r1Config = MODEL_PRESETS['deepseek-r1-distill-qwen-1.5b'].config;
  writeFileSync(join(r1, 'config.json'), JSON.stringify(r1Config, null, 2));
  for (const f of readdirSync(join(out, 'tiny-qwen2'))) if (f.startsWith('tokenizer') || f === 'special_tokens_map.json') copyFileSync(join(out, 'tiny-qwen2', f), join(r1, f));

  // The job folder, written by the agent's own contract writer (paths rewritten by gpu_check.py).
  const job = join(out, 'job');
  mkdirSync(job);
  writeFileSync(join(job, 'train.jsonl'), records.join('\n') + '\n');
  const lora: LoraConfig = { r: 16, alpha: 32, targets: ['q_proj', 'k_proj', 'v_proj', 'o_proj'], dropout: 0.05, useRslora: false, freezeA: false, initSeed: 7 };
  writeTrainJob({
    workDir: job, modelDir: 'r1-1.5b', baseModelId: 'deepseek-ai/DeepSeek-R1-Distill-Qwen-1.5B (random weights)', device: 'cuda', lora,
    train: { steps: 20, epochs: 0, learningRate: 2e-4, optimizer: 'adamw', batchTokens: 8192, seed: 11, proxMu: 0, weightDecay: 0, warmupSteps: 2, maxGradNorm: 1 },
    initAdapter: initLoraAdapter(normalizeConfig(r1Config), lora), trainFile: join(job, 'train.jsonl'), maxSeqLen: 1024,
  });
  rmSync(join(job, 'out'), { recursive: true, force: true });
  rmSync(scratch, { recursive: true, force: true });
  console.log(`wrote ${out}: ${cases.length} log-probability cases, r1-1.5b config, job/ (${records.length} training records)`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
