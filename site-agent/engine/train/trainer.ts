// The LoRA training loop: data order -> packed micro-batches -> TrainStepSession (forward +
// backward in ONNX Runtime) -> gradient accumulation, FedProx term, clipping -> AdamW/SGD with a
// warm-up + cosine schedule. Everything random derives from `seed` and the position in the run
// (epoch order from (seed, epoch), dropout from (seed, micro-batch index)), so a run is
// reproducible bit for bit and a resumed run continues exactly where the checkpoint left off.

import { createHash } from 'node:crypto';
import { fail, isFedloraError } from '../../../shared/errors.ts';
import { readCheckpoint } from '../checkpoint/read.ts';
import { loadJsonlExamples } from '../data/jsonl.ts';
import { packExamples } from '../data/pack.ts';
import { loadTokenizer } from '../tokenizer.ts';
import type { AdapterWeights, LoraConfig } from '../../../shared/lora/types.ts';
import type { Checkpoint, Device, Example, PackedBatch, ProgressEvent, QuantMode, TrainStepSession } from '../types.ts';
import { accumulate, addProximal, clipGradNorm } from './grads.ts';
import { cloneAdapter, trainableKeys } from './adapter-state.ts';
import { validateAdapterAgainst } from '../../../shared/lora/peft.ts';
import { initLoraAdapter } from '../../../shared/lora/init.ts';
import { Optimizer, type OptimizerKind } from './optim.ts';
import { deriveSeed } from '../../../shared/prng.ts';
import { hasRunCheckpoint, loadRunCheckpoint, saveRunCheckpoint, type DataPosition } from './run-checkpoint.ts';
import { lrAt } from './schedule.ts';

export type SessionFactory = (
  ckpt: Checkpoint, lora: LoraConfig, opts: { batch: number; seq: number; device: Device; quantize?: QuantMode; recompute?: boolean; log?: (msg: string) => void },
) => Promise<TrainStepSession>;

export interface TrainOptions {
  /** Model folder or an already read checkpoint. */
  model: string | Checkpoint;
  /** Training examples, or `data`: a JSONL file (tokenised with the model's tokenizer). */
  examples?: Example[];
  data?: string;
  /** Start from this adapter (e.g. the federation's global adapter) instead of a fresh init. */
  initialAdapter?: AdapterWeights | null;
  lora: LoraConfig;
  optimizer?: OptimizerKind;
  lr: number;
  weightDecay?: number;
  betas?: [number, number];
  eps?: number;
  momentum?: number;
  warmupSteps?: number;
  schedule?: 'cosine' | 'constant';
  minLrRatio?: number;
  /** Optimizer steps; or `epochs` over the data (default 1 epoch). */
  steps?: number;
  epochs?: number;
  /** Tokens (positions) per optimizer step; micro-batches are accumulated to reach it. */
  batchTokens?: number;
  /** Rows per micro-batch (the session's batch dimension). Default 1. */
  microBatch?: number;
  /** Row length; default: the longest example (rounded up to 8), at most maxPositionEmbeddings. */
  seq?: number;
  seed?: number;
  /** Clip the global gradient norm to this (0/undefined = no clipping). */
  maxGradNorm?: number;
  /** FedProx mu: adds mu·(w − w_initial) to the gradient. */
  proxMu?: number;
  device?: Device;
  /** Frozen base weights: float32 (default) or blockwise int8/int4 (QLoRA-style); adapters stay float32. */
  quantize?: QuantMode;
  /** Recompute each decoder layer's activations in the backward pass (long sequences, less memory). */
  recompute?: boolean;
  /** Notes such as "preparing int4 weights" (first use of a checkpoint). */
  log?: (msg: string) => void;
  onProgress?: (ev: ProgressEvent) => void;
  /** Stop after the current step; the run is checkpointed (if checkpointDir) and returned with interrupted=true. */
  signal?: AbortSignal;
  checkpointDir?: string;
  /** Checkpoint every N steps (and always at the end / on abort). 0 = only at the end/abort. */
  checkpointEvery?: number;
  /** Continue from checkpointDir if it holds a checkpoint of the same run. */
  resume?: boolean;
  /** Max sequence length when loading `data` (default: `seq` or 512). */
  maxSeqLen?: number;
  /** Override how training sessions are made (tests, benchmarks). */
  sessionFactory?: SessionFactory;
}

export interface TrainMetrics {
  lossPerStep: number[];
  gradNormPerStep: number[];
  tokensPerSecond: number;
  steps: number;
  examples: number;
  tokens: number;
  seq: number;
  microBatch: number;
  accumulation: number;
  resumedFromStep: number | null;
  /** How the frozen base weights were held, and whether layers were recomputed. */
  quantize: QuantMode;
  recompute: boolean;
  /** Peak resident memory of this process so far (ru_maxrss), bytes: the whole run's high-water mark. */
  peakRssBytes: number;
}

export interface TrainResult {
  adapter: AdapterWeights;
  metrics: TrainMetrics;
  /** True when `signal` stopped the run before totalSteps. */
  interrupted: boolean;
}

const roundUp = (x: number, m: number) => Math.ceil(x / m) * m;

function posInt(v: number | undefined, name: string, dflt: number): number {
  const x = v ?? dflt;
  if (!Number.isInteger(x) || x < 1) throw fail('FEDLORA_ERR_CONFIG', `${name} = ${x}: must be a positive integer`);
  return x;
}

async function defaultSessionFactory(): Promise<SessionFactory> {
  const mod = (await import('../session.ts')) as { createTrainStepSession: SessionFactory };
  return mod.createTrainStepSession;
}

/** Fingerprint of everything a resumed run must share with the interrupted one. */
function runFingerprint(parts: unknown): string {
  return createHash('sha256').update(JSON.stringify(parts)).digest('hex');
}

/** sha256 of the tokenised examples (ids and labels, in order): part of a run's identity. */
export function examplesDigest(examples: Example[]): string {
  const h = createHash('sha256');
  for (const e of examples) h.update(JSON.stringify([e.inputIds, e.labels]));
  return h.digest('hex');
}

export async function trainLora(o: TrainOptions): Promise<TrainResult> {
  const ckpt = typeof o.model === 'string' ? readCheckpoint(o.model) : o.model;
  const cfg = ckpt.config;
  const lora = o.lora;
  const seed = o.seed ?? 0;
  if (!Number.isInteger(seed)) throw fail('FEDLORA_ERR_CONFIG', `seed = ${seed}: must be an integer`);
  if (!(o.lr > 0) || !Number.isFinite(o.lr)) throw fail('FEDLORA_ERR_CONFIG', `lr = ${o.lr}: must be a positive number`);
  if (lora.dropout < 0 || lora.dropout >= 1) throw fail('FEDLORA_ERR_CONFIG', `lora.dropout = ${lora.dropout}: must be in [0, 1)`);

  // ---- data -----------------------------------------------------------------------------
  let examples = o.examples;
  if (!examples) {
    if (!o.data) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', 'trainLora: give `examples` or a `data` JSONL file');
    const tok = loadTokenizer(ckpt.dir);
    const maxSeqLen = o.maxSeqLen ?? o.seq ?? Math.min(512, cfg.maxPositionEmbeddings);
    examples = (await loadJsonlExamples(o.data, tok, { maxSeqLen, vocabSize: cfg.vocabSize })).examples;
  }
  if (examples.length === 0) throw fail('FEDLORA_ERR_DATASET', `no training examples${o.data ? ` in ${o.data}` : ''}`);
  for (let i = 0; i < examples.length; i++) {
    const ex = examples[i];
    for (const id of ex.inputIds) if (!(id >= 0 && id < cfg.vocabSize)) throw fail('FEDLORA_ERR_DATASET', `example ${i}: token id ${id} outside the model's vocabulary [0, ${cfg.vocabSize})`);
  }
  const longest = Math.max(...examples.map((e) => e.inputIds.length));
  const seq = posInt(o.seq, 'seq', Math.min(roundUp(longest, 8), cfg.maxPositionEmbeddings));
  if (seq > cfg.maxPositionEmbeddings) throw fail('FEDLORA_ERR_CONFIG', `seq = ${seq} exceeds the model's max_position_embeddings ${cfg.maxPositionEmbeddings}`);
  const microBatch = posInt(o.microBatch, 'microBatch', 1);
  const accumulation = Math.max(1, Math.round((o.batchTokens ?? microBatch * seq) / (microBatch * seq)));
  const epochBatches = new Map<number, PackedBatch[]>();
  const batchesOf = (epoch: number): PackedBatch[] => {
    let b = epochBatches.get(epoch);
    if (!b) {
      b = packExamples(examples!, { batch: microBatch, seq, seed: deriveSeed(seed, 'epoch', epoch), shuffle: true, mode: 'pack', padId: cfg.padTokenId ?? 0 });
      if (b.length === 0) throw fail('FEDLORA_ERR_DATASET', 'packing produced no batches');
      epochBatches.clear(); // keep one epoch in memory
      epochBatches.set(epoch, b);
    }
    return b;
  };
  if (o.epochs !== undefined && !(o.epochs > 0)) throw fail('FEDLORA_ERR_CONFIG', `epochs = ${o.epochs}: must be > 0`);
  const perEpoch = batchesOf(0).length;
  const totalSteps = o.steps !== undefined ? posInt(o.steps, 'steps', 1) : Math.max(1, Math.ceil(((o.epochs ?? 1) * perEpoch) / accumulation));

  // ---- parameters, optimizer -------------------------------------------------------------
  let adapter = o.initialAdapter ? cloneAdapter(o.initialAdapter) : initLoraAdapter(cfg, lora);
  validateAdapterAgainst(cfg, adapter, lora, o.initialAdapter ? 'initial adapter' : 'initialised adapter');
  const proxMu = o.proxMu ?? 0;
  if (!(proxMu >= 0)) throw fail('FEDLORA_ERR_CONFIG', `proxMu = ${proxMu}: must be >= 0`);
  let anchor: AdapterWeights | null = proxMu > 0 ? cloneAdapter(adapter) : null;
  const optimizer = new Optimizer({ kind: o.optimizer ?? 'adamw', weightDecay: o.weightDecay ?? 0, betas: o.betas, eps: o.eps, momentum: o.momentum });
  const sched = { lr: o.lr, warmupSteps: o.warmupSteps ?? 0, totalSteps, kind: o.schedule ?? 'cosine', minLrRatio: o.minLrRatio };
  const fingerprint = runFingerprint({
    model: ckpt.manifestSha256, lora, seed, seq, microBatch, accumulation, totalSteps, opt: optimizer.opts, sched, maxGradNorm: o.maxGradNorm ?? 0, proxMu,
    data: examplesDigest(examples), init: o.initialAdapter ? 'given' : 'fresh',
    // quantized base weights give other gradients: a resumed run keeps the mode it started with
    ...(o.quantize && o.quantize !== 'none' ? { quantize: o.quantize } : {}),
  });

  let step = 0;
  let position: DataPosition = { epoch: 0, index: 0, micro: 0 };
  const lossPerStep: number[] = [];
  const gradNormPerStep: number[] = [];
  let tokensBefore = 0;
  let secondsBefore = 0;
  let resumedFromStep: number | null = null;
  if (o.resume) {
    if (!o.checkpointDir) throw fail('FEDLORA_ERR_CONFIG', 'resume needs a checkpoint folder (checkpointDir)');
    if (hasRunCheckpoint(o.checkpointDir)) {
      const run = loadRunCheckpoint(o.checkpointDir);
      if (run.state.fingerprint !== fingerprint) {
        throw fail('FEDLORA_ERR_CONFIG', `${o.checkpointDir}: the checkpoint belongs to a different run (model, data, LoRA or optimizer settings changed); use a new --out folder or the original settings`);
      }
      validateAdapterAgainst(cfg, run.adapter, lora, `${o.checkpointDir}/adapter.safetensors`);
      adapter = run.adapter;
      anchor = run.anchor ?? anchor;
      optimizer.loadState(run.optimizer);
      step = run.state.step;
      position = run.state.position;
      lossPerStep.push(...run.state.lossPerStep);
      gradNormPerStep.push(...run.state.gradNormPerStep);
      tokensBefore = run.state.tokens;
      secondsBefore = run.state.trainSeconds;
      resumedFromStep = step;
    }
  }
  const trainable = trainableKeys(adapter, lora);
  const params = new Map(trainable.map((k) => [k, adapter.get(k)!.data]));
  const anchorData = anchor ? new Map([...anchor].map(([k, t]) => [k, t.data])) : null;

  const checkpoint = (seconds: number, tokens: number) => {
    if (!o.checkpointDir) return;
    saveRunCheckpoint(
      o.checkpointDir,
      { fingerprint, step, totalSteps, position, lossPerStep, gradNormPerStep, tokens, trainSeconds: seconds, optimizer: { kind: optimizer.opts.kind, step: optimizer.stepCount } },
      adapter, optimizer.exportState(), anchor,
    );
  };

  // ---- loop --------------------------------------------------------------------------------
  const make = o.sessionFactory ?? (await defaultSessionFactory());
  const session = await make(ckpt, lora, { batch: microBatch, seq, device: o.device ?? 'cpu', quantize: o.quantize ?? 'none', recompute: o.recompute ?? false, log: o.log });
  let tokens = 0;
  let trainMs = 0;
  let interrupted = false;
  const t0 = performance.now();
  try {
    while (step < totalSteps) {
      if (o.signal?.aborted) {
        interrupted = true;
        break;
      }
      const ts = performance.now();
      // gather this step's micro-batches first: the loss is a mean over all their counted tokens
      const micro: { batch: PackedBatch; dropoutSeed: number }[] = [];
      for (let i = 0; i < accumulation; i++) {
        let list = batchesOf(position.epoch);
        if (position.index >= list.length) {
          position = { epoch: position.epoch + 1, index: 0, micro: position.micro };
          list = batchesOf(position.epoch);
        }
        micro.push({ batch: list[position.index], dropoutSeed: deriveSeed(seed, 'dropout', position.micro) });
        position = { ...position, index: position.index + 1, micro: position.micro + 1 };
      }
      const denom = micro.reduce((s, m) => s + m.batch.countedTokens, 0);
      const grads = new Map<string, Float32Array>();
      let loss = 0;
      let stepTokens = 0;
      if (denom > 0) {
        for (const m of micro) {
          const r = await session.run(m.batch, adapter, { lossDenominator: denom, dropoutSeed: m.dropoutSeed });
          if (!Number.isFinite(r.loss)) throw fail('FEDLORA_ERR_TRAINING', `step ${step + 1}: loss is ${r.loss} (diverged; lower the learning rate or enable --max-grad-norm)`);
          loss += r.loss;
          accumulate(grads, r.grads, trainable);
          stepTokens += m.batch.realTokens;
        }
        for (const k of trainable) if (!grads.has(k)) throw fail('FEDLORA_ERR_TRAINING', `the training session returned no gradient for ${k}`);
        if (anchorData) addProximal(grads, params, anchorData, proxMu);
      }
      const gradNorm = denom > 0 ? clipGradNorm(grads, o.maxGradNorm ?? 0) : 0;
      if (!Number.isFinite(gradNorm)) throw fail('FEDLORA_ERR_TRAINING', `step ${step + 1}: gradient norm is ${gradNorm}`);
      const lr = lrAt(step, sched);
      if (denom > 0) optimizer.step(params, grads, lr);
      step += 1;
      lossPerStep.push(loss);
      gradNormPerStep.push(gradNorm);
      tokens += stepTokens;
      trainMs += performance.now() - ts;
      const tps = trainMs > 0 ? (tokens / trainMs) * 1000 : 0;
      if (o.checkpointDir && o.checkpointEvery && step % o.checkpointEvery === 0 && step < totalSteps) checkpoint(secondsBefore + trainMs / 1000, tokensBefore + tokens);
      o.onProgress?.({ step, totalSteps, loss, lr, tokensPerSecond: tps, gradNorm, elapsedMs: performance.now() - t0 });
    }
    if (step < totalSteps) interrupted = true;
    checkpoint(secondsBefore + trainMs / 1000, tokensBefore + tokens);
  } catch (e) {
    if (isFedloraError(e)) throw e;
    throw fail('FEDLORA_ERR_TRAINING', `training step ${step + 1} failed: ${(e as Error).message}`);
  } finally {
    await session.release();
  }
  const allTokens = tokensBefore + tokens;
  const allSeconds = secondsBefore + trainMs / 1000;
  return {
    adapter,
    interrupted,
    metrics: {
      lossPerStep, gradNormPerStep, tokensPerSecond: allSeconds > 0 ? allTokens / allSeconds : 0, steps: step, examples: examples.length, tokens: allTokens,
      seq, microBatch, accumulation, resumedFromStep, quantize: o.quantize ?? 'none', recompute: o.recompute ?? false,
      peakRssBytes: process.resourceUsage().maxRSS * 1024,
    },
  };
}
