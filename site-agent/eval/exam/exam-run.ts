// Scoring an exam with a model: by log-likelihood (every option scored after the prompt), by
// generation (a greedy answer read back to a letter), or both; each question timed end to end.
// The model comes in as an ExamModel so the CLI (a model folder and an adapter folder) and the site
// agent (its loaded base model and a job's adapter) run the same code (engineExamModel binds the
// engine). Only the figures (exam-figures.ts) leave a site.
import { generateIds, scoreChoices, type AdapterWeights, type Checkpoint, type Device, type LoraConfig, type QuantMode, type Tokenizer } from '../../engine/index.ts';
import { softmax } from '../metrics/choice-figures.ts';
import type { Figure } from '../metrics/figure.ts';
import type { ExamFile, ExamItem } from './exam-file.ts';
import { answerOf, examPrompt, optionContinuation } from './exam-prompt.ts';
import { examFigures, type ExamOutcome } from './exam-figures.ts';

export interface ExamModel {
  /** The user's turn in the chat template with the generation prompt, as token ids. */
  promptIds(text: string): number[];
  encode(text: string): number[];
  decode(ids: number[]): string;
  /** Mean per-token log-probability of each continuation after the prompt. */
  scoreOptions(prompt: number[], options: number[][]): Promise<number[]>;
  /** Greedy new token ids after the prompt. */
  generate(prompt: number[], maxNewTokens: number): Promise<number[]>;
}

export function engineExamModel(ckpt: Checkpoint, tok: Tokenizer, adapter: AdapterWeights | null, lora: LoraConfig | null, session: { device: Device; quantize?: QuantMode }): ExamModel {
  const withLora = adapter ? lora : null;
  return {
    promptIds: (text) => tok.encode(tok.applyChatTemplate([{ role: 'user', content: text }], { addGenerationPrompt: true }), { addSpecialTokens: false }),
    encode: (text) => tok.encode(text, { addSpecialTokens: false }),
    decode: (ids) => tok.decode(ids, { skipSpecialTokens: true }),
    scoreOptions: async (prompt, options) => (await scoreChoices(ckpt, adapter, withLora, prompt, options, { ...session, normalize: true })).meanLogLikelihoods,
    generate: (prompt, maxNewTokens) => generateIds(ckpt, adapter, withLora, prompt, { ...session, maxNewTokens }),
  };
}

export type ExamMode = 'loglik' | 'generate' | 'both';

export interface ItemResult {
  line: number;
  id: string;
  subject: string;
  answer: string;
  /** Log-likelihood: the chosen letter and the options' probabilities. */
  loglik?: { chosen: string; probs: number[]; seconds: number };
  /** Generation: the text, the letter read from it (null: none), seconds. */
  generate?: { text: string; chosen: string | null; seconds: number };
}

export interface ExamScores {
  loglik?: ExamOutcome[];
  generate?: ExamOutcome[];
  items: ItemResult[];
}

export async function scoreExam(model: ExamModel, items: ExamItem[], o: { mode: ExamMode; maxNewTokens: number; onProgress?: (done: number, total: number) => void }): Promise<ExamScores> {
  const out: ExamScores = { items: [] };
  if (o.mode !== 'generate') out.loglik = [];
  if (o.mode !== 'loglik') out.generate = [];
  for (const [k, item] of items.entries()) {
    const prompt = model.promptIds(examPrompt(item));
    const r: ItemResult = { line: item.line, id: item.id, subject: item.subject, answer: item.letters[item.answer] };
    if (out.loglik) {
      const t = performance.now();
      const scores = await model.scoreOptions(prompt, item.options.map((_, i) => model.encode(optionContinuation(item, i))));
      const seconds = (performance.now() - t) / 1000;
      const probs = softmax(scores);
      let chosen = 0;
      for (let i = 1; i < scores.length; i++) if (scores[i] > scores[chosen]) chosen = i;
      out.loglik.push({ subject: item.subject, answer: item.answer, chosen, probs, seconds });
      r.loglik = { chosen: item.letters[chosen], probs, seconds };
    }
    if (out.generate) {
      const t = performance.now();
      const text = model.decode(await model.generate(prompt, o.maxNewTokens));
      const seconds = (performance.now() - t) / 1000;
      const chosen = answerOf(text, item);
      out.generate.push({ subject: item.subject, answer: item.answer, chosen, probs: null, seconds });
      r.generate = { text, chosen: chosen === null ? null : item.letters[chosen], seconds };
    }
    out.items.push(r);
    o.onProgress?.(k + 1, items.length);
  }
  return out;
}

/** The figures of a scored exam (withheld below minCount; seeded bootstrap labelled by site and exam). */
export function examResults(exam: ExamFile, s: ExamScores, o: { minCount: number; resamples: number; seed: number; label: string }): Figure[] {
  const bootstrap = (mode: string) => ({ resamples: o.resamples, seed: o.seed, label: `${o.label}:exam:${exam.name}:${mode}` });
  return [
    ...(s.loglik ? examFigures(s.loglik, 'loglik', { minCount: o.minCount, bootstrap: bootstrap('loglik') }) : []),
    ...(s.generate ? examFigures(s.generate, 'generate', { minCount: o.minCount, bootstrap: bootstrap('generate') }).filter((f) => f.name !== 'exam_items' || !s.loglik) : []),
  ];
}
