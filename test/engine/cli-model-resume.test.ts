// `fedlora train` interrupted by SIGINT and continued with --resume ends with the same adapter
// bytes as an uninterrupted run. In-process through the real command tree: SIGINT is raised
// from inside the progress output of step 3, so the interruption point is deterministic.
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { buildProgram } from '../../cli/main.ts';
import { readPeftAdapter } from '../../shared/lora/peft.ts';
import { adapterBytes, digitJsonl, tempDir, tinyModel } from './train-fixtures.ts';

const tmp = tempDir('cli-resume');
const p = (...s: string[]) => join(tmp.dir, ...s);
afterAll(() => tmp.cleanup());
beforeAll(() => {
  tinyModel(p('model'));
  digitJsonl(p('data.jsonl'), 40, 3);
});

async function runTrain(out: string, extra: string[], interruptAtStep?: number): Promise<{ exitCode: number | undefined; stderr: string }> {
  const args = ['train', '--model', p('model'), '--data', p('data.jsonl'), '--out', out, '--steps', '8', '--rank', '4', '--lr', '1e-2',
    '--micro-batch', '2', '--batch-tokens', '128', '--lora-dropout', '0.1', '--warmup', '2', '--seed', '5', ...extra];
  const write = process.stderr.write.bind(process.stderr);
  let stderr = '';
  let raised = false;
  process.stderr.write = ((chunk: string | Uint8Array) => {
    stderr += chunk.toString();
    if (interruptAtStep && !raised && stderr.includes(`step ${interruptAtStep}/`)) {
      raised = true;
      process.emit('SIGINT');
    }
    return true;
  }) as typeof process.stderr.write;
  const before = process.exitCode;
  try {
    await buildProgram().parseAsync(['node', 'fedlora', ...args]);
    return { exitCode: process.exitCode as number | undefined, stderr };
  } finally {
    process.stderr.write = write;
    process.exitCode = before;
  }
}

it('SIGINT at step 3 + --resume == uninterrupted run', async () => {
  const full = await runTrain(p('full'), []);
  expect(full.exitCode ?? 0).toBe(0);
  const part = await runTrain(p('part'), [], 3);
  expect(part.exitCode).toBe(130);
  expect(part.stderr).toMatch(/interrupt: finishing the current step/);
  expect(part.stderr).toMatch(/interrupted after step 3: checkpoint written to .*part[/\\]checkpoint; continue with the same command plus --resume/);
  expect(existsSync(p('part', 'adapter_model.safetensors'))).toBe(false);
  const resumed = await runTrain(p('part'), ['--resume']);
  expect(resumed.exitCode ?? 0).toBe(0);
  expect(resumed.stderr).toMatch(/step 4\/8/);
  expect(resumed.stderr).not.toMatch(/step 3\/8/);
  expect(adapterBytes(readPeftAdapter(p('part')).weights).equals(adapterBytes(readPeftAdapter(p('full')).weights))).toBe(true);
  const mf = JSON.parse(readFileSync(p('full', 'train_metrics.json'), 'utf8'));
  const mp = JSON.parse(readFileSync(p('part', 'train_metrics.json'), 'utf8'));
  expect(mp.lossPerStep).toEqual(mf.lossPerStep);
  expect(mp.resumedFromStep).toBe(3);
  expect(mp.interrupted).toBe(false);
});
