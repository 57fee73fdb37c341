// Knowledge distillation on tiny models: a student trained on the distillation head moves toward
// its teacher on held-out prompts; teacher stores are reused; models with different tokenizers are
// refused with a clear error.
import { readFileSync, writeFileSync, cpSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { distill, loadJsonlExamples, loadTokenizer, readCheckpoint, tokenizerIdentity } from '../../site-agent/engine/index.ts';
import { teacherLogits } from '../../site-agent/engine/distill/teacher-logits.ts';
import { teacherGap } from '../../site-agent/engine/distill/compare.ts';
import { isFedloraError } from '../../shared/errors.ts';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';
import { digitJsonl, tempDir } from './train-fixtures.ts';
import { STUDENT_LORA, pairJsonl, teacherAdapter, tinyPairModel, trainedTeacherAdapter } from './distill-fixtures.ts';

const tmp = tempDir('distill');
afterAll(() => tmp.cleanup());
const teacherDir = tinyPairModel(join(tmp.dir, 'teacher'), 2);
const studentDir = tinyPairModel(join(tmp.dir, 'student'), 1);
const tAdapter = teacherAdapter(teacherDir, join(tmp.dir, 'teacher-adapter'));
const trainFile = pairJsonl(join(tmp.dir, 'train.jsonl'), 32, 1);
const cache = join(tmp.dir, 'teacher-cache');
const settings = { topK: 8, temperature: 2, alpha: 0.8 };

describe('fedlora distill (engine)', () => {
  it('a student trained by distillation moves toward the teacher on held-out prompts', async () => {
    // the teacher knows the digit-run task (after "3" comes "4"); held-out prompts are other lines
    const taskFile = join(tmp.dir, 'digits.jsonl');
    digitJsonl(taskFile, 48, 1);
    const heldFile = join(tmp.dir, 'digits-held.jsonl');
    digitJsonl(heldFile, 12, 2);
    const taskTeacher = await trainedTeacherAdapter(teacherDir, taskFile, join(tmp.dir, 'trained-teacher'), 60);
    const distillFile = join(tmp.dir, 'digits-distill.jsonl');
    digitJsonl(distillFile, 32, 3);
    const student = readCheckpoint(studentDir);
    const tok = loadTokenizer(studentDir);
    const held = (await loadJsonlExamples(heldFile, tok, { maxSeqLen: 64 })).examples;
    const heldStore = await teacherLogits({
      teacher: readCheckpoint(teacherDir), adapter: taskTeacher, examples: held, topK: settings.topK, temperature: settings.temperature,
      vocab: student.config.vocabSize, cacheDir: cache, session: { threads: 1 },
    });
    const before = await teacherGap(student, null, held, heldStore, { threads: 1 });
    const r = await distill({
      teacher: teacherDir, teacherAdapter: taskTeacher, student: studentDir, data: distillFile, lora: STUDENT_LORA, ...settings,
      lr: 1e-2, steps: 40, seed: 3, maxSeqLen: 64, teacherCacheDir: cache,
    });
    expect(r.interrupted).toBe(false);
    expect(r.metrics.klPerStep).toHaveLength(40);
    expect(r.metrics.cePerStep).toHaveLength(40);
    r.metrics.lossPerStep.forEach((l, i) => expect(l).toBeCloseTo((1 - settings.alpha) * r.metrics.cePerStep[i] + settings.alpha * 4 * r.metrics.klPerStep[i], 4));
    const after = await teacherGap(student, { weights: r.adapter, lora: STUDENT_LORA }, held, heldStore, { threads: 1 });

    // Margin from the data: 3 standard errors of the paired per-position KL decrease.
    const d = Array.from(before.perPosition, (v, i) => v - after.perPosition[i]);
    const mean = d.reduce((s, v) => s + v, 0) / d.length;
    const sd = Math.sqrt(d.reduce((s, v) => s + (v - mean) ** 2, 0) / (d.length - 1));
    const margin = (3 * sd) / Math.sqrt(d.length);
    expect(before.positions).toBeGreaterThan(30);
    expect(before.kl, 'the teacher and the untrained student must differ, or the test shows nothing').toBeGreaterThan(0.05);
    expect(before.kl - after.kl, `held-out KL ${before.kl.toFixed(4)} -> ${after.kl.toFixed(4)}, margin ${margin.toFixed(4)}`).toBeGreaterThan(margin);
    // agreement is a share of positions: its standard error is at most 0.5 / sqrt(positions)
    expect(after.top1Agreement - before.top1Agreement, `top-1 agreement ${before.top1Agreement.toFixed(3)} -> ${after.top1Agreement.toFixed(3)}`).toBeGreaterThan(3 * 0.5 / Math.sqrt(before.positions));
    // the training KL fell too
    const firstKl = r.metrics.klPerStep.slice(0, 5).reduce((s, v) => s + v, 0) / 5, lastKl = r.metrics.klPerStep.slice(-5).reduce((s, v) => s + v, 0) / 5;
    expect(lastKl).toBeLessThan(firstKl);
  }, TEST_TIMEOUT_MS);

  it('the teacher store is computed once and reused by a second run (another k or T is another store)', async () => {
    const run = (o: { temperature?: number } = {}) => distill({
      teacher: teacherDir, teacherAdapter: tAdapter, student: studentDir, data: trainFile, lora: STUDENT_LORA, topK: 4, temperature: o.temperature ?? 2, alpha: 0.5,
      lr: 1e-2, steps: 2, seed: 1, maxSeqLen: 64, teacherCacheDir: join(tmp.dir, 'reuse-cache'),
    });
    const first = await run();
    const second = await run();
    expect(first.metrics.teacherStore.reused).toBe(false);
    expect(second.metrics.teacherStore.reused).toBe(true);
    expect(second.metrics.teacherStore.key).toBe(first.metrics.teacherStore.key);
    expect(second.metrics.klPerStep).toEqual(first.metrics.klPerStep);
    const other = await run({ temperature: 1 });
    expect(other.metrics.teacherStore.reused).toBe(false);
    expect(other.metrics.teacherStore.key).not.toBe(first.metrics.teacherStore.key);
    // without the teacher adapter the teacher is another model: another store
    const plain = await distill({
      teacher: teacherDir, student: studentDir, data: trainFile, lora: STUDENT_LORA, topK: 4, temperature: 2, alpha: 0.5,
      lr: 1e-2, steps: 1, seed: 1, maxSeqLen: 64, teacherCacheDir: join(tmp.dir, 'reuse-cache'),
    });
    expect(plain.metrics.teacherStore.key).not.toBe(first.metrics.teacherStore.key);
  }, TEST_TIMEOUT_MS);

  it('teacher and student with different tokenizers: FEDLORA_ERR_TOKENIZER_MISMATCH naming both models', async () => {
    const other = join(tmp.dir, 'other-tokenizer');
    cpSync(studentDir, other, { recursive: true });
    const reformatted = join(tmp.dir, 'reformatted-tokenizer');
    cpSync(studentDir, reformatted, { recursive: true });
    const tj = JSON.parse(readFileSync(join(studentDir, 'tokenizer.json'), 'utf8'));
    writeFileSync(join(reformatted, 'tokenizer.json'), JSON.stringify(tj)); // same tokenizer, other formatting
    expect(tokenizerIdentity(reformatted)).toBe(tokenizerIdentity(studentDir));
    const vocab = tj.model.vocab as Record<string, number>;
    const [a, b] = Object.keys(vocab).slice(40, 42);
    [vocab[a], vocab[b]] = [vocab[b], vocab[a]]; // two tokens swap ids
    writeFileSync(join(other, 'tokenizer.json'), JSON.stringify(tj));
    let err: unknown;
    try {
      await distill({ teacher: teacherDir, student: other, data: trainFile, lora: STUDENT_LORA, lr: 1e-2, steps: 1, teacherCacheDir: cache });
    } catch (e) {
      err = e;
    }
    expect(isFedloraError(err) && err.code).toBe('FEDLORA_ERR_TOKENIZER_MISMATCH');
    expect((err as Error).message).toContain(teacherDir);
    expect((err as Error).message).toContain(other);
  });
});
