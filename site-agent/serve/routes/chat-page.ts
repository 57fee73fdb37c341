// The clinicians' chat page (`/`, Chinese and English) and the small API it needs besides the
// OpenAI-compatible one: who am I, an answer with its confirmations, and the doctor's
// confirmation. Static files are public (they hold no data); every /api route needs a key.
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { fail } from '../../../shared/errors.ts';
import { confirmAnswer, confirmationsOf } from '../confirmations.ts';
import { currentServing } from '../gate/serving.ts';
import type { ServeContext } from '../server.ts';
import { servePageFiles, SHARED_PAGE_DIR } from './static-page.ts';

// The review and workbench pages load /static/common.js and /static/style.css from here.
const PAGE_FILES = { '/': 'index.html', '/static/app.js': 'app.js', '/static/common.js': 'common.js', '/static/style.css': 'style.css' };

const ConfirmBody = z.object({
  verdict: z.enum(['accept', 'edit', 'reject']),
  final_text: z.string().max(20_000).nullish(),
  final_diagnosis: z.string().max(500).nullish(),
  comment: z.string().max(2000).nullish(),
}).strict();

export const chatPageRoutes: FastifyPluginAsyncZod<ServeContext> = async (app, ctx) => {
  servePageFiles(app, SHARED_PAGE_DIR, PAGE_FILES);

  app.get('/favicon.ico', async (_req, reply) => reply.status(204).send());

  const onRequest = ctx.requireRole('clinician');
  app.get('/api/me', { onRequest }, async (req) => ({ name: req.user!.name, role: req.user!.role, site: ctx.siteId, model: ctx.config.model_name, model_version: currentServing(ctx.db).label }));
  app.get('/api/answers/:id', { onRequest, schema: { params: z.object({ id: z.string().min(1).max(100) }) } }, async (req) => {
    const a = ctx.db.prepare('SELECT id, user_name, created_at, endpoint, model_version, adapter_sha256, question_deid, answer_text, citations, finish_reason FROM serve_answers WHERE id = ?').get(req.params.id) as Record<string, unknown> | undefined;
    if (!a) throw fail('FEDLORA_ERR_NOT_FOUND', `no answer ${JSON.stringify(req.params.id)} at this site`);
    return { ...a, citations: JSON.parse(String(a.citations)), confirmations: confirmationsOf(ctx.db, req.params.id) };
  });
  app.post('/api/answers/:id/confirmation', { onRequest, schema: { params: z.object({ id: z.string().min(1).max(100) }), body: ConfirmBody } }, async (req, reply) => {
    const b = req.body;
    const c = confirmAnswer(ctx.db, ctx.audit, { answerId: req.params.id, user: req.user!.name, verdict: b.verdict, finalText: b.final_text, finalDiagnosis: b.final_diagnosis, comment: b.comment });
    return reply.status(201).send(c);
  });
};
