// /api/jobs (list, submit), /api/jobs/:id, /api/jobs/:id/cancel, /api/jobs/:id/continue, /api/jobs/:id/rounds, /api/jobs/:id/privacy.
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { validatorCompiler } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { fail } from '../../shared/errors.ts';
import type { RoundEngine } from '../rounds/index.ts';
import type { JobRow, RoundRow } from '../store/store.ts';
import { JobSpecSchema, parseJobSpec, parseJobSpecText } from '../jobs/spec.ts';
import { checkJobId } from '../jobs/job-id.ts';
import { populationOf } from '../jobs/population.ts';
import { periodsOf, totalRounds } from '../jobs/periods.ts';
import { nextDueMs } from '../rounds/schedule.ts';
import { ADMIN, ANY_ROLE, READERS, callerOf } from './access.ts';
import { siteVisibility, type CanSee } from './site-visibility.ts';
import type { AdminLog } from './app.ts';
import { errors, Job, JobParams, Privacy, Round } from './schemas.ts';

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

export function jobView(engine: RoundEngine, j: JobRow) {
  const cur = engine.store.currentRound(j.id);
  const spec = JSON.parse(j.spec_json);
  const population = populationOf(engine.store.db, j.id);
  const q = spec.privacy?.dp?.sample_rate as number | undefined;
  const periods = periodsOf(engine.store.db, j.id, spec, j.created_ms);
  const due = spec.schedule ? nextDueMs({ store: engine.store }, j.id, { spec }) : null;
  return {
    id: j.id, name: j.name, status: j.status, error: j.error, current_version: j.current_version, rounds_total: totalRounds(periods),
    periods: periods.map((p) => ({ period: p.period, first_round: p.firstRound, rounds: p.rounds, reason: p.reason, started: iso(p.createdMs)! })),
    schedule: spec.schedule ? { every: spec.schedule.every as string, next_due: iso(due) } : null,
    current_round: cur ? { round: cur.round, attempt: cur.attempt, state: cur.state, deadline: iso(cur.deadline_ms) } : null,
    dp_sampling: population && q !== undefined ? { sample_rate: q, eligible_sites: population.length, expected_sites: q * population.length, sites: population } : null,
    created: iso(j.created_ms)!, updated: iso(j.updated_ms)!, spec,
  };
}

/** A round as the API shows it; per-site details (examples, norm, reasons) only of sites `canSee`. */
function roundView(engine: RoundEngine, r: RoundRow, canSee: CanSee) {
  const tasks = engine.store.roundTasks(r.job_id, r.round, r.attempt);
  const updates = engine.store.roundUpdates(r.job_id, r.round, r.attempt);
  return {
    round: r.round, attempt: r.attempt, state: r.state, base_version: r.base_version, selected: JSON.parse(r.selected_json) as string[], deadline: iso(r.deadline_ms),
    started: iso(r.started_ms), aggregating: iso(r.aggregating_ms), published: iso(r.published_ms), error: r.error,
    duration_ms: r.published_ms !== null ? r.published_ms - r.started_ms : null, metrics: r.metrics_json ? JSON.parse(r.metrics_json) : null,
    tasks: tasks.map((t) => (canSee(t.site_id)
      ? { site: t.site_id, status: t.status, decline_code: t.decline_code, decline_reason: t.decline_reason }
      : { site: t.site_id, status: t.status, decline_code: null, decline_reason: null, withheld: true as const })),
    updates: updates.map((u) => (canSee(u.site_id)
      ? { update_id: u.update_id, site: u.site_id, status: u.status, reason: u.reason, size: u.size, sha256: u.sha256, examples: u.examples, norm: u.norm }
      : { update_id: u.update_id, site: u.site_id, status: u.status, reason: null, size: u.size, sha256: u.sha256, examples: null, norm: null, withheld: true as const })),
  };
}

export const jobRoutes: FastifyPluginAsyncZod<{ engine: RoundEngine; log: AdminLog }> = async (app, { engine, log }) => {
  const getJob = (id: string) => {
    const j = engine.store.job(id);
    if (!j) throw fail('FEDLORA_ERR_NOT_FOUND', `job ${id} does not exist`);
    return j;
  };
  app.get('/api/jobs', { config: { access: ANY_ROLE }, schema: { summary: 'list jobs', response: { 200: z.object({ jobs: z.array(Job) }) } } },
    async () => ({ jobs: engine.store.jobs().map((j) => jobView(engine, j)) }));
  app.post('/api/jobs', {
    config: { access: ADMIN },
    // The spec arrives as JSON or as YAML text: parseJobSpec/parseJobSpecText validate it with
    // field (and line) errors, FEDLORA_ERR_JOB_INVALID, so the body skips schema validation.
    validatorCompiler: (route) => (route.httpPart === 'body' ? (data: unknown) => ({ value: data }) : validatorCompiler(route as never) /* fastify types the part schema as the whole route schema */),
    schema: {
      summary: 'submit a job spec (JSON, or YAML with Content-Type application/yaml)',
      querystring: z.object({ id: z.string().optional().describe('job id (default job-<random>): 1-64 of [a-z0-9._-]') }),
      body: z.union([JobSpecSchema, z.string().describe('the job spec as YAML')]),
      response: { 201: Job, ...errors(400, 409) },
    },
  }, async (req, reply) => {
    const admin = callerOf(req).name;
    const spec = typeof req.body === 'string' ? parseJobSpecText(req.body, 'request body') : parseJobSpec(req.body, 'request body');
    if (req.query.id !== undefined) checkJobId(req.query.id, 'query id');
    const id = await engine.submitJob(spec, req.query.id);
    log.info({ job: id, admin, rounds: spec.rounds, strategy: spec.aggregation.name, dp: !!spec.privacy.dp }, 'job submitted');
    return reply.status(201).send(jobView(engine, getJob(id)));
  });
  app.get('/api/jobs/:id', { config: { access: ANY_ROLE }, schema: { summary: 'job status', params: JobParams, response: { 200: Job, ...errors(404) } } },
    async (req) => jobView(engine, getJob(req.params.id)));
  app.post('/api/jobs/:id/cancel', { config: { access: ADMIN }, schema: { summary: 'cancel a running job', params: JobParams, response: { 200: Job, ...errors(404, 409) } } }, async (req) => {
    const admin = callerOf(req).name;
    engine.cancelJob(req.params.id);
    log.info({ job: req.params.id, admin }, 'job cancelled');
    return jobView(engine, getJob(req.params.id));
  });
  app.post('/api/jobs/:id/continue', {
    config: { access: ADMIN },
    schema: {
      summary: 'run more rounds: a new data period (sites train its new records with replay of earlier ones); a completed job runs again',
      params: JobParams, body: z.object({ rounds: z.number().int().min(1).max(100_000) }).strict(), response: { 200: Job, ...errors(400, 404, 409) },
    },
  }, async (req) => {
    const admin = callerOf(req).name;
    engine.continueJob(req.params.id, req.body.rounds, admin);
    log.info({ job: req.params.id, admin, rounds: req.body.rounds }, 'job continued');
    return jobView(engine, getJob(req.params.id));
  });
  app.get('/api/jobs/:id/rounds', {
    config: { access: READERS, audit: 'site_metrics_read' },
    schema: {
      summary: 'rounds with selection, tasks, updates and timings (a site\'s examples, norm and reasons only if its share_site_metrics policy lets the caller see them)',
      params: JobParams, response: { 200: z.object({ rounds: z.array(Round) }), ...errors(404) },
    },
  }, async (req) => {
    getJob(req.params.id);
    const canSee = siteVisibility(engine.store.db, callerOf(req).role);
    const rounds = engine.store.rounds(req.params.id).map((r) => roundView(engine, r, canSee));
    req.auditSites = [...new Set(rounds.flatMap((r) => r.updates.filter((u) => !('withheld' in u)).map((u) => u.site)))].sort();
    return { rounds };
  });
  app.get('/api/jobs/:id/privacy', { config: { access: READERS }, schema: { summary: 'privacy ledger: epsilon after each round', params: JobParams, response: { 200: Privacy, ...errors(404) } } }, async (req) => {
    const j = getJob(req.params.id);
    const dp = JSON.parse(j.spec_json).privacy?.dp ?? null;
    const ledger = engine.store.privacyLedger(j.id);
    return {
      dp_enabled: !!dp, budget_epsilon: dp?.epsilon_budget ?? null, delta: dp?.delta ?? null,
      epsilon_spent: ledger.reduce((a, l) => Math.max(a, l.epsilon), 0),
      ledger: ledger.map((l) => ({ round: l.round, epsilon: l.epsilon, delta: l.delta, noise_multiplier: l.noise_multiplier, sample_rate: l.sample_rate, at: iso(l.created_ms) })),
    };
  });
};
