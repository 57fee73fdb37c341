// /api/jobs/:id/metrics?site=&metric=&kind=&format=csv      rows as reported by sites
// /api/jobs/:id/metrics/summary?metric=&kind=&format=csv    averages across sites per round
// /api/jobs/:id/cross-eval?metric=&format=csv               {data site x model owner} matrix
// POST /api/jobs/:id/cross-eval  (admin)                     record a cross-evaluation request
import type { FastifyPluginAsync, FastifyReply } from 'fastify';
import { fail } from '../../shared/errors.ts';
import type { RoundEngine } from '../rounds/engine.ts';
import type { MetricRow } from '../store/store.ts';
import { crossEvalMatrix, summarizeMetrics, toCsv, CROSS_COLUMNS, SUMMARY_COLUMNS } from '../metrics/summary.ts';
import { crossEvalRequests, crossEvalRequestView, insertCrossEvalRequest } from '../metrics/cross-eval-requests.ts';
import type { AdminGuard, AdminLog } from './app.ts';

const COLUMNS = ['job_id', 'round', 'site_id', 'kind', 'metric', 'value', 'count', 'model_owner', 'adapter_version', 'phase', 'created_ms'] as const;
const KINDS = ['global', 'local', 'base', 'cross'];
const SITE_RE = /^[A-Za-z0-9._-]{1,128}$/;

export function metricsCsv(rows: MetricRow[]): string {
  return toCsv<MetricRow>(COLUMNS, rows);
}

type Q = { site?: string; metric?: string; kind?: string; format?: string };

function checkQuery(q: Q): void {
  if (q.kind && !KINDS.includes(q.kind)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `query kind ${JSON.stringify(q.kind)} must be global|local|base|cross`);
  if (q.format && q.format !== 'csv' && q.format !== 'json') throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `query format ${JSON.stringify(q.format)} must be json or csv`);
}

function sendCsv(reply: FastifyReply, filename: string, body: string) {
  reply.header('Content-Disposition', `attachment; filename="${filename}"`);
  return reply.type('text/csv; charset=utf-8').send(body);
}

export const metricsRoutes: FastifyPluginAsync<{ engine: RoundEngine; requireAdmin: AdminGuard; log: AdminLog }> = async (app, { engine, requireAdmin, log }) => {
  const getJob = (id: string) => {
    const j = engine.store.job(id);
    if (!j) throw fail('FEDLORA_ERR_NOT_FOUND', `job ${id} does not exist`);
    return j;
  };

  app.get<{ Params: { id: string }; Querystring: Q }>('/api/jobs/:id/metrics', async (req, reply) => {
    getJob(req.params.id);
    const q = req.query;
    checkQuery(q);
    const rows = engine.store.metrics(req.params.id, { site: q.site, metric: q.metric, kind: q.kind });
    if (q.format === 'csv') return sendCsv(reply, `${req.params.id}-metrics.csv`, metricsCsv(rows));
    return { metrics: rows.map(({ id: _id, ...r }) => r) };
  });

  app.get<{ Params: { id: string }; Querystring: Q }>('/api/jobs/:id/metrics/summary', async (req, reply) => {
    getJob(req.params.id);
    const q = req.query;
    checkQuery(q);
    const summary = summarizeMetrics(engine.store.metrics(req.params.id, { site: q.site, metric: q.metric, kind: q.kind }));
    if (q.format === 'csv') return sendCsv(reply, `${req.params.id}-metrics-summary.csv`, toCsv(SUMMARY_COLUMNS, summary));
    return {
      job_id: req.params.id,
      note: 'mean: unweighted average across sites; weighted_mean: weighted by count (null when no site reported a count). One value per site (its newest) per round/kind/metric/model_owner. For kind global, round = the adapter version evaluated.',
      summary,
    };
  });

  app.get<{ Params: { id: string }; Querystring: { metric?: string; format?: string } }>('/api/jobs/:id/cross-eval', async (req, reply) => {
    getJob(req.params.id);
    checkQuery({ format: req.query.format });
    const m = crossEvalMatrix(engine.store.metrics(req.params.id, { kind: 'cross' }), req.query.metric || undefined);
    if (req.query.format === 'csv') return sendCsv(reply, `${req.params.id}-cross-eval.csv`, toCsv(CROSS_COLUMNS, m.cells));
    return {
      job_id: req.params.id, ...m,
      ...(m.available ? {} : { message: 'no cross-evaluation results yet: request one with POST /api/jobs/:id/cross-eval (fedlora job cross-eval JOB); sites must consent (policy.allow_cross_eval)' }),
      requests: crossEvalRequests(engine.store.db, req.params.id).map(crossEvalRequestView),
    };
  });

  app.post<{ Params: { id: string }; Body: { sites?: unknown } | undefined }>('/api/jobs/:id/cross-eval', async (req, reply) => {
    const who = requireAdmin(req);
    getJob(req.params.id);
    const sites = req.body?.sites;
    if (sites !== undefined && (!Array.isArray(sites) || !sites.every((s) => typeof s === 'string' && SITE_RE.test(s)))) {
      throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `body.sites must be an array of site ids matching ${SITE_RE}`);
    }
    for (const s of (sites as string[] | undefined) ?? []) if (!engine.store.site(s)) throw fail('FEDLORA_ERR_NOT_FOUND', `body.sites: site ${s} is unknown`);
    const row = insertCrossEvalRequest(engine.store.db, { jobId: req.params.id, requestedBy: who, sites: sites as string[] | undefined, now: engine.now() });
    log.info({ job: req.params.id, admin: who, request: row.id, sites: sites ?? 'all' }, 'cross-evaluation requested');
    return reply.status(202).send(crossEvalRequestView(row));
  });
};
