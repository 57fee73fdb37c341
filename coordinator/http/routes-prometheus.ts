// GET /metrics: Prometheus text exposition 0.0.4.
import type { FastifyPluginAsync } from 'fastify';
import { MONITORS } from './access.ts';
import { media } from './schemas.ts';
import type { RoundEngine } from '../rounds/index.ts';
import { coordinatorMetrics } from '../metrics/coordinator-metrics.ts';
import { PROMETHEUS_CONTENT_TYPE } from '../../shared/prometheus.ts';
import type { SurvivedErrors } from '../metrics/survived-errors.ts';

export const prometheusRoutes: FastifyPluginAsync<{ engine: RoundEngine; errors: SurvivedErrors }> = async (app, { engine, errors }) => {
  app.get('/metrics', { config: { access: MONITORS }, schema: { summary: 'Prometheus text exposition 0.0.4', response: { 200: media('text/plain; version=0.0.4', 'Prometheus metrics') } } }, async (_req, reply) =>
    reply.type(PROMETHEUS_CONTENT_TYPE).send(coordinatorMetrics({ store: engine.store, now: engine.now, heartbeatTimeoutMs: engine.heartbeatTimeoutMs, survivedErrors: errors.counts() })));
};
