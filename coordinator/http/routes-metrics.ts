// Per-site rows and cross-evaluation cells only of sites whose policy lets the caller see them
// (site-visibility.ts); those reads are audited.
// /api/jobs/:id/metrics?site=&metric=&kind=&subset=&eval_set=&format=csv   rows as reported by sites (value, count, 95% interval)
// /api/jobs/:id/metrics/summary?...same                     consortium figures per round (weighted mean + interval)
// /api/jobs/:id/cross-eval?metric=&format=csv               {data site x model owner} matrix
// POST /api/jobs/:id/cross-eval  (admin)                     record a cross-evaluation request
import type { FastifyReply } from 'fastify';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { fail } from '../../shared/errors.ts';
import type { RoundEngine } from '../rounds/index.ts';
import type { MetricRow } from '../store/store.ts';
import { crossEvalMatrix, toCsv, CROSS_COLUMNS, SUMMARY_COLUMNS } from '../metrics/summary.ts';
import { replicatesOf } from '../metrics/consortium.ts';
import { globalColumn } from '../crosseval/global-column.ts';
import { crossEvalRequests, crossEvalRequestView, insertCrossEvalRequest } from '../metrics/cross-eval-requests.ts';
import { ADMIN, READERS, callerOf } from './access.ts';
import { siteVisibility, visibleRows, visibleSummary } from './site-visibility.ts';
import type { AdminLog } from './app.ts';
import { CrossEval, CrossEvalQuery, CrossEvalRequest, errors, JobParams, jsonOrCsv, Metric, MetricsQuery, SummaryRow, WithheldSites } from './schemas.ts';

const COLUMNS = ['job_id', 'round', 'site_id', 'kind', 'metric', 'subset', 'eval_set', 'value', 'ci_low', 'ci_high', 'count', 'model_owner', 'adapter_version', 'phase', 'created_ms'] as const;
const SITE_RE = /^[A-Za-z0-9._-]{1,128}$/;

/** The store's row filter from the query (subset / eval_set: '' is a value, absent is no filter). */
const filterOf = (q: { site?: string; metric?: string; kind?: string; subset?: string; eval_set?: string }) =>
  ({ site: q.site, metric: q.metric, kind: q.kind, subset: q.subset, evalSet: q.eval_set });

function metricsCsv(rows: MetricRow[]): string {
  return toCsv<MetricRow>(COLUMNS, rows);
}

function sendCsv(reply: FastifyReply, filename: string, body: string) {
  reply.header('Content-Disposition', `attachment; filename="${filename}"`);
  return reply.type('text/csv; charset=utf-8').send(body);
}

/** The sites whose per-site data an answer holds (for the read audit). */
const sitesOf = (rows: MetricRow[]) => [...new Set(rows.flatMap((r) => [r.site_id, r.model_owner]).filter((s) => s !== ''))].sort();

const CSV_TOO = ' (JSON, or CSV with ?format=csv)';

export const metricsRoutes: FastifyPluginAsyncZod<{ engine: RoundEngine; log: AdminLog }> = async (app, { engine, log }) => {
  const getJob = (id: string) => {
    const j = engine.store.job(id);
    if (!j) throw fail('FEDLORA_ERR_NOT_FOUND', `job ${id} does not exist`);
    return j;
  };

  app.get('/api/jobs/:id/metrics', {
    config: { access: READERS, audit: 'site_metrics_read' },
    schema: {
      summary: `metrics as reported by each site, only of sites whose share_site_metrics policy lets the caller see them${CSV_TOO}`, params: JobParams, querystring: MetricsQuery,
      response: { 200: jsonOrCsv(z.object({ metrics: z.array(Metric), withheld_sites: WithheldSites }), 'metric rows'), ...errors(400, 404) },
    },
  }, async (req, reply) => {
    getJob(req.params.id);
    const q = req.query;
    const { rows, withheldSites } = visibleRows(engine.store.metrics(req.params.id, filterOf(q)), siteVisibility(engine.store.db, callerOf(req).role));
    req.auditSites = sitesOf(rows);
    if (q.format === 'csv') return sendCsv(reply, `${req.params.id}-metrics.csv`, metricsCsv(rows));
    return { metrics: rows.map(({ id: _id, ...r }) => r), withheld_sites: withheldSites };
  });

  app.get('/api/jobs/:id/metrics/summary', {
    config: { access: READERS },
    schema: {
      summary: `unweighted and count-weighted averages across sites per round/kind/metric${CSV_TOO}`, params: JobParams, querystring: MetricsQuery,
      response: { 200: jsonOrCsv(z.object({ job_id: z.string(), note: z.string(), summary: z.array(SummaryRow), withheld: z.number().int() }), 'summary rows'), ...errors(400, 404) },
    },
  }, async (req, reply) => {
    getJob(req.params.id);
    const q = req.query;
    const rows = engine.store.metrics(req.params.id, filterOf(q));
    const { summary, withheld } = visibleSummary(rows, siteVisibility(engine.store.db, callerOf(req).role), replicatesOf(engine.store.db, rows.map((r) => r.id)));
    if (q.format === 'csv') return sendCsv(reply, `${req.params.id}-metrics-summary.csv`, toCsv(SUMMARY_COLUMNS, summary));
    return {
      job_id: req.params.id,
      note: 'mean: unweighted average across sites; weighted_mean: weighted by count (null when no site reported a count): the consortium figure, with its 95% interval ci_low..ci_high from the sites\' bootstrap replicates (a stratified bootstrap, sites as strata; null when a site sent none). One value per site (its newest) per round/kind/metric/model_owner/subset/eval_set. For kind global, round = the adapter version evaluated. '
        + 'withheld: rows left out because exactly one contributing site does not share its metrics with you (its value would follow from the mean); min/max are null when any contributor is hidden.',
      summary, withheld,
    };
  });

  app.get('/api/jobs/:id/cross-eval', {
    config: { access: READERS, audit: 'site_metrics_read' },
    schema: {
      summary: `cross-evaluation matrix {data site x model owner} from kind=cross metrics; available=false when none has run${CSV_TOO}`,
      params: JobParams, querystring: CrossEvalQuery, response: { 200: jsonOrCsv(CrossEval, 'the matrix (CSV: its cells)'), ...errors(400, 404) },
    },
  }, async (req, reply) => {
    getJob(req.params.id);
    const canSee = siteVisibility(engine.store.db, callerOf(req).role);
    const { rows, withheldSites } = visibleRows(engine.store.metrics(req.params.id, { kind: 'cross' }), canSee);
    req.auditSites = sitesOf(rows);
    const m = crossEvalMatrix(rows, req.query.metric || undefined);
    if (req.query.format === 'csv') return sendCsv(reply, `${req.params.id}-cross-eval.csv`, toCsv(CROSS_COLUMNS, m.cells));
    // The global adapter's column: the same sites' figures for the version the matrix evaluated.
    const version = m.cells.reduce<number | null>((v, c) => (c.adapter_version !== null && (v === null || c.adapter_version > v) ? c.adapter_version : v), null);
    const globalRows = visibleRows(engine.store.metrics(req.params.id, { kind: 'global', subset: '', evalSet: '' }), canSee).rows;
    return {
      job_id: req.params.id, ...m, global: globalColumn(globalRows, m.data_sites, version, m.metric), withheld_sites: withheldSites,
      ...(m.available ? {} : { message: 'no cross-evaluation results yet: request one with POST /api/jobs/:id/cross-eval (fedlora job cross-eval JOB); sites must consent (policy.allow_cross_eval)' }),
      requests: crossEvalRequests(engine.store.db, req.params.id).map(crossEvalRequestView),
    };
  });

  app.post('/api/jobs/:id/cross-eval', {
    config: { access: ADMIN },
    schema: {
      summary: 'request a cross-evaluation (recorded; tasks go to the sites that consent)', params: JobParams,
      body: z.object({ sites: z.array(z.string().regex(SITE_RE)).optional().describe('only these sites (default all)') }).optional(),
      response: { 202: CrossEvalRequest, ...errors(400, 404) },
    },
  }, async (req, reply) => {
    const who = callerOf(req).name;
    getJob(req.params.id);
    const sites = req.body?.sites;
    for (const s of sites ?? []) if (!engine.store.site(s)) throw fail('FEDLORA_ERR_NOT_FOUND', `body.sites: site ${s} is unknown`);
    const row = insertCrossEvalRequest(engine.store.db, { jobId: req.params.id, requestedBy: who, sites, now: engine.now() });
    log.info({ job: req.params.id, admin: who, request: row.id, sites: sites ?? 'all' }, 'cross-evaluation requested');
    return reply.status(202).send(crossEvalRequestView(row));
  });
};
