// /api/jobs (list, submit), /api/jobs/:id, /api/jobs/:id/rounds, /api/jobs/:id/privacy.
import type { FastifyPluginAsync } from 'fastify';
import { fail } from '../../shared/errors.ts';
import type { RoundEngine } from '../rounds/engine.ts';
import type { JobRow, RoundRow } from '../store/store.ts';
import { parseJobSpec, parseJobSpecText } from '../jobs/spec.ts';
import { checkJobId } from '../jobs/job-id.ts';
import type { AdminGuard, AdminLog } from './app.ts';

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

export function jobView(engine: RoundEngine, j: JobRow) {
  const cur = engine.store.currentRound(j.id);
  const spec = JSON.parse(j.spec_json);
  return {
    id: j.id, name: j.name, status: j.status, error: j.error, current_version: j.current_version, rounds_total: spec.rounds,
    current_round: cur ? { round: cur.round, attempt: cur.attempt, state: cur.state, deadline: iso(cur.deadline_ms) } : null,
    created: iso(j.created_ms), updated: iso(j.updated_ms), spec,
  };
}

export function roundView(engine: RoundEngine, r: RoundRow) {
  const tasks = engine.store.roundTasks(r.job_id, r.round, r.attempt);
  const updates = engine.store.roundUpdates(r.job_id, r.round, r.attempt);
  return {
    round: r.round, attempt: r.attempt, state: r.state, base_version: r.base_version, selected: JSON.parse(r.selected_json), deadline: iso(r.deadline_ms),
    started: iso(r.started_ms), aggregating: iso(r.aggregating_ms), published: iso(r.published_ms), error: r.error,
    duration_ms: r.published_ms !== null ? r.published_ms - r.started_ms : null, metrics: r.metrics_json ? JSON.parse(r.metrics_json) : null,
    tasks: tasks.map((t) => ({ site: t.site_id, status: t.status, decline_code: t.decline_code, decline_reason: t.decline_reason })),
    updates: updates.map((u) => ({ update_id: u.update_id, site: u.site_id, status: u.status, reason: u.reason, size: u.size, sha256: u.sha256, examples: u.examples, norm: u.norm })),
  };
}

export const jobRoutes: FastifyPluginAsync<{ engine: RoundEngine; requireAdmin: AdminGuard; log: AdminLog }> = async (app, { engine, requireAdmin, log }) => {
  const getJob = (id: string) => {
    const j = engine.store.job(id);
    if (!j) throw fail('FEDLORA_ERR_NOT_FOUND', `job ${id} does not exist`);
    return j;
  };
  app.get('/api/jobs', async () => ({ jobs: engine.store.jobs().map((j) => jobView(engine, j)) }));
  app.post<{ Querystring: { id?: string } }>('/api/jobs', async (req, reply) => {
    const admin = requireAdmin(req);
    const spec = typeof req.body === 'string' ? parseJobSpecText(req.body, 'request body') : parseJobSpec(req.body, 'request body');
    if (req.query.id !== undefined) checkJobId(req.query.id, 'query id');
    const id = await engine.submitJob(spec, req.query.id);
    log.info({ job: id, admin, rounds: spec.rounds, strategy: spec.aggregation.name, dp: !!spec.privacy.dp }, 'job submitted');
    return reply.status(201).send(jobView(engine, getJob(id)));
  });
  app.get<{ Params: { id: string } }>('/api/jobs/:id', async (req) => jobView(engine, getJob(req.params.id)));
  app.post<{ Params: { id: string } }>('/api/jobs/:id/cancel', async (req) => {
    const admin = requireAdmin(req);
    engine.cancelJob(req.params.id);
    log.info({ job: req.params.id, admin }, 'job cancelled');
    return jobView(engine, getJob(req.params.id));
  });
  app.get<{ Params: { id: string } }>('/api/jobs/:id/rounds', async (req) => {
    getJob(req.params.id);
    return { rounds: engine.store.rounds(req.params.id).map((r) => roundView(engine, r)) };
  });
  app.get<{ Params: { id: string } }>('/api/jobs/:id/privacy', async (req) => {
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
