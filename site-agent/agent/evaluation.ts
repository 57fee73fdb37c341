// Held-out evaluation at the site, in three parts with one definition of every metric:
//   planEvaluation  which parts of the evaluation set are large enough to report (a part with
//                   fewer items than evaluation.min_items is withheld: only the count leaves);
//   an Evaluator    scores the planned parts: the built-in engine (EngineEvaluator, here) or an
//                   external command (eval-command.ts) — it returns raw scores, not metrics;
//   siteMetrics     turns the scores into the aggregate figures that leave the site, each with
//                   its 95% bootstrap interval (the definitions: site-agent/eval/metrics/).
// So an external evaluator can neither change what a metric means nor report a withheld part.

import { createHash } from 'node:crypto';
import type { SiteConfig } from '../config.ts';
import type { AdapterWeights, LoraConfig } from '../../shared/lora/types.ts';
import { fail } from '../../shared/errors.ts';
import { evaluateLoss, scoreChoices, generateIds, type Checkpoint, type Example, type Tokenizer, type Device, type QuantMode } from '../engine/index.ts';
import type { ChatExample, ChoiceItem } from '../data/types.ts';
import type { AgentLogger } from './task-context.ts';
import type { Figure } from '../eval/metrics/figure.ts';
import { choiceFigures, softmax } from '../eval/metrics/choice-figures.ts';
import { generationFigures, heldOutFigures } from '../eval/metrics/text-figures.ts';
import type { BootstrapOptions } from '../eval/metrics/resample.ts';
import { encodeSubset } from '../../shared/metric-subset.ts';

/** A figure the site reports (value, count, 95% interval, subset): eval/metrics/figure.ts. */
export type SiteMetric = Figure;

export interface HeldOutItem {
  messages: ChatExample['messages'];
  /** Token ids and labels (loss only on assistant turns), as the engine trains on them. */
  example: Example;
  /** In a later data period: an earlier or a new case (its loss is also reported per subset data=). */
  data?: 'earlier' | 'new';
}

export interface ChoiceEvalItem {
  item: ChoiceItem;
  /** Chat prompt with the generation prompt, and each option, as token ids (no special tokens added). */
  prompt: number[];
  options: number[][];
}

export interface EvalSet {
  heldOut: HeldOutItem[];
  choices: ChoiceEvalItem[];
}

/** The parts to score; an empty part is withheld. */
export interface EvalPlan {
  heldOut: HeldOutItem[];
  choices: ChoiceEvalItem[];
  /** Items whose diagnosis is generated (greedy) and compared after normalisation. */
  generate: ChoiceEvalItem[];
  /** Size of the held-out set (always reported). */
  heldOutItems: number;
}

/** Raw scores of the planned parts (each present exactly when its part is not empty). The
 *  per-item fields give the intervals, calibration and latency quantiles; an evaluator without
 *  them gets the figures without those. */
export interface EvalScores {
  /** Mean -log p over the assistant tokens of all held-out items, the token count, the time taken. */
  heldOut?: { loss: number; tokens: number; seconds: number; items?: { nll: number; tokens: number }[] };
  /** Index of the option with the highest mean per-token log-probability, per item; those means
   *  per option (`scores`), and the seconds to each item's answer. */
  choices?: { predicted: number[]; seconds: number; scores?: number[][]; itemSeconds?: number[] };
  /** Generated text (special tokens removed) per item, new tokens in all, the time taken (and per item). */
  generate?: { texts: string[]; newTokens: number; seconds: number; itemSeconds?: number[] };
}

/** How the figures are made: withheld below minItems; bootstrap resamples and seed. */
export interface FigureOptions {
  minItems: number;
  resamples: number;
  seed: number;
}

export const figureOptionsOf = (cfg: SiteConfig['evaluation']): FigureOptions => ({ minItems: cfg.min_items, resamples: cfg.bootstrap.resamples, seed: cfg.bootstrap.seed });

export interface EvalRequest {
  plan: EvalPlan;
  /** null = the base model alone. */
  adapter: AdapterWeights | null;
  lora: LoraConfig;
}

export interface Evaluator {
  readonly kind: string;
  score(req: EvalRequest): Promise<EvalScores>;
}

/** Generation budget of one item: the longest option and room for a label or punctuation. */
export function maxNewTokensOf(c: ChoiceEvalItem): number {
  return Math.max(...c.options.map((o) => o.length)) + 16;
}

export function planEvaluation(set: EvalSet, cfg: SiteConfig['evaluation'], log: AgentLogger): EvalPlan {
  const min = cfg.min_items;
  if (set.heldOut.length < min) log.warn({ items: set.heldOut.length, min }, 'held-out set below evaluation.min_items: loss withheld');
  const gen = set.choices.slice(0, cfg.generate_items);
  return {
    heldOut: set.heldOut.length >= min ? set.heldOut : [],
    choices: set.choices.length >= min ? set.choices : [],
    generate: gen.length > 0 && gen.length >= Math.min(min, cfg.generate_items) ? gen : [],
    heldOutItems: set.heldOut.length,
  };
}

/** Names a part's bootstrap draws by its items: the same set at the same site is resampled the
 *  same way for every adapter (paired comparisons), different sites draw independently. */
function drawLabel(part: string, items: unknown[]): string {
  return `${part}:${createHash('sha256').update(JSON.stringify(items)).digest('hex').slice(0, 16)}`;
}

/** Per-item correctness of a plan's multiple-choice items (1 right, 0 not; the same rule as
 *  accuracy) and the label of their bootstrap draws: what a paired comparison of two adapters on
 *  the same items needs (paired-comparison.ts). It stays at the site; null when no item was scored. */
export interface ItemOutcomes {
  /** '' the held-out set, shared:<name> a consortium-wide set. */
  evalSet: string;
  draws: string;
  correct: number[];
}

export function choiceOutcomes(plan: EvalPlan, s: EvalScores, evalSet: string): ItemOutcomes | null {
  const c = s.choices;
  if (!plan.choices.length || !c) return null;
  return {
    evalSet,
    draws: drawLabel('choices', plan.choices.map((x) => x.item.prompt)),
    correct: plan.choices.map((x, i) => (x.item.options[c.predicted[i]] === x.item.label ? 1 : 0)),
  };
}

/** The figures of a scored plan, in the order they are reported (eval/metrics/ defines each). */
export function siteMetrics(plan: EvalPlan, s: EvalScores, evaluator: string, o: FigureOptions): SiteMetric[] {
  const missing = (part: string) => fail('FEDLORA_ERR_INTERNAL', `evaluator ${evaluator} returned no ${part} scores for a planned part`);
  const boot = (part: string, items: unknown[]) => ({ resamples: o.resamples, seed: o.seed, label: drawLabel(part, items) });
  const out: SiteMetric[] = [];
  if (plan.heldOut.length) {
    if (!s.heldOut) throw missing('held-out');
    out.push(...heldOutFigures(s.heldOut, boot('heldout', plan.heldOut.map((h) => h.messages))));
    out.push(...lossByDataAge(plan.heldOut, s.heldOut, o, boot));
  }
  if (plan.choices.length) {
    if (!s.choices) throw missing('multiple-choice');
    const c = s.choices;
    const outcomes = plan.choices.map((x, i) => ({
      gold: x.item.label, predicted: x.item.options[c.predicted[i]], answer: x.item.answer, chosen: c.predicted[i],
      probs: c.scores ? softmax(c.scores[i]) : null, seconds: c.itemSeconds?.[i] ?? null, subgroups: x.item.subgroups ?? {},
    }));
    const figs = choiceFigures(outcomes, { minCount: o.minItems, bootstrap: boot('choices', plan.choices.map((x) => x.item.prompt)) });
    if (!figs.some((f) => f.name === 'latency_ms')) figs.push({ name: 'latency_ms', subset: '', value: (c.seconds * 1000) / plan.choices.length, count: plan.choices.length });
    out.push(...figs);
  }
  if (plan.generate.length) {
    if (!s.generate) throw missing('generation');
    const g = s.generate;
    const hits = plan.generate.map((c, i) => normalizeDiagnosis(g.texts[i]) === normalizeDiagnosis(c.item.label));
    out.push(...generationFigures({ hits, newTokens: g.newTokens, seconds: g.seconds, itemSeconds: g.itemSeconds }, boot('generate', plan.generate.map((x) => x.item.prompt))));
  }
  out.push({ name: 'heldout_items', subset: '', value: plan.heldOutItems, count: plan.heldOutItems });
  return out;
}

/** Held-out loss of the earlier and the new cases apart (data=earlier, data=new), from the
 *  per-item scores; a part below minItems is withheld. Forgetting is the earlier cases' loss rising. */
function lossByDataAge(items: HeldOutItem[], s: NonNullable<EvalScores['heldOut']>, o: FigureOptions, boot: (part: string, items: unknown[]) => BootstrapOptions): SiteMetric[] {
  const per = s.items;
  if (!per || per.length !== items.length) return [];
  const out: SiteMetric[] = [];
  for (const age of ['earlier', 'new'] as const) {
    const ix = items.flatMap((h, i) => (h.data === age ? [i] : []));
    if (ix.length === 0 || ix.length < o.minItems) continue;
    const part = ix.map((i) => per[i]);
    const tokens = part.reduce((n, x) => n + x.tokens, 0);
    const loss = part.reduce((n, x) => n + x.nll, 0) / tokens;
    const figs = heldOutFigures({ loss, tokens, seconds: s.seconds, items: part }, boot(`heldout-${age}`, ix.map((i) => items[i].messages)));
    out.push(...figs.filter((f) => f.name === 'loss' || f.name === 'perplexity').map((f) => ({ ...f, subset: encodeSubset([['data', age]]) })));
  }
  return out;
}

/** The first line of a generated answer, without a "Diagnosis:"/"诊断：" label, case,
 *  punctuation or spaces — what two equal diagnoses share however they are written. */
export function normalizeDiagnosis(text: string): string {
  const first = text.normalize('NFKC').split('\n').map((l) => l.trim()).find((l) => l.length > 0) ?? '';
  return first
    .replace(/^(diagnosis|诊断)\s*[:：]\s*/i, '')
    .toLowerCase()
    .replace(/[\s\p{P}]+/gu, '');
}

/** The built-in evaluator: the ONNX Runtime engine on the site's base model, with the base
 *  weights in the precision the site trains with (model.quantize), so evaluation fits where
 *  training fits. */
export class EngineEvaluator implements Evaluator {
  readonly kind = 'engine';
  constructor(private readonly model: { checkpoint(): Checkpoint; tokenizer(): Tokenizer }, private readonly device: Device, private readonly quantize: QuantMode = 'none') {}

  async score({ plan, adapter, lora }: EvalRequest): Promise<EvalScores> {
    const ckpt = this.model.checkpoint();
    const withLora = adapter ? lora : null;
    const opts = { device: this.device, quantize: this.quantize };
    const out: EvalScores = {};
    if (plan.heldOut.length) {
      const t0 = performance.now();
      const r = await evaluateLoss(ckpt, adapter, withLora, plan.heldOut.map((h) => h.example), opts);
      out.heldOut = { loss: r.loss, tokens: r.tokens, seconds: (performance.now() - t0) / 1000, items: r.perExample };
    }
    if (plan.choices.length) {
      const t0 = performance.now();
      const predicted: number[] = [], scores: number[][] = [], itemSeconds: number[] = [];
      for (const c of plan.choices) {
        const t = performance.now();
        const r = await scoreChoices(ckpt, adapter, withLora, c.prompt, c.options, { ...opts, normalize: true });
        itemSeconds.push((performance.now() - t) / 1000);
        predicted.push(r.best);
        scores.push(r.meanLogLikelihoods);
      }
      out.choices = { predicted, seconds: (performance.now() - t0) / 1000, scores, itemSeconds };
    }
    if (plan.generate.length) {
      const tok = this.model.tokenizer();
      const t0 = performance.now();
      const texts: string[] = [], itemSeconds: number[] = [];
      let newTokens = 0;
      for (const c of plan.generate) {
        const t = performance.now();
        const ids = await generateIds(ckpt, adapter, withLora, c.prompt, { maxNewTokens: maxNewTokensOf(c), ...opts });
        newTokens += ids.length;
        texts.push(tok.decode(ids, { skipSpecialTokens: true }));
        itemSeconds.push((performance.now() - t) / 1000);
      }
      out.generate = { texts, newTokens, seconds: (performance.now() - t0) / 1000, itemSeconds };
    }
    return out;
  }
}
