// GET /metrics: Prometheus text exposition 0.0.4 (read-only, like the other read routes).
import type { FastifyPluginAsync } from 'fastify';
import type { RoundEngine } from '../rounds/engine.ts';
import { coordinatorMetrics } from '../metrics/coordinator-metrics.ts';
import { PROMETHEUS_CONTENT_TYPE } from '../metrics/exposition.ts';

export const prometheusRoutes: FastifyPluginAsync<{ engine: RoundEngine }> = async (app, { engine }) => {
  app.get('/metrics', async (_req, reply) =>
    reply.type(PROMETHEUS_CONTENT_TYPE).send(coordinatorMetrics({ store: engine.store, now: engine.now, heartbeatTimeoutMs: engine.heartbeatTimeoutMs })));
};
