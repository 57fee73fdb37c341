// Engine commands: `fedlora model init-tiny|init-random|score|merge`, `fedlora train`, `fedlora generate`.
// The engine modules are imported inside each action, so a problem in one engine file never
// breaks unrelated commands of the CLI (they all share this command tree).

import { existsSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { CliGroups } from '../groups.ts';
import { fail } from '../../shared/errors.ts';
import { ALL_TARGETS } from '../../shared/lora/keys.ts';
import type { Arch, LoraConfig, LoraTarget } from '../../shared/lora/types.ts';
import type { Device, ProgressEvent, QuantMode, WeightDtype } from '../../site-agent/engine/index.ts';
import { adapterOption, deviceOption, loraShapeOptions, quantizeOption, trainingLoopOptions, withOptions } from '../engine-options.ts';

// ---- flag parsing: every bad value names its flag ------------------------------------------
export function intFlag(v: string | undefined, flag: string, opts: { min?: number } = {}): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!/^-?\d+$/.test(v.trim()) || !Number.isSafeInteger(n)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `${flag} ${JSON.stringify(v)}: expected an integer`);
  if (opts.min !== undefined && n < opts.min) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `${flag} ${v}: must be >= ${opts.min}`);
  return n;
}
export function numFlag(v: string | undefined, flag: string, opts: { min?: number; positive?: boolean } = {}): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (v.trim() === '' || !Number.isFinite(n)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `${flag} ${JSON.stringify(v)}: expected a number`);
  if (opts.positive && !(n > 0)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `${flag} ${v}: must be > 0`);
  if (opts.min !== undefined && n < opts.min) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `${flag} ${v}: must be >= ${opts.min}`);
  return n;
}
export function oneOf<T extends string>(v: string | undefined, flag: string, allowed: readonly T[]): T | undefined {
  if (v === undefined) return undefined;
  if (!allowed.includes(v as T)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `${flag} ${JSON.stringify(v)}: expected one of ${allowed.join(', ')}`);
  return v as T;
}
/** "5GB", "500MB", "2GiB" or a byte count (decimal units like huggingface_hub). */
export function sizeFlag(v: string, flag: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?\s*$/i.exec(v);
  const units: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4 };
  const n = m ? Math.floor(Number(m[1]) * units[(m[2] ?? 'b').toLowerCase()]) : NaN;
  if (!(n > 0)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `${flag} ${JSON.stringify(v)}: expected a size such as 5GB, 500MB or a byte count`);
  return n;
}
export function quantizeFlag(v: string): QuantMode {
  return oneOf(v.toLowerCase(), '--quantize', ['none', 'int8', 'int4'] as const)!;
}
/** Engine notes (e.g. the one-time weight preparation) go to stderr, never into a command's output. */
const note = (msg: string) => process.stderr.write(`${msg}\n`);
export function targetsFlag(v: string): LoraTarget[] {
  const ts = v.split(',').map((s) => s.trim()).filter(Boolean);
  if (ts.length === 0) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', '--targets is empty');
  for (const t of ts) if (!ALL_TARGETS.includes(t as LoraTarget)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--targets: "${t}" is not one of ${ALL_TARGETS.join(', ')}`);
  return [...new Set(ts)] as LoraTarget[];
}
export function modelDirFlag(v: string, flag = '--model'): string {
  const dir = resolve(v);
  if (!existsSync(dir)) throw fail('FEDLORA_ERR_MODEL_FILES', `${flag} ${dir}: folder does not exist`);
  if (!existsSync(join(dir, 'config.json'))) throw fail('FEDLORA_ERR_MODEL_FILES', `${flag} ${dir}: no config.json (not a Hugging Face model folder)`);
  return dir;
}

/** "step 3/10 [====      ] loss 2.3412 lr 1.0e-4 812 tok/s ETA 0:42" */
export function formatProgress(ev: ProgressEvent, stepsBefore = 0): string {
  const width = 20;
  const done = Math.round((ev.step / Math.max(1, ev.totalSteps)) * width);
  // elapsedMs counts this process only; a resumed run started at step `stepsBefore`
  const perStep = ev.elapsedMs / Math.max(1, ev.step - stepsBefore);
  const eta = Math.max(0, Math.round((perStep * (ev.totalSteps - ev.step)) / 1000));
  const mmss = `${Math.floor(eta / 60)}:${String(eta % 60).padStart(2, '0')}`;
  return `step ${ev.step}/${ev.totalSteps} [${'='.repeat(done)}${' '.repeat(width - done)}] loss ${ev.loss.toFixed(4)} lr ${ev.lr.toExponential(1)} ${Math.round(ev.tokensPerSecond)} tok/s ETA ${mmss}`;
}

interface TrainFlags {
  model: string; data: string; out: string; rank: string; alpha: string; targets: string; loraDropout: string; rslora?: boolean;
  optimizer: string; lr: string; weightDecay: string; warmup: string; steps?: string; epochs?: string; batchTokens?: string;
  microBatch: string; seq?: string; maxSeqLen: string; seed: string; initSeed: string; freezeA?: boolean; maxGradNorm: string; proxMu: string;
  device: string; resume?: boolean; checkpointEvery: string; initAdapter?: string; quantize: string; recompute?: boolean;
}

async function trainAction(o: TrainFlags): Promise<void> {
  const modelDir = modelDirFlag(o.model);
  const data = resolve(o.data);
  if (!existsSync(data)) throw fail('FEDLORA_ERR_NOT_FOUND', `--data ${data}: file does not exist`);
  if (o.steps !== undefined && o.epochs !== undefined) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', 'give --steps or --epochs, not both');
  const lora: LoraConfig = {
    r: intFlag(o.rank, '--rank', { min: 1 })!,
    alpha: numFlag(o.alpha, '--alpha', { positive: true })!,
    targets: targetsFlag(o.targets),
    dropout: numFlag(o.loraDropout, '--lora-dropout', { min: 0 })!,
    useRslora: !!o.rslora,
    freezeA: !!o.freezeA,
    initSeed: intFlag(o.initSeed, '--init-seed')!,
  };
  if (lora.dropout >= 1) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--lora-dropout ${o.loraDropout}: must be < 1`);
  const out = resolve(o.out);
  const { readCheckpoint, train, writePeftAdapter, readPeftAdapter } = await import('../../site-agent/engine/index.ts');
  const ckpt = readCheckpoint(modelDir);
  const initialAdapter = o.initAdapter ? readPeftAdapter(resolve(o.initAdapter)).weights : null;

  // SIGINT: finish the current step, checkpoint, exit 130 (a second Ctrl-C exits at once).
  const ac = new AbortController();
  let sigints = 0;
  const onSigint = () => {
    sigints += 1;
    if (sigints > 1) process.exit(130);
    process.stderr.write('\ninterrupt: finishing the current step and writing a checkpoint (Ctrl-C again to quit now)\n');
    ac.abort();
  };
  process.on('SIGINT', onSigint);
  const tty = process.stderr.isTTY;
  const checkpointDir = join(out, 'checkpoint');
  if (o.resume && !existsSync(join(checkpointDir, 'run_state.json'))) process.stderr.write(`note: --resume: no checkpoint in ${checkpointDir}; starting from step 0\n`);
  let result;
  let stepsBefore: number | undefined;
  try {
    result = await train({
      model: ckpt, data, lora, initialAdapter,
      optimizer: oneOf(o.optimizer, '--optimizer', ['adamw', 'sgd'] as const),
      lr: numFlag(o.lr, '--lr', { positive: true })!,
      weightDecay: numFlag(o.weightDecay, '--weight-decay', { min: 0 }),
      warmupSteps: intFlag(o.warmup, '--warmup', { min: 0 }),
      steps: intFlag(o.steps, '--steps', { min: 1 }),
      epochs: numFlag(o.epochs, '--epochs', { positive: true }),
      batchTokens: intFlag(o.batchTokens, '--batch-tokens', { min: 1 }),
      microBatch: intFlag(o.microBatch, '--micro-batch', { min: 1 }),
      seq: intFlag(o.seq, '--seq', { min: 2 }),
      maxSeqLen: intFlag(o.maxSeqLen, '--max-seq-len', { min: 2 }),
      seed: intFlag(o.seed, '--seed'),
      maxGradNorm: numFlag(o.maxGradNorm, '--max-grad-norm', { min: 0 }),
      proxMu: numFlag(o.proxMu, '--prox-mu', { min: 0 }),
      device: oneOf(o.device, '--device', ['cpu', 'cuda', 'webgpu'] as const) as Device,
      quantize: quantizeFlag(o.quantize), recompute: !!o.recompute, log: note,
      checkpointDir, checkpointEvery: intFlag(o.checkpointEvery, '--checkpoint-every', { min: 0 }), resume: !!o.resume,
      signal: ac.signal,
      onProgress: (ev) => {
        stepsBefore ??= ev.step - 1;
        const line = formatProgress(ev, stepsBefore);
        process.stderr.write(tty ? `\r${line}  ` : `${line}\n`);
      },
    });
  } finally {
    process.off('SIGINT', onSigint);
    if (tty) process.stderr.write('\n');
  }
  const metricsFile = join(out, 'train_metrics.json');
  writeFileSync(metricsFile, JSON.stringify({ ...result.metrics, interrupted: result.interrupted, lora, model: modelDir, data }, null, 2));
  if (result.interrupted) {
    process.stderr.write(`interrupted after step ${result.metrics.steps}: checkpoint written to ${checkpointDir}; continue with the same command plus --resume\n`);
    process.exitCode = 130;
    return;
  }
  writePeftAdapter(out, result.adapter, { r: lora.r, alpha: lora.alpha, targets: lora.targets, dropout: lora.dropout, useRslora: lora.useRslora, baseModel: modelDir });
  const last = result.metrics.lossPerStep.at(-1);
  process.stdout.write(`trained ${result.metrics.steps} steps on ${result.metrics.examples} examples (${result.metrics.tokens} tokens, ${Math.round(result.metrics.tokensPerSecond)} tok/s, peak RSS ${(result.metrics.peakRssBytes / 2 ** 30).toFixed(2)} GiB), final loss ${last?.toFixed(4)}\nadapter: ${out}\nmetrics: ${metricsFile}\n`);
}

export function register(g: CliGroups): void {
  g.model
    .command('init-tiny')
    .description('write a tiny randomly initialised model in Hugging Face format (for tests and demos)')
    .requiredOption('--arch <arch>', 'llama | qwen2')
    .requiredOption('--out <dir>', 'output folder')
    .option('--seed <n>', 'weight seed', '0')
    .option('--layers <n>', 'decoder layers', '2')
    .option('--hidden <n>', 'hidden size', '64')
    .option('--heads <n>', 'attention heads', '4')
    .option('--kv-heads <n>', 'key/value heads', '2')
    .option('--intermediate <n>', 'MLP size (default: ~2.7 x hidden)')
    .option('--vocab <n>', 'vocabulary size (default: what the tokenizer needs)')
    .option('--tokenizer <kind>', 'byte | deepseek', 'byte')
    .option('--dtype <dtype>', 'f32 | f16 | bf16', 'f32')
    .action(async (o: Record<string, string>) => {
      const { initTinyModel } = await import('../../site-agent/engine/index.ts');
      const arch = oneOf(o.arch, '--arch', ['llama', 'qwen2'] as const) as Arch;
      const dtype = oneOf(o.dtype.toLowerCase(), '--dtype', ['f32', 'f16', 'bf16'] as const)!.toUpperCase() as WeightDtype;
      const info = initTinyModel({
        arch, out: resolve(o.out), seed: intFlag(o.seed, '--seed')!, layers: intFlag(o.layers, '--layers', { min: 1 })!, hidden: intFlag(o.hidden, '--hidden', { min: 2 })!,
        heads: intFlag(o.heads, '--heads', { min: 1 })!, kvHeads: intFlag(o.kvHeads, '--kv-heads', { min: 1 })!, intermediate: intFlag(o.intermediate, '--intermediate', { min: 1 }),
        vocab: intFlag(o.vocab, '--vocab', { min: 2 }), dtype, tokenizer: oneOf(o.tokenizer, '--tokenizer', ['byte', 'deepseek'] as const),
      });
      const c = info.config;
      process.stdout.write(`wrote ${c.arch} model (${c.numLayers} layers, hidden ${c.hiddenSize}, heads ${c.numHeads}/${c.numKvHeads}, vocab ${c.vocabSize}, ${dtype}) to ${info.dir}\n`);
    });

  g.model
    .command('init-random')
    .description('write a randomly initialised checkpoint with the exact config of a public DeepSeek model (streamed, sharded like Hugging Face)')
    .requiredOption('--like <name>', 'deepseek-r1-distill-qwen-1.5b | deepseek-r1-distill-qwen-7b | deepseek-llm-7b | deepseek-coder-1.3b | ...')
    .requiredOption('--out <dir>', 'output folder')
    .option('--dtype <dtype>', 'bf16 | f16 | f32', 'bf16')
    .option('--seed <n>', 'weight seed', '0')
    .option('--layers <n>', 'keep only the first N decoder layers (default: all)')
    .option('--init <style>', 'realistic (trained-like scales) | hf (transformers init)', 'realistic')
    .option('--max-shard-size <size>', 'shard size, e.g. 5GB, 500MB or bytes', '5GB')
    .action(async (o: { like: string; out: string; dtype: string; seed: string; layers?: string; init: string; maxShardSize: string }) => {
      const engine = await import('../../site-agent/engine/index.ts');
      const dtype = oneOf(o.dtype.toLowerCase(), '--dtype', ['f32', 'f16', 'bf16'] as const)!.toUpperCase() as WeightDtype;
      const t0 = performance.now();
      const info = engine.initRandomModel({
        like: o.like, out: resolve(o.out), dtype, seed: intFlag(o.seed, '--seed')!, layers: intFlag(o.layers, '--layers', { min: 1 }),
        init: oneOf(o.init, '--init', ['realistic', 'hf'] as const), maxShardBytes: sizeFlag(o.maxShardSize, '--max-shard-size'),
      });
      const c = info.config;
      const shards = info.files.filter((f) => f.endsWith('.safetensors')).length;
      process.stdout.write(`wrote ${o.like} (${c.arch}, ${c.numLayers} layers, hidden ${c.hiddenSize}, heads ${c.numHeads}/${c.numKvHeads}, vocab ${c.vocabSize}) ` +
        `${(info.parameters / 1e9).toFixed(2)} B parameters, ${dtype}, ${(info.totalBytes / 1e9).toFixed(2)} GB in ${shards} file${shards > 1 ? 's' : ''} to ${info.dir} in ${((performance.now() - t0) / 1000).toFixed(0)} s\n`);
    });

  g.model
    .command('score')
    .description('log-probability of each token given the ones before it')
    .requiredOption('--model <dir>', 'model folder')
    .addOption(adapterOption())
    .option('--text <text>', 'text to score (tokenised with the model tokenizer)')
    .option('--ids <ids>', 'comma-separated token ids')
    .option('--json', 'print JSON {tokens, logprobs}')
    .addOption(quantizeOption())
    .action(async (o: { model: string; adapter?: string; text?: string; ids?: string; json?: boolean; quantize: string }) => {
      if ((o.text === undefined) === (o.ids === undefined)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', 'give exactly one of --text or --ids');
      const modelDir = modelDirFlag(o.model);
      const quantize = quantizeFlag(o.quantize);
      const engine = await import('../../site-agent/engine/index.ts');
      const model = await engine.loadModel(modelDir, { adapter: o.adapter ? resolve(o.adapter) : undefined, quantize, log: note });
      try {
        let ids: number[];
        if (o.ids !== undefined) {
          ids = o.ids.split(',').map((s, i) => {
            const n = Number(s.trim());
            if (!/^\d+$/.test(s.trim()) || n >= model.config.vocabSize) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--ids item ${i + 1} ${JSON.stringify(s)}: expected a token id in [0, ${model.config.vocabSize})`);
            return n;
          });
        } else ids = model.encode(o.text!);
        if (ids.length === 0) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', 'nothing to score: no tokens');
        const logprobs = await model.scoreTokens(ids);
        if (o.json) process.stdout.write(JSON.stringify({ tokens: ids, logprobs }) + '\n');
        else {
          const total = logprobs.reduce<number>((s, x) => s + (x ?? 0), 0);
          ids.forEach((id, i) => process.stdout.write(`${String(i).padStart(4)} ${String(id).padStart(7)} ${logprobs[i] === null ? '     -' : logprobs[i]!.toFixed(4)}\n`));
          process.stdout.write(`sum ${total.toFixed(4)}  mean ${(total / Math.max(1, ids.length - 1)).toFixed(4)}\n`);
        }
      } finally {
        await model.release();
      }
    });

  g.model
    .command('merge')
    .description('merge a LoRA adapter into the base weights (W + scaling·B·A) and write a full model folder')
    .requiredOption('--model <dir>', 'base model folder')
    .requiredOption('--adapter <dir>', 'PEFT adapter folder')
    .requiredOption('--out <dir>', 'output model folder')
    .action(async (o: { model: string; adapter: string; out: string }) => {
      const modelDir = modelDirFlag(o.model);
      const engine = await import('../../site-agent/engine/index.ts');
      await engine.mergeAdapter(modelDir, resolve(o.adapter), resolve(o.out));
      process.stdout.write(`merged ${resolve(o.adapter)} into ${modelDir} -> ${resolve(o.out)}\n`);
    });

  const train = g.program
    .command('train')
    .description('fine-tune a LoRA adapter on a JSONL file (chat, prompt/completion or token records)')
    .requiredOption('--model <dir>', 'base model folder')
    .requiredOption('--data <file>', 'training data (.jsonl)')
    .requiredOption('--out <dir>', 'output adapter folder (PEFT format) + train_metrics.json + checkpoint/');
  withOptions(train, loraShapeOptions());
  train
    .option('--lora-dropout <p>', 'LoRA dropout', '0')
    .option('--rslora', 'rank-stabilised scaling alpha/sqrt(r)')
    .option('--freeze-a', 'train only lora_B (A stays at its seeded init)')
    .option('--optimizer <name>', 'adamw | sgd', 'adamw')
    .option('--weight-decay <x>', 'weight decay', '0');
  withOptions(train, trainingLoopOptions());
  train
    .option('--micro-batch <n>', 'rows per micro-batch', '1')
    .option('--seq <n>', 'row length (default: longest example)')
    .option('--seed <n>', 'seed for data order and dropout', '0')
    .option('--prox-mu <x>', 'FedProx proximal weight (against the initial adapter)', '0')
    .option('--init-adapter <dir>', 'start from this PEFT adapter (e.g. the global one)')
    .addOption(deviceOption())
    .addOption(quantizeOption())
    .option('--recompute', 'recompute each layer\'s activations in the backward pass (less memory for long sequences, ~1/3 more compute)')
    .option('--checkpoint-every <n>', 'checkpoint every N steps (0 = only at the end or on Ctrl-C)', '0')
    .option('--resume', 'continue from OUT/checkpoint')
    .action(trainAction);

  g.program
    .command('generate')
    .description('generate text with the model (and an adapter), KV-cached')
    .requiredOption('--model <dir>', 'model folder')
    .addOption(adapterOption())
    .requiredOption('--prompt <text>', 'prompt')
    .option('--max-new-tokens <n>', 'tokens to generate', '32')
    .option('--temperature <t>', '0 = greedy', '0')
    .option('--seed <n>', 'sampling seed', '0')
    .option('--chat', 'wrap the prompt in the chat template as a user message')
    .addOption(quantizeOption())
    .action(async (o: { model: string; adapter?: string; prompt: string; maxNewTokens: string; temperature: string; seed: string; chat?: boolean; quantize: string }) => {
      const modelDir = modelDirFlag(o.model);
      const quantize = quantizeFlag(o.quantize);
      const engine = await import('../../site-agent/engine/index.ts');
      const model = await engine.loadModel(modelDir, { adapter: o.adapter ? resolve(o.adapter) : undefined, quantize, log: note });
      try {
        const text = await model.generate(o.prompt, {
          maxNewTokens: intFlag(o.maxNewTokens, '--max-new-tokens', { min: 1 })!,
          temperature: numFlag(o.temperature, '--temperature', { min: 0 })!,
          seed: intFlag(o.seed, '--seed')!,
          chat: !!o.chat,
        });
        process.stdout.write(text + '\n');
      } finally {
        await model.release();
      }
    });
}
