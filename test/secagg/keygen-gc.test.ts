// Regression: a secure-aggregation process deadlocked now and then (a test fork sat idle forever
// in secagg.test.ts). Node 20's generateKeyPairSync('x25519') leaves a key-generation job whose
// destructor, run by a garbage collection, takes the mutex of the keys it made; a GC during the
// JWK export of such a key (which holds that mutex) never returned. The key stages now import
// keys made from random bytes. This runs them thousands of times in a child process whose young
// generation is 1 MiB (scavenges are frequent); the old code stalled here within 2,000
// iterations in 5 of 5 tries. A stall is told apart from slowness by progress: the child prints
// a line every 100 iterations, and a silence 20 times longer than the slowest gap so far (its
// start-up included) means it is stuck.
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { expect, it } from 'vitest';

const CHILD = join(import.meta.dirname, 'key-stages-loop.ts');
const ITERATIONS = 3000;
const STALL_FACTOR = 20;

it('the X25519 key stages never deadlock in a garbage collection', async () => {
  const child = spawn(process.execPath, ['--max-semi-space-size=1', '--import', 'tsx', CHILD, String(ITERATIONS)], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d) => (stderr += d));
  const lines: string[] = [];
  const verdict = await new Promise<{ stalled: boolean; code: number | null }>((resolve) => {
    const started = performance.now();
    let last = started;
    let slowestGap = 0;
    let timer: NodeJS.Timeout | undefined;
    const arm = (gapMs: number) => {
      clearTimeout(timer);
      timer = setTimeout(() => {
        child.kill('SIGKILL');
        resolve({ stalled: true, code: null });
      }, STALL_FACTOR * gapMs);
    };
    let buf = '';
    child.stdout.on('data', (d) => {
      buf += d;
      const parts = buf.split('\n');
      buf = parts.pop()!;
      for (const l of parts) {
        const now = performance.now();
        slowestGap = Math.max(slowestGap, now - last);
        last = now;
        lines.push(l);
        arm(slowestGap);
      }
    });
    // until the first line, the child's start-up is not measured yet: the test's own timeout bounds it
    child.on('exit', (code) => {
      clearTimeout(timer);
      resolve({ stalled: false, code });
    });
  });
  expect(verdict.stalled, `no progress after "${lines.at(-1)}" for ${STALL_FACTOR}x the slowest gap: deadlocked`).toBe(false);
  expect(verdict.code, stderr).toBe(0);
  expect(lines.at(-1)).toBe('done');
  expect(lines).toContain(`iteration ${ITERATIONS}`);
});
