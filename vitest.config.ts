import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { defineConfig } from 'vitest/config';
import { TEARDOWN_TIMEOUT_MS, TEST_TIMEOUT_MS } from './test/runner/limits.ts';
import { StallWatchdog } from './test/runner/stall-watchdog.ts';

// Tests start real servers (gRPC with mutual TLS, fastify), real SQLite files and real ONNX
// Runtime sessions in forked processes, one fresh fork per file. Their time limits, scaled by
// how busy the machine is, are explained in test/runner/limits.ts.

// vitest has no per-file timeout, and its test/hook timeouts run on the fork's own event loop:
// a fork whose loop is blocked (it happened: a native deadlock in a secure-aggregation test)
// would hang the run for ever. The stall watchdog (test/runner/stall-watchdog.ts) watches each
// fork's heartbeat (test/runner/fork-heartbeat.ts) from the main process; when a fork stops
// beating for longer than a test may run, runs one file for longer than ten times that, or no
// fork runs while files remain, it names the stuck file and the unfinished ones, kills the
// forks and the processes they started, and ends the run with status 1. `bail` only stops
// after a failure is reported and no pool option can see a blocked fork, so neither would do.
const beats = (process.env.FEDLORA_FORK_BEATS ??= mkdtempSync(join(tmpdir(), 'fedlora-fork-beats-')));

export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/bench/**', 'node_modules/**'],
    testTimeout: TEST_TIMEOUT_MS,
    hookTimeout: TEST_TIMEOUT_MS,
    teardownTimeout: TEARDOWN_TIMEOUT_MS,
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    setupFiles: ['test/runner/fork-heartbeat.ts'],
    reporters: ['default', new StallWatchdog({ dir: beats, stallMs: TEST_TIMEOUT_MS, fileLimitMs: 10 * TEST_TIMEOUT_MS, pollMs: 2_000, root: fileURLToPath(new URL('.', import.meta.url)).replace(/\/$/, '') })],
  },
});
