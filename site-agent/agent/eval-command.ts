// The external-evaluation contract (evaluator: { kind: command }): a site that trains with its own
// tool evaluates with it too. The agent writes an eval job folder, runs the command, reads back
// raw scores, and computes every metric itself (evaluation.ts), exactly as for the built-in
// engine. Reference implementation: deploy/trainers/peft_evaluator.py.
//
//   <evaldir>/job.json          what to score (below), written by the agent
//   <evaldir>/adapter/          the adapter in PEFT format (absent when scoring the base model)
//   <evaldir>/heldout.jsonl     {"messages": [...]} per line: score the assistant turns
//   <evaldir>/choices.jsonl     {"prompt": [...messages], "options": ["..", ..]} per line
//   <evaldir>/generate.jsonl    {"prompt": [...messages], "max_new_tokens": n} per line
//   the command runs with cwd = <evaldir> and FEDLORA_EVAL_JOB=<evaldir>/job.json
//   <evaldir>/out/scores.json   written by the command:
//     {"heldout":  {"loss": mean -log p over assistant tokens, "tokens": N, "seconds": s,
//                   "items": [{"nll": summed -log p of the item's assistant tokens, "tokens": n}]},
//      "choices":  {"predicted": [index of the option with the highest mean per-token log p], "seconds": s,
//                   "scores": [[mean per-token log p of each option]], "item_seconds": [s to each answer]},
//      "generate": {"texts": ["greedy continuation, special tokens removed"], "new_tokens": N, "seconds": s,
//                   "item_seconds": [s to each complete answer]}}
//   items / scores / item_seconds are optional: without them the figures come without their
//   bootstrap intervals, calibration (ECE, Brier) and latency quantiles.
// A part whose file is null in job.json (too few items: withheld) is not scored. Answers and
// labels never leave the agent: the evaluator sees prompts and options, not which one is right.
//
// job.json: {"contract": "fedlora-eval/1", "model_dir", "device", "quantize" (none|int8|int4, the
// site's model.quantize), "adapter_dir" | null,
// "lora": {r, alpha, target_modules, dropout, use_rslora} | null, "max_seq_len",
// "heldout_file" | null, "choices_file" | null, "generate_file" | null, "out_dir"}

import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { z } from 'zod';
import { fail } from '../../shared/errors.ts';
import { writePeftAdapter } from '../../shared/lora/peft.ts';
import type { Device, QuantMode } from '../engine/index.ts';
import { readOutputJson, runJobCommand } from './external-command.ts';
import type { SiteConfig } from '../config.ts';
import type { SiteModel } from './workspace.ts';
import { EngineEvaluator, maxNewTokensOf, type EvalPlan, type EvalRequest, type EvalScores, type Evaluator } from './evaluation.ts';

const EVAL_CONTRACT = 'fedlora-eval/1';

export interface CommandEvaluatorOptions {
  argv: string[];
  timeoutS: number;
  /** Where eval job folders are made (one per evaluation; removed once read back). */
  workRoot: string;
  modelDir: string;
  device: Device;
  /** The site's model.quantize, passed on in job.json (default none). */
  quantize?: QuantMode;
  maxSeqLen: number;
  /** The agent's: a stopping agent stops the evaluator too. */
  signal?: AbortSignal;
}

function writeJsonl(file: string, rows: unknown[]): string {
  writeFileSync(file, rows.map((r) => JSON.stringify(r)).join('\n') + '\n');
  return file;
}

/** Write the eval job folder for a plan; returns job.json's path. */
function writeEvalJob(dir: string, req: EvalRequest, o: Pick<CommandEvaluatorOptions, 'modelDir' | 'device' | 'quantize' | 'maxSeqLen'>): string {
  const { plan, adapter, lora } = req;
  const out = join(dir, 'out');
  mkdirSync(out, { recursive: true });
  const adapterDir = join(dir, 'adapter');
  if (adapter) writePeftAdapter(adapterDir, adapter, { r: lora.r, alpha: lora.alpha, targets: lora.targets, dropout: lora.dropout, useRslora: lora.useRslora, baseModel: o.modelDir });
  const job = {
    contract: EVAL_CONTRACT,
    model_dir: o.modelDir,
    device: o.device,
    quantize: o.quantize ?? 'none',
    adapter_dir: adapter ? adapterDir : null,
    lora: adapter ? { r: lora.r, alpha: lora.alpha, target_modules: lora.targets, dropout: lora.dropout, use_rslora: lora.useRslora } : null,
    max_seq_len: o.maxSeqLen,
    heldout_file: plan.heldOut.length ? writeJsonl(join(dir, 'heldout.jsonl'), plan.heldOut.map((h) => ({ messages: h.messages }))) : null,
    choices_file: plan.choices.length ? writeJsonl(join(dir, 'choices.jsonl'), plan.choices.map((c) => ({ prompt: c.item.prompt, options: c.item.options }))) : null,
    generate_file: plan.generate.length ? writeJsonl(join(dir, 'generate.jsonl'), plan.generate.map((c) => ({ prompt: c.item.prompt, max_new_tokens: maxNewTokensOf(c) }))) : null,
    out_dir: out,
  };
  const jobFile = join(dir, 'job.json');
  writeFileSync(jobFile, JSON.stringify(job, null, 2));
  return jobFile;
}

const seconds = z.number().finite().positive();
const ScoresSchema = z.object({
  heldout: z.object({
    loss: z.number().finite().nonnegative(), tokens: z.number().int().positive(), seconds,
    items: z.array(z.object({ nll: z.number().finite().nonnegative(), tokens: z.number().int().nonnegative() })).optional(),
  }).passthrough().optional(),
  choices: z.object({
    predicted: z.array(z.number().int().nonnegative()), seconds,
    scores: z.array(z.array(z.number().finite())).optional(), item_seconds: z.array(z.number().finite().nonnegative()).optional(),
  }).passthrough().optional(),
  generate: z.object({ texts: z.array(z.string()), new_tokens: z.number().int().nonnegative(), seconds, item_seconds: z.array(z.number().finite().nonnegative()).optional() }).passthrough().optional(),
}).passthrough();

/** Read <dir>/out/scores.json and check it against the plan it answers (every planned part,
 *  one answer per item, option indices in range). Parts that were not asked for are ignored. */
function readEvalScores(dir: string, plan: EvalPlan): EvalScores {
  const file = join(dir, 'out', 'scores.json');
  const s = readOutputJson(file, ScoresSchema, 'external evaluator', 'FEDLORA_ERR_EVALUATION');
  const out: EvalScores = {};
  const bad = (msg: string) => fail('FEDLORA_ERR_EVALUATION', `${file}: ${msg}`);
  if (plan.heldOut.length) {
    if (!s.heldout) throw bad(`"heldout" is missing; job.json asked for ${plan.heldOut.length} held-out items`);
    const items = s.heldout.items;
    if (items) {
      if (items.length !== plan.heldOut.length) throw bad(`heldout.items has ${items.length} entries for ${plan.heldOut.length} items`);
      const tok = items.reduce((a, x) => a + x.tokens, 0), nll = items.reduce((a, x) => a + x.nll, 0);
      if (tok !== s.heldout.tokens) throw bad(`heldout.items count ${tok} tokens, heldout.tokens says ${s.heldout.tokens}`);
      if (Math.abs(nll / tok - s.heldout.loss) > 1e-6 * Math.max(1, s.heldout.loss)) throw bad(`heldout.items give a loss of ${nll / tok}, heldout.loss says ${s.heldout.loss}`);
    }
    out.heldOut = { loss: s.heldout.loss, tokens: s.heldout.tokens, seconds: s.heldout.seconds, items };
  }
  if (plan.choices.length) {
    if (!s.choices) throw bad(`"choices" is missing; job.json asked for ${plan.choices.length} multiple-choice items`);
    const p = s.choices.predicted;
    if (p.length !== plan.choices.length) throw bad(`choices.predicted has ${p.length} answers for ${plan.choices.length} items`);
    p.forEach((k, i) => {
      if (k >= plan.choices[i].options.length) throw bad(`choices.predicted[${i}] = ${k}, but item ${i} has ${plan.choices[i].options.length} options`);
    });
    const sc = s.choices.scores;
    sc?.forEach((row, i) => {
      if (i >= plan.choices.length) return;
      if (row.length !== plan.choices[i].options.length) throw bad(`choices.scores[${i}] has ${row.length} scores, but item ${i} has ${plan.choices[i].options.length} options`);
      if (Math.max(...row) !== row[p[i]]) throw bad(`choices.scores[${i}]: the predicted option ${p[i]} does not have the highest score`);
    });
    if (sc && sc.length !== p.length) throw bad(`choices.scores has ${sc.length} rows for ${p.length} items`);
    const its = s.choices.item_seconds;
    if (its && its.length !== p.length) throw bad(`choices.item_seconds has ${its.length} entries for ${p.length} items`);
    out.choices = { predicted: p, seconds: s.choices.seconds, scores: sc, itemSeconds: its };
  }
  if (plan.generate.length) {
    if (!s.generate) throw bad(`"generate" is missing; job.json asked for ${plan.generate.length} generations`);
    if (s.generate.texts.length !== plan.generate.length) throw bad(`generate.texts has ${s.generate.texts.length} texts for ${plan.generate.length} items`);
    const its = s.generate.item_seconds;
    if (its && its.length !== plan.generate.length) throw bad(`generate.item_seconds has ${its.length} entries for ${plan.generate.length} items`);
    out.generate = { texts: s.generate.texts, newTokens: s.generate.new_tokens, seconds: s.generate.seconds, itemSeconds: its };
  }
  return out;
}

/** A site's own evaluator, run on an eval job folder per evaluation. */
export class CommandEvaluator implements Evaluator {
  readonly kind = 'command';
  constructor(private readonly o: CommandEvaluatorOptions) {}

  async score(req: EvalRequest): Promise<EvalScores> {
    mkdirSync(this.o.workRoot, { recursive: true });
    const dir = mkdtempSync(join(this.o.workRoot, 'eval-'));
    const jobFile = writeEvalJob(dir, req, this.o);
    await runJobCommand({
      argv: this.o.argv, cwd: dir, env: { FEDLORA_EVAL_JOB: jobFile }, timeoutS: this.o.timeoutS, signal: this.o.signal,
      what: 'external evaluator', timeoutField: 'evaluator.timeout_s', code: 'FEDLORA_ERR_EVALUATION',
    });
    const scores = readEvalScores(dir, req.plan);
    rmSync(dir, { recursive: true, force: true }); // kept after a failure, for the site admin to look into
    return scores;
  }
}

/** The site's evaluator from config.evaluator (the built-in engine by default). */
export function createEvaluator(cfg: SiteConfig, siteDir: string, model: SiteModel, signal?: AbortSignal): Evaluator {
  if (cfg.evaluator.kind === 'engine') return new EngineEvaluator(model, cfg.model.device, cfg.model.quantize);
  return new CommandEvaluator({
    argv: cfg.evaluator.command, timeoutS: cfg.evaluator.timeout_s, workRoot: join(siteDir, 'work'),
    modelDir: cfg.model.path, device: cfg.model.device, quantize: cfg.model.quantize, maxSeqLen: cfg.training.max_seq_len, signal,
  });
}
