import { defineConfig } from 'vitest/config';

// Tests start real servers (gRPC with mutual TLS, fastify), real SQLite files and real
// ONNX Runtime sessions, so they get generous timeouts and run in forked processes.
export default defineConfig({
  test: {
    include: ['test/**/*.test.ts'],
    exclude: ['test/bench/**', 'node_modules/**'],
    testTimeout: 120_000,
    hookTimeout: 120_000,
    pool: 'forks',
    poolOptions: { forks: { maxForks: 2, minForks: 1 } },
    reporters: ['default'],
  },
});
