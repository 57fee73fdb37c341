// /api/jobs/:id/metrics?site=&metric=&kind=&format=csv
import type { FastifyPluginAsync } from 'fastify';
import { fail } from '../../shared/errors.ts';
import type { RoundEngine } from '../rounds/engine.ts';
import type { MetricRow } from '../store/store.ts';

const COLUMNS = ['job_id', 'round', 'site_id', 'kind', 'metric', 'value', 'count', 'model_owner', 'adapter_version', 'phase', 'created_ms'] as const;

function csvField(v: unknown): string {
  const s = v === null || v === undefined ? '' : String(v);
  // Quote when needed; a leading =,+,-,@ is prefixed so spreadsheets do not run it as a formula.
  const safe = /^[=+\-@]/.test(s) && typeof v === 'string' ? `'${s}` : s;
  return /[",\n\r]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

export function metricsCsv(rows: MetricRow[]): string {
  return [COLUMNS.join(','), ...rows.map((r) => COLUMNS.map((c) => csvField(r[c])).join(','))].join('\n') + '\n';
}

export const metricsRoutes: FastifyPluginAsync<{ engine: RoundEngine }> = async (app, { engine }) => {
  app.get<{ Params: { id: string }; Querystring: { site?: string; metric?: string; kind?: string; format?: string } }>('/api/jobs/:id/metrics', async (req, reply) => {
    if (!engine.store.job(req.params.id)) throw fail('FEDLORA_ERR_NOT_FOUND', `job ${req.params.id} does not exist`);
    const q = req.query;
    if (q.kind && !['global', 'local', 'base', 'cross'].includes(q.kind)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `kind ${JSON.stringify(q.kind)} must be global|local|base|cross`);
    if (q.format && q.format !== 'csv' && q.format !== 'json') throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `format ${JSON.stringify(q.format)} must be json or csv`);
    const rows = engine.store.metrics(req.params.id, { site: q.site, metric: q.metric, kind: q.kind });
    if (q.format === 'csv') {
      reply.header('Content-Disposition', `attachment; filename="${req.params.id}-metrics.csv"`);
      return reply.type('text/csv; charset=utf-8').send(metricsCsv(rows));
    }
    return { metrics: rows.map(({ id: _id, ...r }) => r) };
  });
};
