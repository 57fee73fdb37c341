// Federated exams (coordinator/metrics/exam-requests.ts):
// POST /api/jobs/:id/exams  (admin)   {exam, mode?, sites?}: one EXAM task per site on its own copy
// GET  /api/jobs/:id/exams            the EXAM tasks and their status (done / declined with the reason)
// Results are metrics with eval_set exam:<name> (/api/jobs/:id/metrics[/summary]?eval_set=exam:<name>).
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { fail } from '../../shared/errors.ts';
import type { RoundEngine } from '../rounds/index.ts';
import { examTasks, requestExam } from '../metrics/exam-requests.ts';
import { ADMIN, READERS, callerOf } from './access.ts';
import type { AdminLog } from './app.ts';
import { errors, JobParams } from './schemas.ts';

const ExamTask = z.object({
  task_id: z.string(), site: z.string(), exam: z.string(), mode: z.string(), version: z.number().int(), status: z.string(),
  decline_reason: z.string().nullable(), decline_code: z.string().nullable(), created: z.string(), updated: z.string(),
});

export const examRoutes: FastifyPluginAsyncZod<{ engine: RoundEngine; log: AdminLog }> = async (app, { engine, log }) => {
  const getJob = (id: string) => {
    if (!engine.store.job(id)) throw fail('FEDLORA_ERR_NOT_FOUND', `job ${id} does not exist`);
  };

  app.post('/api/jobs/:id/exams', {
    config: { access: ADMIN },
    schema: {
      summary: 'ask the job\'s sites to score its newest global adapter on their own copy of an exam (site.yaml evaluation.exams); only figures come back', params: JobParams,
      body: z.object({
        exam: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/).describe('the exam\'s name, as the sites\' evaluation.exams name their files'),
        mode: z.enum(['loglik', 'generate', 'both']).default('loglik'),
        sites: z.array(z.string().regex(/^[A-Za-z0-9._-]{1,128}$/)).optional().describe('only these sites (default: every site of the job)'),
      }),
      response: { 202: z.object({ job_id: z.string(), exam: z.string(), version: z.number().int(), tasks: z.array(z.object({ site: z.string(), task_id: z.string() })) }), ...errors(400, 404, 409) },
    },
  }, async (req, reply) => {
    getJob(req.params.id);
    const r = requestExam(engine, { jobId: req.params.id, exam: req.body.exam, mode: req.body.mode, sites: req.body.sites, now: engine.now() });
    log.info({ job: req.params.id, admin: callerOf(req).name, exam: req.body.exam, version: r.version, sites: r.tasks.map((t) => t.site) }, 'exam requested');
    return reply.status(202).send({ job_id: req.params.id, exam: req.body.exam, ...r });
  });

  app.get('/api/jobs/:id/exams', {
    config: { access: READERS },
    schema: { summary: 'the job\'s exam tasks and their status (results: metrics with eval_set exam:<name>)', params: JobParams, response: { 200: z.object({ job_id: z.string(), tasks: z.array(ExamTask) }), ...errors(404) } },
  }, async (req) => {
    getJob(req.params.id);
    return { job_id: req.params.id, tasks: examTasks(engine, req.params.id) };
  });
};
