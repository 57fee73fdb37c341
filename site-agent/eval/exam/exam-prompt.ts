// How an exam question is put to the model and how its answer is read back, the same for every
// model: the question, its lettered options and one line asking for the letter (in Chinese when the
// question is Chinese), as the user's turn of the model's chat template.
//   log-likelihood: each option's continuation "B. <text>" after the prompt, scored by its mean
//                   per-token log-probability (length-normalised, as the held-out multiple choice);
//   generation:     greedy answer; its first line's first standalone option letter, else the option
//                   whose text the line holds; neither = unanswered (counted wrong).
import type { ExamItem } from './exam-file.ts';

const CJK = /[\u3400-\u9fff]/;

export function examPrompt(item: Pick<ExamItem, 'question' | 'letters' | 'options'>): string {
  const zh = CJK.test(item.question);
  const opts = item.letters.map((l, i) => `${l}. ${item.options[i]}`).join('\n');
  return `${item.question}\n\n${opts}\n\n${zh ? '请只回答正确选项的字母。' : 'Answer with the letter of the correct option.'}`;
}

export const optionContinuation = (item: Pick<ExamItem, 'letters' | 'options'>, i: number): string => `${item.letters[i]}. ${item.options[i]}`;

const squash = (s: string) => s.normalize('NFKC').toLowerCase().replace(/[\s\p{P}]+/gu, '');

/** The option a generated answer names, or null. */
export function answerOf(text: string, item: Pick<ExamItem, 'letters' | 'options'>): number | null {
  const line = text.normalize('NFKC').split('\n').map((l) => l.trim()).find((l) => l.length > 0) ?? '';
  for (const m of line.matchAll(/(?<![A-Za-z])([A-Za-z])(?![A-Za-z])/g)) {
    const i = item.letters.indexOf(m[1].toUpperCase());
    // a lone lower-case letter is a word ("a"), not an option
    if (i >= 0 && m[1] === m[1].toUpperCase()) return i;
  }
  const s = squash(line);
  if (s === '') return null;
  const hits = item.options.map((o, i) => [squash(o), i] as const).filter(([o]) => o !== '' && s.includes(o));
  // the longest option text the line holds (an option may be part of another)
  hits.sort((a, b) => b[0].length - a[0].length);
  return hits.length ? hits[0][1] : null;
}
