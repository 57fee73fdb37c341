// Evaluation with the inference graphs (no backward): mean token loss on held-out examples and
// multiple-choice scoring by log-likelihood. Both use infer.ts's per-token log-probabilities,
// which apply LoRA (without dropout) when an adapter is given.

import { fail } from '../../../shared/errors.ts';
import { scoreLogprobs, type ScoreOptions } from '../infer.ts';
import type { AdapterWeights, LoraConfig } from '../../../shared/lora/types.ts';
import type { Checkpoint, Example } from '../types.ts';

export interface EvalResult {
  /** Mean of -log p(label) over counted positions (HF's causal-LM loss). */
  loss: number;
  tokens: number;
  /** Per example, in order: summed -log p over its counted positions and their number (the
   *  site bootstraps its loss interval over examples from these). */
  perExample: { nll: number; tokens: number }[];
}

/** Held-out loss: -mean log p(labels[t] | ids[..t-1]) over positions with labels[t] != -100, t >= 1. */
export async function evaluateLoss(
  ckpt: Checkpoint, adapter: AdapterWeights | null, lora: LoraConfig | null, examples: Example[], opts: ScoreOptions = {},
): Promise<EvalResult> {
  examples.forEach((ex, i) => {
    if (ex.labels.length !== ex.inputIds.length) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `example ${i}: ${ex.labels.length} labels for ${ex.inputIds.length} input ids`);
    ex.labels.forEach((l, t) => {
      // the scoring graph's target is the next input id; SFT labels are either that id or -100
      if (l !== -100 && l !== ex.inputIds[t]) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `example ${i}: labels[${t}] = ${l} differs from input_ids[${t}] = ${ex.inputIds[t]} (evaluation supports SFT labels: the id itself or -100)`);
    });
  });
  let sum = 0;
  let tokens = 0;
  const perExample: EvalResult['perExample'] = [];
  const chunk = 64; // bounded memory for big evaluation sets
  for (let s = 0; s < examples.length; s += chunk) {
    const part = examples.slice(s, s + chunk);
    const lps = await scoreLogprobs(ckpt, adapter, lora, part.map((e) => e.inputIds), opts);
    part.forEach((ex, i) => {
      let nll = 0, n = 0;
      for (let t = 1; t < ex.inputIds.length; t++) {
        if (ex.labels[t] === -100) continue;
        nll -= lps[i][t];
        n++;
      }
      perExample.push({ nll, tokens: n });
      sum += nll;
      tokens += n;
    });
  }
  if (tokens === 0) throw fail('FEDLORA_ERR_DATASET', 'evaluateLoss: the examples have no counted tokens (all labels are -100)');
  return { loss: sum / tokens, tokens, perExample };
}

export interface ChoiceScores {
  /** Sum of log p(choice tokens | prompt) per choice. */
  logLikelihoods: number[];
  /** Same, divided by the choice's token count (length-normalised). */
  meanLogLikelihoods: number[];
  /** Index of the best choice (by `normalize` ? mean : sum). */
  best: number;
}

/** Multiple choice: log-likelihood of each candidate continuation given the prompt -> argmax. */
export async function scoreChoices(
  ckpt: Checkpoint, adapter: AdapterWeights | null, lora: LoraConfig | null, promptIds: number[], choices: number[][],
  opts: ScoreOptions & { normalize?: boolean } = {},
): Promise<ChoiceScores> {
  if (promptIds.length === 0) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', 'scoreChoices: the prompt is empty');
  if (choices.length === 0) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', 'scoreChoices: no choices');
  choices.forEach((c, i) => { if (c.length === 0) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `scoreChoices: choice ${i} has no tokens`); });
  const lps = await scoreLogprobs(ckpt, adapter, lora, choices.map((c) => [...promptIds, ...c]), opts);
  const logLikelihoods = choices.map((c, i) => {
    let s = 0;
    for (let t = promptIds.length; t < promptIds.length + c.length; t++) s += lps[i][t];
    return s;
  });
  const meanLogLikelihoods = logLikelihoods.map((s, i) => s / choices[i].length);
  const by = opts.normalize ? meanLogLikelihoods : logLikelihoods;
  let best = 0;
  for (let i = 1; i < by.length; i++) if (by[i] > by[best]) best = i;
  return { logLikelihoods, meanLogLikelihoods, best };
}
