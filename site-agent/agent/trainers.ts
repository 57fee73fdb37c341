// Pluggable local trainers. The built-in one runs the ONNX Runtime LoRA engine in-process;
// the external-command trainer lets a site use its own PyTorch/PEFT or multi-GPU setup
// through a documented file contract:
//
//   <workdir>/job.json            what to train (below), written by the agent
//   <workdir>/global_adapter/     the global adapter in PEFT format (start from it)
//   <workdir>/train.jsonl         training examples in chat format ({"messages": [...]})
//   the command runs with cwd = <workdir> and FEDLORA_JOB=<workdir>/job.json
//   <workdir>/out/adapter/        the trained adapter in PEFT format (written by the command)
//   <workdir>/out/metrics.json    {"num_examples": N, "loss": [..], "tokens_per_s": x} (written by the command)
//
// job.json: {"model_dir", "device", "lora": {r, alpha, target_modules, dropout, use_rslora,
// freeze_a, init_seed}, "train": {steps, epochs, learning_rate, optimizer, batch_tokens, seed,
// prox_mu, weight_decay, warmup_steps, max_grad_norm}, "global_adapter_dir", "train_file", "out_dir"}

import { spawn } from 'node:child_process';
import { mkdirSync, writeFileSync, readFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import type { FederationTrainRequest, FederationTrainResult } from '../engine/index.ts';
import { fail } from '../../shared/errors.ts';
import { writePeftAdapter, readPeftAdapter } from '../../shared/peft.ts';

/** One round of local training: the engine's request (the built-in trainer takes it as is)
 *  plus what the external-command contract needs. */
export interface LocalTrainRequest extends FederationTrainRequest {
  workDir: string;
  baseModelId: string;
}

export type LocalTrainResult = FederationTrainResult;

export interface Trainer {
  readonly kind: string;
  train(req: LocalTrainRequest): Promise<LocalTrainResult>;
}

/** The built-in trainer: the ONNX Runtime LoRA engine (site-agent/engine). */
export class EngineTrainer implements Trainer {
  readonly kind = 'engine';
  async train(req: LocalTrainRequest): Promise<LocalTrainResult> {
    const engine = await import('../engine/index.ts');
    return engine.trainForFederation(req);
  }
}

export class CommandTrainer implements Trainer {
  readonly kind = 'command';
  constructor(private readonly argv: string[], private readonly timeoutS: number) {}

  async train(req: LocalTrainRequest): Promise<LocalTrainResult> {
    const w = req.workDir;
    mkdirSync(join(w, 'out'), { recursive: true });
    const globalDir = join(w, 'global_adapter');
    const peftCfg = {
      r: req.lora.r,
      alpha: req.lora.alpha,
      targets: req.lora.targets,
      dropout: req.lora.dropout,
      useRslora: req.lora.useRslora,
      baseModel: req.baseModelId,
    };
    if (req.initAdapter) writePeftAdapter(globalDir, req.initAdapter, peftCfg);
    const job = {
      model_dir: req.modelDir,
      device: req.device,
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
      out_dir: join(w, 'out'),
    };
    const jobFile = join(w, 'job.json');
    writeFileSync(jobFile, JSON.stringify(job, null, 2));
    await new Promise<void>((resolve, reject) => {
      const child = spawn(this.argv[0], this.argv.slice(1), { cwd: w, env: { ...process.env, FEDLORA_JOB: jobFile }, stdio: ['ignore', 'inherit', 'inherit'] });
      const timer = setTimeout(() => child.kill('SIGTERM'), this.timeoutS * 1000);
      const onAbort = () => child.kill('SIGTERM');
      req.signal?.addEventListener('abort', onAbort);
      child.on('error', (e) => reject(fail('FEDLORA_ERR_TRAINING', `external trainer "${this.argv[0]}" could not start: ${e.message}`)));
      child.on('exit', (code, sig) => {
        clearTimeout(timer);
        req.signal?.removeEventListener('abort', onAbort);
        if (code === 0) resolve();
        else reject(fail('FEDLORA_ERR_TRAINING', `external trainer "${this.argv.join(' ')}" exited with ${sig ?? code}`));
      });
    });
    const outAdapter = join(w, 'out', 'adapter');
    const metricsFile = join(w, 'out', 'metrics.json');
    if (!existsSync(outAdapter)) throw fail('FEDLORA_ERR_TRAINING', `external trainer wrote no adapter at ${outAdapter}`);
    if (!existsSync(metricsFile)) throw fail('FEDLORA_ERR_TRAINING', `external trainer wrote no ${metricsFile}`);
    const { weights } = readPeftAdapter(outAdapter);
    let metrics: { num_examples?: unknown; loss?: unknown; tokens_per_s?: unknown };
    try {
      metrics = JSON.parse(readFileSync(metricsFile, 'utf8'));
    } catch (e) {
      throw fail('FEDLORA_ERR_TRAINING', `${metricsFile}: not valid JSON (${(e as Error).message})`);
    }
    if (!Number.isInteger(metrics.num_examples) || (metrics.num_examples as number) <= 0) {
      throw fail('FEDLORA_ERR_TRAINING', `${metricsFile}: num_examples must be a positive integer`);
    }
    return {
      adapter: weights,
      numExamples: metrics.num_examples as number,
      lossPerStep: Array.isArray(metrics.loss) ? (metrics.loss as number[]).map(Number) : [],
      tokensPerSecond: Number(metrics.tokens_per_s ?? 0),
    };
  }
}

export function createTrainer(cfg: { kind: 'engine' } | { kind: 'command'; command: string[]; timeout_s: number }): Trainer {
  return cfg.kind === 'engine' ? new EngineTrainer() : new CommandTrainer(cfg.command, cfg.timeout_s);
}
