// The external-trainer file contract (trainer: { kind: command }), both halves the agent owns:
// writing the job folder and reading back what the trainer wrote. The reference implementation
// for GPU sites is deploy/trainers/peft_trainer.py; deploy/README.md documents the contract.
//
//   <workdir>/job.json            what to train (below), written by the agent
//   <workdir>/global_adapter/     the global adapter in PEFT format (start from it)
//   job.train_file                training examples in chat format ({"messages": [...]}), one a line
//   the command runs with cwd = <workdir> and FEDLORA_JOB=<workdir>/job.json
//   <workdir>/out/adapter/        the trained adapter in PEFT format (written by the command)
//   <workdir>/out/metrics.json    {"num_examples": N, "loss": [..per step], "tokens_per_s": x,
//                                  optional "weight_bits": 4|8|16|32, "peak_rss_bytes": n}
//
// job.json: {"contract": "fedlora-train/1", "model_dir", "base_model_id", "device",
// "quantize": none|int8|int4 (the site's model.quantize: the base-weight precision it chose),
// "lora": {r, alpha, target_modules, dropout, use_rslora, freeze_a, init_seed},
// "train": {steps, epochs, learning_rate, optimizer, batch_tokens, seed, prox_mu, weight_decay,
// warmup_steps, max_grad_norm, max_seq_len}, "global_adapter_dir", "train_file", "out_dir"}

import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { fail } from '../../shared/errors.ts';
import { readPeftAdapter, writePeftAdapter } from '../../shared/lora/peft.ts';
import type { LoraConfig } from '../../shared/lora/types.ts';
import { readOutputJson } from './external-command.ts';
import type { LocalTrainRequest, LocalTrainResult } from './trainers.ts';

const TRAIN_CONTRACT = 'fedlora-train/1';

/** Write job.json, global_adapter/ and train.jsonl into req.workDir; returns job.json's path.
 *  out/ is emptied first, so nothing from an earlier attempt can be read back as this one's. */
export function writeTrainJob(req: LocalTrainRequest): string {
  const w = req.workDir;
  const out = join(w, 'out');
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const globalDir = join(w, 'global_adapter');
  if (req.initAdapter) {
    writePeftAdapter(globalDir, req.initAdapter, {
      r: req.lora.r, alpha: req.lora.alpha, targets: req.lora.targets, dropout: req.lora.dropout, useRslora: req.lora.useRslora, baseModel: req.baseModelId,
    });
  }
  const job = {
    contract: TRAIN_CONTRACT,
    model_dir: req.modelDir,
    base_model_id: req.baseModelId,
    device: req.device,
    quantize: req.quantize ?? 'none',
    lora: {
      r: req.lora.r, alpha: req.lora.alpha, target_modules: req.lora.targets, dropout: req.lora.dropout,
      use_rslora: req.lora.useRslora, freeze_a: req.lora.freezeA, init_seed: req.lora.initSeed,
    },
    train: {
      steps: req.train.steps, epochs: req.train.epochs, learning_rate: req.train.learningRate, optimizer: req.train.optimizer,
      batch_tokens: req.train.batchTokens, seed: req.train.seed, prox_mu: req.train.proxMu, weight_decay: req.train.weightDecay,
      warmup_steps: req.train.warmupSteps, max_grad_norm: req.train.maxGradNorm, max_seq_len: req.maxSeqLen,
    },
    global_adapter_dir: req.initAdapter ? globalDir : null,
    train_file: req.trainFile,
    out_dir: out,
  };
  const jobFile = join(w, 'job.json');
  writeFileSync(jobFile, JSON.stringify(job, null, 2));
  return jobFile;
}

const TrainMetricsSchema = z.object({
  num_examples: z.number().int().positive(),
  loss: z.array(z.number().finite()).default([]),
  tokens_per_s: z.number().finite().nonnegative().default(0),
  // what the site reports with its training metrics: the precision its base weights had while
  // training (4 = int4/NF4, 8, 16 = bf16/fp16, 32) and the trainer's peak host memory
  weight_bits: z.union([z.literal(4), z.literal(8), z.literal(16), z.literal(32)]).optional(),
  peak_rss_bytes: z.number().int().positive().optional(),
}).passthrough();

/** Read <workDir>/out/: the adapter must be a PEFT adapter of the job's rank and target modules. */
export function readTrainOutput(workDir: string, lora: Pick<LoraConfig, 'r' | 'targets'>): LocalTrainResult {
  const outAdapter = join(workDir, 'out', 'adapter');
  const metricsFile = join(workDir, 'out', 'metrics.json');
  if (!existsSync(outAdapter)) throw fail('FEDLORA_ERR_TRAINING', `external trainer wrote no adapter at ${outAdapter}`);
  const { weights, config } = readPeftAdapter(outAdapter);
  const sameTargets = config.targets.length === lora.targets.length && lora.targets.every((t) => config.targets.includes(t));
  if (config.r !== lora.r || !sameTargets) {
    throw fail('FEDLORA_ERR_ADAPTER', `${outAdapter}: r = ${config.r}, target_modules [${config.targets.join(', ')}]; the job asked for r = ${lora.r}, [${lora.targets.join(', ')}]`);
  }
  const m = readOutputJson(metricsFile, TrainMetricsSchema, 'external trainer', 'FEDLORA_ERR_TRAINING');
  return {
    adapter: weights, numExamples: m.num_examples, lossPerStep: m.loss, tokensPerSecond: m.tokens_per_s,
    ...(m.weight_bits !== undefined ? { weightBits: m.weight_bits } : {}), ...(m.peak_rss_bytes !== undefined ? { peakRssBytes: m.peak_rss_bytes } : {}),
  };
}
