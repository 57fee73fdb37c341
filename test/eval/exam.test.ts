// The exam harness: MedQA / CMExam JSONL shapes read into questions (the committed sample, and a
// clear error naming file, line and field for each kind of malformed question); answers read back
// from generated text; the figures (accuracy with its interval against numpy's recomputation of the
// documented bootstrap, per subject, withheld below the minimum, ECE/Brier, latency quantiles) from
// a scripted model; and `fedlora eval exam` on a tiny model, whose log-likelihood choice is checked
// against the engine's own token log-probabilities of each prompt + option.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { readExamFile, type ExamItem } from '../../site-agent/eval/exam/exam-file.ts';
import { answerOf, examPrompt, optionContinuation } from '../../site-agent/eval/exam/exam-prompt.ts';
import { examResults, scoreExam, type ExamModel } from '../../site-agent/eval/exam/exam-run.ts';
import { initTinyModel, loadModel } from '../../site-agent/engine/index.ts';
import { PYTHON, requireTool, TORCH } from '../runner/reference-tools.ts';
import { runProcess } from '../runner/run-process.ts';

const run = promisify(execFile);
const SAMPLE = join(import.meta.dirname, '..', '..', 'site-agent', 'eval', 'exam', 'sample-exam.jsonl');
const REF = join(import.meta.dirname, 'ref', 'metrics_ref.py');
let dir: string;
const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');
function errorOf(f: () => unknown): { code?: string; message: string } {
  try {
    f();
  } catch (e) {
    return e as { code?: string; message: string };
  }
  throw new Error('expected an error');
}

beforeAll(() => {
  dir = mkdtempSync(join(tmpdir(), 'fedlora-exam-'));
});
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('exam files', () => {
  it('reads the sample: MedQA (options object, answer text or answer_idx, options as key/value list), plain lists, CMExam (lettered lines, Chinese)', () => {
    const exam = readExamFile(SAMPLE);
    expect(exam.name).toBe('sample-exam');
    expect(exam.items).toHaveLength(12);
    expect(exam.items.map((x) => x.letters[x.answer]).join('')).toBe('BAACBCBACBAA');
    expect(exam.items.map((x) => x.subject)).toEqual(['cardiology', 'respiratory', 'endocrinology', 'respiratory', 'cardiology', 'cardiology', '呼吸内科', '内分泌科', '心血管内科', '心血管内科', '呼吸内科', '内分泌科']);
    expect(exam.items[6]).toMatchObject({ line: 7, id: 'line-7', letters: ['A', 'B', 'C', 'D', 'E'], options: ['支气管哮喘', '慢性阻塞性肺疾病', '支气管扩张症', '肺结核', '间质性肺病'] });
    expect(exam.items[3].options[2]).toBe('Focal consolidation on chest X-ray');
    expect(examPrompt(exam.items[7])).toBe('2型糖尿病患者首选的口服降糖药是\n\nA. 二甲双胍\nB. 格列本脲\nC. 阿卡波糖\nD. 胰岛素\nE. 罗格列酮\n\n请只回答正确选项的字母。');
    expect(examPrompt(exam.items[2]).endsWith('\n\nAnswer with the letter of the correct option.')).toBe(true);
    expect(optionContinuation(exam.items[0], 1)).toBe('B. Right coronary artery');
  });

  const ok = { question: 'Q?', options: { A: 'one', B: 'two' }, answer: 'A' };
  const cases: [string, unknown, RegExp][] = [
    ['not JSON', '{"question": "Q?", ', /:3: not valid JSON/],
    ['an array', [1, 2], /:3: expected a JSON object per line/],
    ['no question', { options: ok.options, answer: 'A' }, /:3: field "question": missing/],
    ['empty question', { ...ok, Question: undefined, question: '  ' }, /:3: field "question": expected non-empty text/],
    ['no options', { question: 'Q?', answer: 'A' }, /:3: field "options": missing/],
    ['one option', { ...ok, options: ['only'] }, /:3: field "options": a question needs at least 2 options, got 1/],
    ['option without text', { ...ok, options: { A: 'one', B: '' } }, /:3: field "options": option B has no text/],
    ['bad key', { ...ok, options: { A: 'one', '2': 'two' } }, /:3: field "options": option key "2" is not a letter A-Z/],
    ['unlettered CMExam line', { ...ok, options: 'A one\ntwo' }, /:3: field "options": line "two" does not start with an option letter/],
    ['no answer', { question: 'Q?', options: ok.options }, /:3: field "answer": missing/],
    ['answer letter not an option', { ...ok, answer: 'D' }, /:3: field "answer": answer D is not one of the options A, B/],
    ['answer text not an option', { ...ok, answer: 'three' }, /:3: field "answer": "three" is neither an option letter \(A, B\) nor the text of an option/],
    ['several answers', { ...ok, Answer: 'AB', answer: undefined }, /:3: field "Answer": several answers \(AB\): only single-answer questions are scored/],
    ['subject not text', { ...ok, meta_info: 3 }, /:3: field "meta_info": expected text, got 3/],
  ];
  it.each(cases)('a malformed question (%s) is FEDLORA_ERR_EXAM_ITEM naming file, line and field', (_what, line3, msg) => {
    const f = join(dir, 'bad.jsonl');
    writeFileSync(f, [JSON.stringify(ok), '', typeof line3 === 'string' ? line3 : JSON.stringify(line3)].join('\n'));
    expect(errorOf(() => readExamFile(f))).toMatchObject({ code: 'FEDLORA_ERR_EXAM_ITEM', message: expect.stringMatching(new RegExp(`^${escape(f)}${msg.source}`)) });
  });

  it('an empty file is refused naming it', () => {
    writeFileSync(join(dir, 'empty.jsonl'), '\n\n');
    expect(errorOf(() => readExamFile(join(dir, 'empty.jsonl')))).toMatchObject({ code: 'FEDLORA_ERR_EXAM_ITEM', message: expect.stringMatching(/^exam file .*empty\.jsonl: no questions/) });
  });
});

describe('answers read from generated text', () => {
  const item = { letters: ['A', 'B', 'C', 'D'], options: ['Asthma', 'Chronic asthma', 'Pneumonia', '肺炎链球菌'] };
  it.each([
    ['B', 1], ['  \n(C) Pneumonia', 2], ['答案：D', 3], ['The answer is D.', 3], ['Answer: B. Chronic asthma', 1],
    ['chronic asthma, most likely', 1], ['肺炎链球菌感染', 3], ['a patient with no idea', null], ['', null], ['E', null],
  ] as const)('%j -> %s', (text, want) => {
    expect(answerOf(text, item)).toBe(want);
  });
});

/** A scripted model: option i's score is scores[question][i]; generation returns texts[question]. */
function scripted(items: ExamItem[], scores: number[][], texts: string[]): ExamModel {
  const byPrompt = new Map(items.map((x, q) => [examPrompt(x), q]));
  let current = -1;
  return {
    promptIds: (text) => {
      current = byPrompt.get(text)!;
      return [current];
    },
    encode: (text) => [...Buffer.from(text)],
    decode: (ids) => Buffer.from(ids).toString(),
    scoreOptions: async (_p, options) => options.map((_, i) => scores[current][i]),
    generate: async () => [...Buffer.from(texts[current])],
  };
}

describe('exam figures', () => {
  it('accuracy and its interval equal numpy\'s recomputation; per subject; withheld below the minimum; generation; calibration; latency', async () => {
    const exam = readExamFile(SAMPLE);
    // log-likelihood: right on questions 0,1,2,6,7 (scores favour the answer), else option 3
    const rightLL = new Set([0, 1, 2, 6, 7]);
    const scores = exam.items.map((x, q) => x.options.map((_, i) => (i === (rightLL.has(q) ? x.answer : 3) ? -1 : -2 - 0.1 * i)));
    // generation: letters on some, the option text on one, nothing usable on two
    const texts = exam.items.map((x, q) => (q === 3 ? 'focal consolidation on chest x-ray' : q === 4 || q === 5 ? 'not sure' : q % 2 ? `答案：${x.letters[x.answer]}` : `${x.letters[(x.answer + 1) % x.options.length]}.`));
    const s = await scoreExam(scripted(exam.items, scores, texts), exam.items, { mode: 'both', maxNewTokens: 8 });
    const o = { minCount: 2, resamples: 300, seed: 11, label: 'site-a' };
    const figs = examResults(exam, s, o);
    const get = (name: string, subset = '') => figs.find((f) => f.name === name && f.subset === subset)!;

    const answers = exam.items.map((x) => x.letters[x.answer]);
    const chosen = s.items.map((x) => x.loglik!.chosen);
    expect(chosen.filter((c, i) => c === answers[i])).toHaveLength(5);
    await requireTool(TORCH);
    const ref = JSON.parse((await runProcess(PYTHON, [REF], {
      input: JSON.stringify({ B: 300, seed: 11, label: 'site-a:exam:sample-exam:loglik', gold: answers, pred: chosen, probs: s.loglik!.map((x) => [...x.probs!, ...Array(5 - x.probs!.length).fill(0)]), answer: s.loglik!.map((x) => x.answer), chosen: s.loglik!.map((x) => x.chosen) }),
    })).stdout);
    expect(get('accuracy').value).toBeCloseTo(5 / 12, 12);
    expect(get('accuracy').ci![0]).toBeCloseTo(ref.accuracy_ci[0], 12);
    expect(get('accuracy').ci![1]).toBeCloseTo(ref.accuracy_ci[1], 12);
    expect(get('accuracy').replicates).toHaveLength(300);
    expect(get('ece').value).toBeCloseTo(ref.ece, 12);
    expect(get('brier').value).toBeCloseTo(ref.brier, 12);

    // per subject: cardiology 3 questions (1 right), respiratory 2 (1 right), 呼吸内科 2 (1), 内分泌科 2 (1), 心血管内科 2 (0); endocrinology (1 question) withheld
    const subjects = figs.filter((f) => f.name === 'accuracy' && f.subset).map((f) => [f.subset, f.value, f.count]);
    expect(subjects).toEqual([['subject=cardiology', 1 / 3, 3], ['subject=respiratory', 0.5, 2], ['subject=内分泌科', 0.5, 2], ['subject=呼吸内科', 0.5, 2], ['subject=心血管内科', 0, 2]]);
    expect(figs.some((f) => f.subset === 'subject=endocrinology')).toBe(false);
    expect(get('accuracy', 'subject=cardiology').replicates).toHaveLength(300);

    // generation: odd questions right by letter (1,3 by text,5 unanswered,7,9,11), even ones wrong
    const gen = s.items.map((x) => x.generate!.chosen);
    expect(gen[3]).toBe('C');
    expect([gen[4], gen[5]]).toEqual([null, null]);
    const genRight = gen.filter((c, i) => c === answers[i]).length;
    expect(genRight).toBe(5); // 1, 7, 9, 11 by letter and 3 by its text
    expect(get('generation_accuracy').value).toBeCloseTo(genRight / 12, 12);
    expect(get('generation_unanswered').value).toBeCloseTo(2 / 12, 12);
    for (const n of ['latency_p50_ms', 'latency_p95_ms', 'generation_latency_p50_ms', 'generation_latency_p95_ms']) {
      expect(get(n).value).toBeGreaterThanOrEqual(0);
      expect(get(n).ci).toBeDefined();
    }
    expect(get('latency_p95_ms').value).toBeGreaterThanOrEqual(get('latency_p50_ms').value);
    expect(figs.filter((f) => f.name === 'exam_items')).toEqual([{ name: 'exam_items', subset: '', value: 12, count: 12 }]);
  });
});

describe('fedlora eval exam', () => {
  it('on a tiny model: the log-likelihood choice is the option the engine scores highest; figures with intervals; --json; a malformed file names its line', async () => {
    const model = join(dir, 'tiny');
    initTinyModel({ arch: 'qwen2', out: model, seed: 3, layers: 1, hidden: 32, heads: 2, kvHeads: 1, intermediate: 64, tokenizer: 'byte' });
    const cli = (...a: string[]) => run(process.execPath, ['cli/bin.mjs', 'eval', 'exam', ...a], { maxBuffer: 1 << 24 });
    const [json, table, check] = await Promise.all([
      cli('--file', SAMPLE, '--model', model, '--json', '--max-new-tokens', '4', '--resamples', '200', '--limit', '4'),
      cli('--file', SAMPLE, '--model', model, '--mode', 'loglik', '--resamples', '200'),
      cli('--file', SAMPLE),
    ]);
    const out = JSON.parse(json.stdout);
    expect(out).toMatchObject({ exam: 'sample-exam', questions: 4, bootstrap: { resamples: 200, seed: 20240611 } });
    const exam = readExamFile(SAMPLE);
    const m = await loadModel(model);
    for (const [q, it] of out.items.entries()) {
      const item = exam.items[q];
      // mean log-probability of each option's tokens after the chat prompt, from the engine directly
      const prompt = m.chatPromptIds([{ role: 'user', content: examPrompt(item) }]);
      const means = await Promise.all(item.options.map(async (_, i) => {
        const opt = m.tokenizer.encode(optionContinuation(item, i), { addSpecialTokens: false });
        const lp = await m.scoreTokens([...prompt, ...opt]);
        return lp.slice(prompt.length).reduce<number>((a, x) => a + (x as number), 0) / opt.length;
      }));
      expect(it.loglik.chosen).toBe(item.letters[means.indexOf(Math.max(...means))]);
      expect(it.loglik.probs.reduce((a: number, x: number) => a + x, 0)).toBeCloseTo(1, 9);
      expect(typeof it.generate.text).toBe('string');
    }
    await m.release();
    const acc = out.figures.find((f: { name: string; subset: string }) => f.name === 'accuracy' && f.subset === '');
    const right = out.items.filter((x: { answer: string; loglik: { chosen: string } }) => x.loglik.chosen === x.answer).length;
    expect(acc.value).toBeCloseTo(right / 4, 12);
    expect(acc.ci[0]).toBeLessThanOrEqual(acc.value);
    expect(acc.ci[1]).toBeGreaterThanOrEqual(acc.value);
    expect(out.figures.map((f: { name: string }) => f.name)).toEqual(expect.arrayContaining(['accuracy', 'generation_accuracy', 'ece', 'brier', 'latency_p50_ms', 'latency_p95_ms', 'generation_latency_p95_ms']));

    const lines = table.stdout.split('\n');
    expect(lines[0]).toBe(`exam sample-exam: 12 questions, base model ${model}`);
    expect(lines[1]).toMatch(/^\s+accuracy\s+95% CI\s+n$/);
    expect(lines[2]).toMatch(/^log-likelihood\s+\d\.\d{3}\s+\[\d\.\d{3}, \d\.\d{3}\]\s+12$/);
    expect(lines.filter((l) => /^ {2}\S/.test(l))).toHaveLength(6);
    expect(table.stdout).toMatch(/time to a complete answer: log-likelihood p50 [\d.]+ ms \/ p95 [\d.]+ ms/);
    expect(check.stdout).toMatch(/sample-exam\.jsonl: 12 questions, all well-formed; options per question: 4, 5; subjects: cardiology, endocrinology, respiratory, 内分泌科, 呼吸内科, 心血管内科/);

    const bad = join(dir, 'medqa-bad.jsonl');
    writeFileSync(bad, `${JSON.stringify({ question: 'Q?', options: { A: 'x', B: 'y' }, answer: 'A' })}\n${JSON.stringify({ question: 'Q?', options: { A: 'x', B: 'y' }, answer_idx: 'F' })}\n`);
    const err = await cli('--file', bad, '--model', model).then(() => null, (e: { stderr: string; code: number }) => e);
    expect(err?.stderr).toContain(`FEDLORA_ERR_EXAM_ITEM: ${bad}:2: field "answer_idx": answer F is not one of the options A, B`);
  });
});
