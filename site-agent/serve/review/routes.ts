// The doctors' review page (/review) and its API (/api/review/...), for the `clinician` role with
// the assistant's users and keys. A rating is stored (with its audit entry) before the answer;
// a doctor is served only cases of their own queue and never another doctor's rating. With a
// review floor in the release gate, each rating decides the candidate again.
import { join } from 'node:path';
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { ServeContext } from '../server.ts';
import { servePageFiles } from '../routes/static-page.ts';
import { addRating, CORRECTNESS, nextCase, openCount, SAFETY } from './ratings.ts';
import { redecideAfterRating } from '../gate/policy.ts';

const PAGE_FILES = { '/review': 'index.html', '/review/static/review.js': 'review.js', '/review/static/review.css': 'review.css' };

const RatingBody = z.object({
  correctness: z.enum(CORRECTNESS),
  safety: z.enum(SAFETY),
  score: z.number().int().min(1).max(5),
  comment: z.string().max(2000).nullish(),
}).strict();

export function reviewRoutes(): FastifyPluginAsyncZod<ServeContext> {
  return async (app, ctx) => {
    servePageFiles(app, join(import.meta.dirname, 'page'), PAGE_FILES);
    const onRequest = ctx.requireRole('clinician');
    const Version = z.object({ version: z.string().min(1).max(200).optional() });

    app.get('/api/review/summary', { onRequest, schema: { querystring: Version } }, async (req) => ({
      user: req.user!.name, role: req.user!.role, site: ctx.siteId, open: openCount(ctx.db, req.user!.name, req.query.version ?? null),
      versions: ctx.db.prepare('SELECT adapter_label AS adapter, count(*) AS cases FROM review_cases GROUP BY adapter_label ORDER BY min(id)').all(),
    }));

    app.get('/api/review/next', { onRequest, schema: { querystring: Version.extend({ after: z.coerce.number().int().positive().optional() }) } }, async (req) => {
      const c = nextCase(ctx.db, req.user!.name, req.query.version ?? null, req.query.after ?? null);
      // The case and the answer only: not who else rated it, nor how.
      return { case: c && { id: c.id, adapter: c.adapter_label, lang: c.lang, prompt: c.prompt, answer: c.answer } };
    });

    app.post('/api/review/cases/:id/ratings', { onRequest, schema: { params: z.object({ id: z.coerce.number().int().positive() }), body: RatingBody } }, async (req, reply) => {
      const r = addRating(ctx.db, { caseId: req.params.id, user: req.user!.name, ...req.body }, ctx.audit);
      const v = ctx.db.prepare('SELECT job_id, version FROM review_cases WHERE id = ?').get(r.case_id) as { job_id: string | null; version: number | null };
      redecideAfterRating(ctx.db, ctx.audit, ctx.config.gate, v.job_id, v.version);
      return reply.status(201).send({ rating: { id: r.id, case_id: r.case_id, correctness: r.correctness, safety: r.safety, score: r.score, created_at: r.created_at } });
    });
  };
}
