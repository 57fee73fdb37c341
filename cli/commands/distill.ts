// `fedlora distill`: train a student's LoRA adapter on a mix of cross-entropy and KL divergence to a
// teacher's next-token distribution (site-agent/engine/distill/). Writes the PEFT adapter (as
// `fedlora train` does) and metrics.json (loss, CE and KL per step, settings, the teacher store).

import { existsSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { CliGroups } from '../groups.ts';
import { fail } from '../../shared/errors.ts';
import type { Device, LoraConfig } from '../../site-agent/engine/index.ts';
import { formatProgress, intFlag, modelDirFlag, numFlag, oneOf, quantizeFlag, targetsFlag } from './model.ts';
import { deviceOption, loraShapeOptions, quantizeOption, trainingLoopOptions, withOptions } from '../engine-options.ts';

interface DistillFlags {
  teacher: string; teacherAdapter?: string; student: string; data: string; out: string; steps?: string; epochs?: string;
  topK: string; temperature: string; kdAlpha: string; teacherCache?: string;
  rank: string; alpha: string; targets: string; lr: string; warmup: string; batchTokens?: string; maxSeqLen: string; seed: string; initSeed: string;
  maxGradNorm: string; initAdapter?: string; device: string; quantize: string;
}

async function distillAction(o: DistillFlags): Promise<void> {
  const teacher = modelDirFlag(o.teacher, '--teacher');
  const student = modelDirFlag(o.student, '--student');
  const data = resolve(o.data);
  if (!existsSync(data)) throw fail('FEDLORA_ERR_NOT_FOUND', `--data ${data}: file does not exist`);
  if (o.steps !== undefined && o.epochs !== undefined) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', 'give --steps or --epochs, not both');
  const lora: LoraConfig = {
    r: intFlag(o.rank, '--rank', { min: 1 })!, alpha: numFlag(o.alpha, '--alpha', { positive: true })!, targets: targetsFlag(o.targets),
    dropout: 0, useRslora: false, freezeA: false, initSeed: intFlag(o.initSeed, '--init-seed')!,
  };
  const kdAlpha = numFlag(o.kdAlpha, '--kd-alpha', { min: 0 })!;
  if (kdAlpha > 1) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--kd-alpha ${o.kdAlpha}: must be in [0, 1]`);
  const engine = await import('../../site-agent/engine/index.ts');
  const teacherAdapter = o.teacherAdapter ? (() => { const p = engine.readPeftAdapter(resolve(o.teacherAdapter)); return { weights: p.weights, lora: engine.loraOfPeft(p.config) }; })() : null;
  const out = resolve(o.out);
  const tty = process.stderr.isTTY;
  const r = await engine.distill({
    teacher, teacherAdapter, student, data, lora,
    topK: intFlag(o.topK, '--top-k', { min: 1 }), temperature: numFlag(o.temperature, '--temperature', { positive: true }), alpha: kdAlpha,
    initialAdapter: o.initAdapter ? engine.readPeftAdapter(resolve(o.initAdapter)).weights : null,
    lr: numFlag(o.lr, '--lr', { positive: true })!, warmupSteps: intFlag(o.warmup, '--warmup', { min: 0 }),
    steps: intFlag(o.steps, '--steps', { min: 1 }), epochs: numFlag(o.epochs, '--epochs', { positive: true }),
    batchTokens: intFlag(o.batchTokens, '--batch-tokens', { min: 1 }), maxSeqLen: intFlag(o.maxSeqLen, '--max-seq-len', { min: 2 }),
    seed: intFlag(o.seed, '--seed'), maxGradNorm: numFlag(o.maxGradNorm, '--max-grad-norm', { min: 0 }),
    device: oneOf(o.device, '--device', ['cpu', 'cuda', 'webgpu'] as const) as Device, quantize: quantizeFlag(o.quantize),
    teacherCacheDir: o.teacherCache ? resolve(o.teacherCache) : undefined,
    log: (msg) => process.stderr.write(`${msg}\n`),
    onProgress: (ev) => process.stderr.write(tty ? `\r${formatProgress(ev)}  ` : `${formatProgress(ev)}\n`),
  });
  if (tty) process.stderr.write('\n');
  engine.writePeftAdapter(out, r.adapter, { r: lora.r, alpha: lora.alpha, targets: lora.targets, dropout: 0, useRslora: false, baseModel: student });
  const metricsFile = join(out, 'metrics.json');
  writeFileSync(metricsFile, JSON.stringify({ ...r.metrics, data, lora }, null, 2));
  const m = r.metrics;
  process.stdout.write(
    `distilled ${teacher}${o.teacherAdapter ? ` + ${resolve(o.teacherAdapter)}` : ''} into ${student}: ${m.train.steps} steps, KL ${m.klPerStep[0]?.toFixed(4)} -> ${m.klPerStep.at(-1)?.toFixed(4)}, CE ${m.cePerStep[0]?.toFixed(4)} -> ${m.cePerStep.at(-1)?.toFixed(4)}\n`
    + `teacher top-${m.settings.topK} at T=${m.settings.temperature}: ${m.teacherStore.reused ? 'reused' : 'stored'} in ${m.teacherStore.dir}\nadapter: ${out}\nmetrics: ${metricsFile}\n`,
  );
}

export function register(g: CliGroups): void {
  const cmd = g.program
    .command('distill')
    .description('distil a teacher model into a student\'s LoRA adapter: loss = (1-α)·CE + α·T²·KL(teacher^T || student^T) over the teacher\'s top-k (+ the rest as one bucket), computed once and stored')
    .requiredOption('--teacher <dir>', 'teacher model folder (must share the student\'s tokenizer)')
    .option('--teacher-adapter <dir>', 'PEFT adapter applied to the teacher')
    .requiredOption('--student <dir>', 'student base model folder')
    .requiredOption('--data <file>', 'training data (.jsonl), tokenised with the shared tokenizer')
    .requiredOption('--out <dir>', 'output: the student\'s PEFT adapter + metrics.json (loss, CE, KL per step, settings)')
    .option('--top-k <k>', 'teacher tokens stored per position (the rest is kept as one bucket)', '32')
    .option('--temperature <T>', 'softmax temperature of teacher and student in the KL term', '2')
    .option('--kd-alpha <a>', 'weight α of the KL term (1-α on cross-entropy)', '0.5')
    .option('--teacher-cache <dir>', 'where teacher stores are kept (default: <graph cache>/teacher-logits); a second run with the same teacher, adapter, data, k and T reuses its store')
    .option('--init-adapter <dir>', 'start the student from this PEFT adapter')
    .option('--seed <n>', 'seed for data order', '0');
  withOptions(cmd, loraShapeOptions('student LoRA'));
  withOptions(cmd, trainingLoopOptions());
  cmd.addOption(deviceOption()).addOption(quantizeOption()).action(distillAction);
}
