// The engine's TypeScript API: what the site agent (federation), the CLI and the demo call.
// One facade over the checkpoint reader, tokenizer, data loader, ONNX Runtime sessions, trainer,
// evaluation, PEFT I/O and merging, so callers never reach into the engine's internals.

import { fail } from '../../shared/errors.ts';
import { readPeftAdapter, validateAdapterAgainst, writePeftAdapter, type PeftAdapter, type PeftSettings } from '../../shared/lora/peft.ts';
import { readCheckpoint } from './checkpoint/read.ts';
import { writeTinyModel, type TinyModelInfo, type TinyModelOptions } from './checkpoint/tiny.ts';
import { planRandomCheckpoint, writeRandomCheckpoint, type RandomCheckpointOptions, type RandomCheckpointPlan } from './checkpoint/random-checkpoint.ts';
import { generate as generateIds, releaseInferenceSessions, scoreLogprobs, type GenerateOptions } from './infer.ts';
import { mergeAdapter as mergeAdapterFiles, type MergeResult } from './merge.ts';
import { loadTokenizer, type ChatMessage, type Tokenizer } from './tokenizer.ts';
import { streamGenerate, pendingStopPrefix, type StreamOptions, type StreamResult } from './stream.ts';
import { evaluateLoss, scoreChoices, type ChoiceScores, type EvalResult } from './train/eval.ts';
import { initLoraAdapter } from '../../shared/lora/init.ts';
import { trainLora, type TrainOptions, type TrainResult } from './train/trainer.ts';
import { distillLora, type DistillOptions, type DistillResult } from './distill/distill.ts';
import type { AdapterWeights, LoraConfig, ModelConfig } from '../../shared/lora/types.ts';
import type { Checkpoint, Device, ProgressEvent, QuantMode } from './types.ts';

export type * from './types.ts';
export type * from '../../shared/lora/types.ts';
export { readCheckpoint, loadTokenizer, readPeftAdapter, writePeftAdapter, initLoraAdapter, evaluateLoss, scoreChoices, releaseInferenceSessions, pendingStopPrefix };
export type { TrainOptions, TrainResult, EvalResult, ChoiceScores, PeftAdapter, PeftSettings, Tokenizer, TinyModelOptions, TinyModelInfo, MergeResult, GenerateOptions, ChatMessage, StreamOptions, StreamResult };
export { Optimizer } from './train/optim.ts';
export { lrAt } from './train/schedule.ts';
export { loadJsonlExamples } from './data/jsonl.ts';
export { chatToExample } from './data/examples.ts';
export { computeModelManifest, computeModelManifestAsync } from './checkpoint/read.ts';
export { buildByteTokenizer } from './checkpoint/byte-tokenizer.ts';
/** Token ids generated after `prompt` ids (KV-cached); see GenerateOptions. */
export { generateIds };

/** Write a tiny randomly initialised model in HF format (tests, demos). */
export function initTinyModel(o: TinyModelOptions): TinyModelInfo {
  return writeTinyModel(o);
}

/** Write a randomly initialised checkpoint with the exact config of a public DeepSeek model. */
export function initRandomModel(o: RandomCheckpointOptions): RandomCheckpointPlan & { dir: string; files: string[] } {
  return writeRandomCheckpoint(o);
}
export { planRandomCheckpoint, type RandomCheckpointOptions, type RandomCheckpointPlan };
export { MODEL_PRESETS, PRESET_NAMES } from './checkpoint/presets.ts';

/** Fine-tune a LoRA adapter (see TrainOptions); progress via `onProgress`, stop via `signal`. */
export function train(o: TrainOptions): Promise<TrainResult> {
  return trainLora(o);
}

export { DISTILL_DEFAULTS, type DistillOptions, type DistillResult, type DistillMetrics, type DistillSettings } from './distill/distill.ts';
export { tokenizerIdentity } from './distill/tokenizer-match.ts';
/** Distil a teacher model into a student's LoRA adapter (distill/distill.ts): teacher top-k stored once, then CE + KL training. */
export function distill(o: DistillOptions): Promise<DistillResult> {
  return distillLora(o);
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
  /** scoreTokens for many sequences at once, `batch` rows per session run (default 8; the
   *  canary audit scores thousands of candidates): out[i][0] = NaN, out[i][t] = log p(t | ..t). */
  scoreBatch(seqs: number[][], o?: { batch?: number }): Promise<Float32Array[]>;
  /** Generated text after `prompt` (chat: wrap it as a user message with the chat template). */
  generate(prompt: string, o: { maxNewTokens: number; temperature?: number; topP?: number; seed?: number; chat?: boolean }): Promise<string>;
  /** Token ids of a chat rendered with the model's chat template, ending with the assistant's turn. */
  chatPromptIds(messages: ChatMessage[]): number[];
  /** The chat template's text for `messages` with the generation prompt (what chatPromptIds tokenises). */
  chatPromptText(messages: ChatMessage[]): string;
  /** Generate after `promptIds`, streaming text through o.onText (stop sequences, cancellation). */
  stream(promptIds: number[], o: StreamOptions): Promise<StreamResult>;
  /** The same loaded base model (checkpoint, tokenizer, compiled sessions) with another adapter
   *  (null = none): a server switches adapter versions without reloading the base model. */
  withAdapter(adapter: { weights: AdapterWeights; lora: LoraConfig } | string | null): LoadedModel;
  release(): Promise<void>;
}

/** Open a model folder (and optionally a PEFT adapter folder, validated against the model). */
export async function loadModel(
  dir: string,
  opts: { adapter?: string | { weights: AdapterWeights; lora: LoraConfig }; device?: Device; threads?: number; quantize?: QuantMode; log?: (msg: string) => void } = {},
): Promise<LoadedModel> {
  return modelWith(readCheckpoint(dir), loadTokenizer(dir), opts.adapter ?? null, { device: opts.device ?? 'cpu', threads: opts.threads, quantize: opts.quantize ?? 'none', log: opts.log });
}

function readAdapterFor(checkpoint: Checkpoint, adapter: string | { weights: AdapterWeights; lora: LoraConfig } | null): { adapter: AdapterWeights | null; lora: LoraConfig | null } {
  if (adapter === null) return { adapter: null, lora: null };
  if (typeof adapter === 'string') {
    const p = readPeftAdapter(adapter);
    const lora = loraOfPeft(p.config);
    try {
      validateAdapterAgainst(checkpoint.config, p.weights, lora);
    } catch (e) {
      throw Object.assign(e as Error, { message: `${adapter}: ${(e as Error).message} (model ${checkpoint.dir})` });
    }
    return { adapter: p.weights, lora };
  }
  validateAdapterAgainst(checkpoint.config, adapter.weights, adapter.lora);
  return { adapter: adapter.weights, lora: adapter.lora };
}

function modelWith(checkpoint: Checkpoint, tokenizer: Tokenizer, which: string | { weights: AdapterWeights; lora: LoraConfig } | null, so: { device: Device; threads?: number; quantize?: QuantMode; log?: (msg: string) => void }): LoadedModel {
  const { adapter, lora } = readAdapterFor(checkpoint, which);
  const chatPromptText = (messages: ChatMessage[]) => tokenizer.applyChatTemplate(messages, { addGenerationPrompt: true });
  return {
    checkpoint, config: checkpoint.config, tokenizer, adapter, lora,
    encode: (text) => tokenizer.encode(text),
    decode: (ids) => tokenizer.decode(ids),
    async scoreTokens(ids) {
      const [lp] = await scoreLogprobs(checkpoint, adapter, lora, [ids], so);
      return [...lp].map((x, i) => (i === 0 ? null : x));
    },
    scoreBatch: (seqs, o = {}) => scoreLogprobs(checkpoint, adapter, lora, seqs, { ...so, batch: o.batch }),
    async generate(prompt, o) {
      const text = o.chat ? chatPromptText([{ role: 'user', content: prompt }]) : prompt;
      const ids = tokenizer.encode(text, { addSpecialTokens: !o.chat });
      if (ids.length === 0) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', 'generate: the prompt has no tokens');
      const out = await generateIds(checkpoint, adapter, lora, ids, { ...so, maxNewTokens: o.maxNewTokens, temperature: o.temperature, topP: o.topP, seed: o.seed });
      return tokenizer.decode(out, { skipSpecialTokens: true });
    },
    chatPromptText,
    // The template writes the BOS token itself.
    chatPromptIds: (messages) => tokenizer.encode(chatPromptText(messages), { addSpecialTokens: false }),
    stream: (promptIds, o) => streamGenerate(checkpoint, tokenizer, adapter, lora, promptIds, { ...o, ...so }),
    withAdapter: (next) => modelWith(checkpoint, tokenizer, next, so),
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
  /** Train on (1-alpha)·CE + alpha·T²·KL to this teacher's stored top-k (distill/distill.ts). */
  distill?: { teacherDir: string; topK: number; temperature: number; alpha: number };
  trainFile: string;
  maxSeqLen: number;
  /** The site's choice of base-weight precision (site config model.quantize) and recomputation. */
  quantize?: QuantMode;
  recompute?: boolean;
  onProgress?: (ev: ProgressEvent) => void;
  signal?: AbortSignal;
}

export interface FederationTrainResult {
  adapter: AdapterWeights;
  numExamples: number;
  lossPerStep: number[];
  tokensPerSecond: number;
  /** Peak resident memory of the training process, bytes (when the trainer reports it). */
  peakRssBytes?: number;
  /** Bits of the frozen base weights during training: 32, 8 or 4 (when known). */
  weightBits?: number;
  /** Distillation rounds: KL to the teacher per local step, and whether its stored top-k were reused. */
  distill?: { klPerStep: number[]; teacherStoreReused: boolean };
}

export const WEIGHT_BITS: Record<QuantMode, number> = { none: 32, int8: 8, int4: 4 };

/** One round of local training from the global adapter. An abort rejects (the round's update is not sent). */
export async function trainForFederation(req: FederationTrainRequest): Promise<FederationTrainResult> {
  const t = req.train;
  const run = (o: TrainOptions) => (req.distill
    ? distillLora({ ...o, teacher: req.distill.teacherDir, student: req.modelDir, data: req.trainFile, topK: req.distill.topK, temperature: req.distill.temperature, alpha: req.distill.alpha })
      .then((d) => ({ adapter: d.adapter, interrupted: d.interrupted, metrics: d.metrics.train, distill: { klPerStep: d.metrics.klPerStep, teacherStoreReused: d.metrics.teacherStore.reused } }))
    : trainLora(o).then((x) => ({ ...x, distill: undefined })));
  const r = await run({
    model: req.modelDir, data: req.trainFile, maxSeqLen: req.maxSeqLen, initialAdapter: req.initAdapter, lora: req.lora,
    optimizer: t.optimizer, lr: t.learningRate, weightDecay: t.weightDecay, warmupSteps: t.warmupSteps,
    steps: t.steps > 0 ? t.steps : undefined, epochs: t.steps > 0 ? undefined : t.epochs > 0 ? t.epochs : 1,
    batchTokens: t.batchTokens > 0 ? t.batchTokens : undefined, seed: t.seed, proxMu: t.proxMu, maxGradNorm: t.maxGradNorm,
    device: req.device, quantize: req.quantize, recompute: req.recompute, onProgress: req.onProgress, signal: req.signal,
  });
  if (r.interrupted) throw fail('FEDLORA_ERR_TRAINING', `local training was cancelled after step ${r.metrics.steps}`);
  return {
    adapter: r.adapter, numExamples: r.metrics.examples, lossPerStep: r.metrics.lossPerStep, tokensPerSecond: r.metrics.tokensPerSecond,
    peakRssBytes: r.metrics.peakRssBytes, weightBits: WEIGHT_BITS[r.metrics.quantize], ...(r.distill ? { distill: r.distill } : {}),
  };
}
