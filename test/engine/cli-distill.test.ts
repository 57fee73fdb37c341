// `fedlora distill` as users call it, on tiny models made with `fedlora model init-tiny`: the teacher
// gets an adapter from `fedlora train`; the output folder holds the student's PEFT adapter and
// metrics.json; a second run reuses the stored teacher top-k; a tokenizer mismatch is a clear error.
import { cpSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readPeftAdapter } from '../../shared/lora/peft.ts';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';
import { runProcess } from '../runner/run-process.ts';
import { digitJsonl, tempDir } from './train-fixtures.ts';

const BIN = join(import.meta.dirname, '..', '..', 'cli', 'bin.mjs');
const tmp = tempDir('cli-distill');
afterAll(() => tmp.cleanup());
const p = (...s: string[]) => join(tmp.dir, ...s);

/** The CLI to its end (asynchronously: training blocks nothing here); up to a test's whole limit. */
async function cli(...args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const r = await runProcess(process.execPath, [BIN, ...args], { cwd: tmp.dir, timeoutMs: TEST_TIMEOUT_MS });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
const tiny = (out: string, seed: string) => cli('model', 'init-tiny', '--arch', 'llama', '--out', out, '--seed', seed, '--layers', '2', '--hidden', '32', '--heads', '4', '--kv-heads', '2');
const distillArgs = (out: string, student = p('student')) => [
  'distill', '--teacher', p('teacher'), '--teacher-adapter', p('teacher-ad'), '--student', student, '--data', p('data.jsonl'), '--out', out,
  '--steps', '4', '--top-k', '8', '--temperature', '2', '--kd-alpha', '0.7', '--lr', '1e-2', '--rank', '4', '--alpha', '8', '--targets', 'q_proj,v_proj,down_proj',
  '--teacher-cache', p('teacher-cache'),
];

beforeAll(async () => {
  for (const [dir, seed] of [[p('teacher'), '2'], [p('student'), '1']]) expect((await tiny(dir, seed)).code).toBe(0);
  digitJsonl(p('data.jsonl'), 24, 1);
  const t = await cli('train', '--model', p('teacher'), '--data', p('data.jsonl'), '--out', p('teacher-ad'), '--rank', '4', '--alpha', '8', '--lr', '1e-2', '--steps', '5');
  expect(t.code, t.stderr).toBe(0);
}, TEST_TIMEOUT_MS);

describe('fedlora distill (CLI)', () => {
  it('--help documents the loss, temperature, top-k and α', async () => {
    const r = await cli('distill', '--help');
    expect(r.code).toBe(0);
    const text = r.stdout.replace(/\s+/g, ' '); // commander wraps lines
    for (const s of ['(1-α)·CE + α·T²·KL', '--top-k', '--temperature', '--kd-alpha', '--teacher-adapter', '--teacher-cache', 'metrics.json']) expect(text).toContain(s);
  });

  it('writes the student adapter and metrics.json; a second run reuses the teacher store', async () => {
    const first = await cli(...distillArgs(p('out1')));
    expect(first.code, first.stderr).toBe(0);
    expect(first.stdout).toContain('stored in');
    const ad = readPeftAdapter(p('out1'));
    expect(ad.config.r).toBe(4);
    expect(ad.config.targets).toEqual(['q_proj', 'v_proj', 'down_proj']);
    // trained: some lora_B is no longer zero
    expect([...ad.weights].some(([k, t]) => k.includes('lora_B') && t.data.some((v) => v !== 0))).toBe(true);
    const m = JSON.parse(readFileSync(p('out1', 'metrics.json'), 'utf8'));
    expect(m.klPerStep).toHaveLength(4);
    expect(m.cePerStep).toHaveLength(4);
    expect(m.klPerStep.every((v: number) => Number.isFinite(v) && v > 0)).toBe(true);
    expect(m.settings).toMatchObject({ topK: 8, temperature: 2, alpha: 0.7, teacherAdapter: true, teacher: p('teacher'), student: p('student') });
    expect(m.teacherStore.reused).toBe(false);
    expect(m.teacherStore.topkMass).toBeGreaterThan(0);
    expect(m.teacherStore.topkMass).toBeLessThanOrEqual(1);

    const second = await cli(...distillArgs(p('out2')));
    expect(second.code, second.stderr).toBe(0);
    expect(second.stdout).toContain('reused in');
    const m2 = JSON.parse(readFileSync(p('out2', 'metrics.json'), 'utf8'));
    expect(m2.teacherStore).toMatchObject({ reused: true, key: m.teacherStore.key, dir: m.teacherStore.dir });
    expect(m2.klPerStep).toEqual(m.klPerStep);
  }, TEST_TIMEOUT_MS);

  it('a student with another tokenizer: exit 2 and FEDLORA_ERR_TOKENIZER_MISMATCH naming both folders', async () => {
    cpSync(p('student'), p('student-other'), { recursive: true });
    const tj = JSON.parse(readFileSync(p('student-other', 'tokenizer.json'), 'utf8'));
    tj.added_tokens.push({ id: tj.added_tokens.at(-1).id + 1, content: '<|extra|>', single_word: false, lstrip: false, rstrip: false, normalized: false, special: true });
    writeFileSync(p('student-other', 'tokenizer.json'), JSON.stringify(tj));
    const r = await cli(...distillArgs(p('out-bad'), p('student-other')));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('FEDLORA_ERR_TOKENIZER_MISMATCH');
    expect(r.stderr).toContain(p('teacher'));
    expect(r.stderr).toContain(p('student-other'));
    expect(existsSync(p('out-bad', 'metrics.json'))).toBe(false);
  });
});
