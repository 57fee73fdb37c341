// The stall watchdog end to end: a nested vitest run (test/runner/fixtures) in which one file
// blocks its fork's event loop for ever after starting a child process. The run must end by
// itself with status 1, name the stuck file, and leave neither the fork nor the child behind.
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { killTree } from './stall-watchdog.ts';

const dir = mkdtempSync(join(tmpdir(), 'fedlora-stall-'));
let runPid: number | undefined;
afterAll(() => {
  if (runPid) killTree(runPid); // only if this test failed before the nested run ended
  rmSync(dir, { recursive: true, force: true });
});

/** Running (a killed process that its new parent has not reaped yet is a zombie: not running). */
const running = (pid: number) => {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2)[0] !== 'Z';
  } catch {
    return false;
  }
};

it('a file whose fork is blocked fails the run by name, and its processes are killed', async () => {
  const childPidFile = join(dir, 'child.pid');
  const vitest = join(import.meta.dirname, '..', '..', 'node_modules', 'vitest', 'vitest.mjs');
  const run = spawn(process.execPath, [vitest, 'run', '--config', join(import.meta.dirname, 'fixtures', 'vitest.stall.config.ts')], {
    env: { ...process.env, NO_COLOR: '1', FORCE_COLOR: '0', FEDLORA_FORK_BEATS: join(dir, 'beats'), FEDLORA_STALL_CHILD_PID_FILE: childPidFile },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  runPid = run.pid;
  let out = '';
  run.stdout.on('data', (d) => (out += d));
  run.stderr.on('data', (d) => (out += d));
  const started = performance.now();
  const code = await new Promise<number | null>((resolve) => run.on('exit', resolve));
  const runMs = performance.now() - started;
  runPid = undefined;
  expect(code, out).toBe(1);
  expect(out).toMatch(/\[stall-watchdog\] STUCK — test\/runner\/fixtures\/blocked-loop\.fixture\.ts: its fork's event loop has been blocked for \d+ s/);
  expect(out).toContain('1 file(s) did not finish: test/runner/fixtures/blocked-loop.fixture.ts');
  expect(out).toMatch(/✓ test\/runner\/fixtures\/finishes\.fixture\.ts/);
  const childPid = Number(readFileSync(childPidFile, 'utf8'));
  expect(childPid).toBeGreaterThan(0);
  // SIGKILL is delivered when the process is next scheduled: give it as long again as the run took
  const until = performance.now() + runMs;
  while (running(childPid) && performance.now() < until) await new Promise((r) => setTimeout(r, 20));
  expect(running(childPid), `the stuck test's child process ${childPid} was left running`).toBe(false);
});
