// The engine's TypeScript API: what the site agent (federation), the CLI and the demo call.
// One facade over the checkpoint reader, tokenizer, data loader, ONNX Runtime sessions, trainer,
// evaluation, PEFT I/O and merging, so callers never reach into the engine's internals.

import { fail } from '../../shared/errors.ts';
import { readPeftAdapter, validateAdapterAgainst, writePeftAdapter, type PeftAdapter, type PeftSettings } from '../../shared/peft.ts';
import { readCheckpoint } from './checkpoint/read.ts';
import { writeTinyModel, type TinyModelInfo, type TinyModelOptions } from './checkpoint/tiny.ts';
import { generate as generateIds, releaseInferenceSessions, scoreLogprobs, type GenerateOptions } from './infer.ts';
import { mergeAdapter as mergeAdapterFiles, type MergeResult } from './merge.ts';
import { loadTokenizer, type Tokenizer } from './tokenizer.ts';
import { evaluateLoss, scoreChoices, type ChoiceScores, type EvalResult } from './train/eval.ts';
import { initLoraAdapter } from './train/lora-init.ts';
import { trainLora, type TrainOptions, type TrainResult } from './train/trainer.ts';
import type { AdapterWeights, Checkpoint, Device, LoraConfig, ModelConfig, ProgressEvent } from './types.ts';

export type * from './types.ts';
export { readCheckpoint, loadTokenizer, readPeftAdapter, writePeftAdapter, initLoraAdapter, evaluateLoss, scoreChoices, releaseInferenceSessions };
export type { TrainOptions, TrainResult, EvalResult, ChoiceScores, PeftAdapter, PeftSettings, Tokenizer, TinyModelOptions, TinyModelInfo, MergeResult, GenerateOptions };
export { Optimizer } from './train/optim.ts';
export { lrAt } from './train/schedule.ts';
export { loadJsonlExamples } from './data/jsonl.ts';

/** Write a tiny randomly initialised model in HF format (tests, demos). */
export function initTinyModel(o: TinyModelOptions): TinyModelInfo {
  return writeTinyModel(o);
}

/** Fine-tune a LoRA adapter (see TrainOptions); progress via `onProgress`, stop via `signal`. */
export function train(o: TrainOptions): Promise<TrainResult> {
  return trainLora(o);
}

/** Merge a PEFT adapter into the base weights and write a full model folder. */
export function mergeAdapter(modelDir: string, adapterDir: string, outDir: string): MergeResult {
  return mergeAdapterFiles(modelDir, adapterDir, outDir);
}

/** LoraConfig of a PEFT adapter read from disk (not trained further: freezeA/initSeed irrelevant). */
export function loraOfPeft(cfg: PeftSettings): LoraConfig {
  return { r: cfg.r, alpha: cfg.alpha, targets: cfg.targets, dropout: cfg.dropout, useRslora: cfg.useRslora, freezeA: false, initSeed: 0 };
}

export interface LoadedModel {
  checkpoint: Checkpoint;
  config: ModelConfig;
  tokenizer: Tokenizer;
  adapter: AdapterWeights | null;
  lora: LoraConfig | null;
  encode(text: string): number[];
  decode(ids: number[]): string;
  /** log p(ids[t] | ids[..t]) per token; the first is null. */
  scoreTokens(ids: number[]): Promise<(number | null)[]>;
  /** Generated text after `prompt` (chat: wrap it as a user message with the chat template). */
  generate(prompt: string, o: { maxNewTokens: number; temperature?: number; topP?: number; seed?: number; chat?: boolean }): Promise<string>;
  release(): Promise<void>;
}

/** Open a model folder (and optionally a PEFT adapter folder, validated against the model). */
export async function loadModel(dir: string, opts: { adapter?: string | { weights: AdapterWeights; lora: LoraConfig }; device?: Device } = {}): Promise<LoadedModel> {
  const checkpoint = readCheckpoint(dir);
  const tokenizer = loadTokenizer(dir);
  let adapter: AdapterWeights | null = null;
  let lora: LoraConfig | null = null;
  if (typeof opts.adapter === 'string') {
    const p = readPeftAdapter(opts.adapter);
    lora = loraOfPeft(p.config);
    try {
      validateAdapterAgainst(checkpoint.config, p.weights, lora);
    } catch (e) {
      throw Object.assign(e as Error, { message: `${opts.adapter}: ${(e as Error).message} (model ${dir})` });
    }
    adapter = p.weights;
  } else if (opts.adapter) {
    adapter = opts.adapter.weights;
    lora = opts.adapter.lora;
    validateAdapterAgainst(checkpoint.config, adapter, lora);
  }
  const so = { device: opts.device ?? 'cpu' };
  return {
    checkpoint, config: checkpoint.config, tokenizer, adapter, lora,
    encode: (text) => tokenizer.encode(text),
    decode: (ids) => tokenizer.decode(ids),
    async scoreTokens(ids) {
      const [lp] = await scoreLogprobs(checkpoint, adapter, lora, [ids], so);
      return [...lp].map((x, i) => (i === 0 ? null : x));
    },
    async generate(prompt, o) {
      const text = o.chat ? tokenizer.applyChatTemplate([{ role: 'user', content: prompt }], { addGenerationPrompt: true }) : prompt;
      const ids = tokenizer.encode(text, { addSpecialTokens: !o.chat });
      if (ids.length === 0) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', 'generate: the prompt has no tokens');
      const out = await generateIds(checkpoint, adapter, lora, ids, { ...so, maxNewTokens: o.maxNewTokens, temperature: o.temperature, topP: o.topP, seed: o.seed });
      return tokenizer.decode(out, { skipSpecialTokens: true });
    },
    release: () => releaseInferenceSessions(),
  };
}

/** log p of each token of `text` (tokenised with the model's tokenizer); first is null. */
export async function scoreText(model: LoadedModel, text: string): Promise<{ tokens: number[]; logprobs: (number | null)[] }> {
  const tokens = model.encode(text);
  return { tokens, logprobs: await model.scoreTokens(tokens) };
}

/** Generate text with a loaded model (KV-cached). */
export function generateText(model: LoadedModel, prompt: string, o: { maxNewTokens: number; temperature?: number; topP?: number; seed?: number; chat?: boolean }): Promise<string> {
  return model.generate(prompt, o);
}

// ---- the site agent's local training (federation rounds) --------------------------------------

/** What the site agent asks for in one round (structurally site-agent/agent/trainers.ts's LocalTrainRequest). */
export interface FederationTrainRequest {
  modelDir: string;
  device: Device;
  lora: LoraConfig;
  train: {
    steps: number; // 0 = use epochs
    epochs: number;
    learningRate: number;
    optimizer: 'adamw' | 'sgd';
    batchTokens: number;
    seed: number;
    proxMu: number;
    weightDecay: number;
    warmupSteps: number;
    maxGradNorm: number;
  };
  initAdapter: AdapterWeights | null;
  trainFile: string;
  maxSeqLen: number;
  onProgress?: (ev: ProgressEvent) => void;
  signal?: AbortSignal;
}

export interface FederationTrainResult {
  adapter: AdapterWeights;
  numExamples: number;
  lossPerStep: number[];
  tokensPerSecond: number;
}

/** One round of local training from the global adapter. An abort rejects (the round's update is not sent). */
export async function trainForFederation(req: FederationTrainRequest): Promise<FederationTrainResult> {
  const t = req.train;
  const r = await trainLora({
    model: req.modelDir, data: req.trainFile, maxSeqLen: req.maxSeqLen, initialAdapter: req.initAdapter, lora: req.lora,
    optimizer: t.optimizer, lr: t.learningRate, weightDecay: t.weightDecay, warmupSteps: t.warmupSteps,
    steps: t.steps > 0 ? t.steps : undefined, epochs: t.steps > 0 ? undefined : t.epochs > 0 ? t.epochs : 1,
    batchTokens: t.batchTokens > 0 ? t.batchTokens : undefined, seed: t.seed, proxMu: t.proxMu, maxGradNorm: t.maxGradNorm,
    device: req.device, onProgress: req.onProgress, signal: req.signal,
  });
  if (r.interrupted) throw fail('FEDLORA_ERR_TRAINING', `local training was cancelled after step ${r.metrics.steps}`);
  return { adapter: r.adapter, numExamples: r.metrics.examples, lossPerStep: r.metrics.lossPerStep, tokensPerSecond: r.metrics.tokensPerSecond };
}
