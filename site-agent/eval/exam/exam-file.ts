// Exam questions from a JSONL file in the shapes public medical exams ship in, one question a line:
//   MedQA (USMLE / MCMLE):  {"question", "options": {"A": "...", ...}, "answer": "<text>", "answer_idx": "A", "meta_info": "step1"}
//   MedQA via HF datasets:  "options": [{"key": "A", "value": "..."}, ...]
//   CMExam:                 {"Question", "Options": "A 选项一\nB 选项二 ...", "Answer": "B", "Clinical Department": "..."}
//   plain lists:            "options": ["...", "..."] (lettered A, B, ... in order)
// The answer is a letter of an option or an option's text; `answer_idx` wins over `answer` when both
// are present. Subject: subject, subject_name, meta_info or CMExam's "Clinical Department" / "Medical
// Discipline". A malformed question stops the read with FEDLORA_ERR_EXAM_ITEM naming file, line and field.
import { readFileSync } from 'node:fs';
import { basename } from 'node:path';
import { fail } from '../../../shared/errors.ts';

export interface ExamItem {
  /** 1-based line in the file. */
  line: number;
  id: string;
  question: string;
  /** Option letters (A, B, ...) and texts, in order. */
  letters: string[];
  options: string[];
  /** Index of the right option. */
  answer: number;
  /** '' when the file gives none. */
  subject: string;
}

export interface ExamFile {
  /** The exam's name: the file name without .jsonl (what eval_set exam:<name> says). */
  name: string;
  items: ExamItem[];
}

const LETTER = /^[A-Z]$/;
const QUESTION = ['question', 'Question'];
const OPTIONS = ['options', 'Options'];
const SUBJECT = ['subject', 'subject_name', 'meta_info', 'Clinical Department', 'Medical Discipline'];

const firstOf = (o: Record<string, unknown>, keys: string[]): [string, unknown] | null => {
  for (const k of keys) if (o[k] !== undefined && o[k] !== null) return [k, o[k]];
  return null;
};

/** Letters and texts of the options in any of the accepted shapes. */
function optionsOf(v: unknown, where: () => string): { letters: string[]; options: string[] } {
  const bad = (why: string) => fail('FEDLORA_ERR_EXAM_ITEM', `${where()}: ${why}`);
  let pairs: [string, unknown][];
  if (typeof v === 'string') {
    // CMExam: one option a line, "A 文本", "A. text", "A、文本", "A: text"
    pairs = v.split(/\r?\n/).map((l) => l.trim()).filter(Boolean).map((l) => {
      const m = /^([A-Z])\s*[.．、:：)）]?\s*(.*)$/.exec(l);
      if (!m) throw bad(`line ${JSON.stringify(l)} does not start with an option letter`);
      return [m[1], m[2]];
    });
  } else if (Array.isArray(v)) {
    pairs = v.map((x, i) => (x !== null && typeof x === 'object' && 'key' in x && 'value' in x ? [String((x as { key: unknown }).key), (x as { value: unknown }).value] : [String.fromCharCode(65 + i), x]));
  } else if (v !== null && typeof v === 'object') {
    pairs = Object.entries(v);
  } else {
    throw bad(`expected an object {"A": text, ...}, a list or lettered lines, got ${JSON.stringify(v)}`);
  }
  if (pairs.length < 2) throw bad(`a question needs at least 2 options, got ${pairs.length}`);
  if (pairs.length > 26) throw bad(`at most 26 options (A-Z), got ${pairs.length}`);
  const letters: string[] = [];
  const options: string[] = [];
  for (const [k, t] of pairs) {
    const letter = k.trim().toUpperCase();
    if (!LETTER.test(letter)) throw bad(`option key ${JSON.stringify(k)} is not a letter A-Z`);
    if (letters.includes(letter)) throw bad(`option ${letter} appears twice`);
    if (typeof t !== 'string' || t.trim() === '') throw bad(`option ${letter} has no text`);
    letters.push(letter);
    options.push(t.trim());
  }
  return { letters, options };
}

/** Index of the right option from a letter or an option's text. */
function answerIndex(field: string, v: unknown, letters: string[], options: string[], where: (field: string) => string): number {
  const bad = (why: string) => fail('FEDLORA_ERR_EXAM_ITEM', `${where(field)}: ${why}`);
  if (typeof v !== 'string' || v.trim() === '') throw bad(`expected an option letter or an option's text, got ${JSON.stringify(v)}`);
  const a = v.trim();
  const up = a.toUpperCase().replace(/[.．、:：)）]$/, '');
  if (LETTER.test(up)) {
    const i = letters.indexOf(up);
    if (i < 0) throw bad(`answer ${up} is not one of the options ${letters.join(', ')}`);
    return i;
  }
  if (/^[A-Z]{2,}$/.test(up) && [...up].every((c) => letters.includes(c))) throw bad(`several answers (${up}): only single-answer questions are scored`);
  const i = options.findIndex((o) => o === a);
  if (i < 0) throw bad(`${JSON.stringify(a.slice(0, 80))} is neither an option letter (${letters.join(', ')}) nor the text of an option`);
  return i;
}

/** One question of the file (1-based line for errors). */
function parseExamLine(text: string, line: number, file: string): ExamItem {
  const where = (field: string) => `${file}:${line}: field "${field}"`;
  let o: unknown;
  try {
    o = JSON.parse(text);
  } catch (e) {
    throw fail('FEDLORA_ERR_EXAM_ITEM', `${file}:${line}: not valid JSON (${(e as Error).message})`);
  }
  if (o === null || typeof o !== 'object' || Array.isArray(o)) throw fail('FEDLORA_ERR_EXAM_ITEM', `${file}:${line}: expected a JSON object per line`);
  const rec = o as Record<string, unknown>;
  const q = firstOf(rec, QUESTION);
  if (!q) throw fail('FEDLORA_ERR_EXAM_ITEM', `${where('question')}: missing`);
  if (typeof q[1] !== 'string' || q[1].trim() === '') throw fail('FEDLORA_ERR_EXAM_ITEM', `${where(q[0])}: expected non-empty text`);
  const op = firstOf(rec, OPTIONS);
  if (!op) throw fail('FEDLORA_ERR_EXAM_ITEM', `${where('options')}: missing`);
  const { letters, options } = optionsOf(op[1], () => where(op[0]));
  const ans = firstOf(rec, ['answer_idx', 'answer', 'Answer']);
  if (!ans) throw fail('FEDLORA_ERR_EXAM_ITEM', `${where('answer')}: missing`);
  const answer = answerIndex(ans[0], ans[1], letters, options, where);
  const sub = firstOf(rec, SUBJECT);
  if (sub && typeof sub[1] !== 'string') throw fail('FEDLORA_ERR_EXAM_ITEM', `${where(sub[0])}: expected text, got ${JSON.stringify(sub[1])}`);
  const id = rec.id ?? rec.ID ?? rec.qid;
  return { line, id: id === undefined ? `line-${line}` : String(id), question: q[1].trim(), letters, options, answer, subject: sub ? (sub[1] as string).trim() : '' };
}

/** Every question of a JSONL exam file (blank lines skipped); a file without any is an error. */
export function readExamFile(path: string): ExamFile {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (e) {
    throw fail('FEDLORA_ERR_IO', `exam file ${path}: ${(e as Error).message}`);
  }
  const items: ExamItem[] = [];
  text.split(/\r?\n/).forEach((l, i) => {
    if (l.trim() !== '') items.push(parseExamLine(l.replace(/^\uFEFF/, ''), i + 1, path));
  });
  if (items.length === 0) throw fail('FEDLORA_ERR_EXAM_ITEM', `exam file ${path}: no questions (one JSON object a line)`);
  return { name: basename(path).replace(/\.jsonl?$/i, ''), items };
}
