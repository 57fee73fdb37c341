// The workbench page (/workbench) and its API (/api/workbench/...), for the `clinician` role with
// the assistant's users and keys. A label is stored (with its provenance and audit entry) before
// the answer; the server, not the page, decides whether the read showed the model's suggestions.
import { join } from 'node:path';
import { z } from 'zod';
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import type { AuditLog } from '../../../shared/audit.ts';
import { importAssistantConfirmations } from '../../data/labels/assistant.ts';
import type { CodeList } from '../../data/labels/code-list.ts';
import { addLabel } from '../../data/labels/store.ts';
import type { WorkbenchConfig } from '../config.ts';
import { currentServing } from '../gate/serving.ts';
import type { ServeContext } from '../server.ts';
import { servePageFiles } from '../routes/static-page.ts';
import { nextInQueue, queueCounts, QUEUES } from './queues.ts';
import { checkAccess, recordView, showsSuggestions, type ViewDeps } from './record-view.ts';
import { precomputeSuggestions, type SuggestionDeps } from './suggestions.ts';

const PAGE_FILES = { '/workbench': 'index.html', '/workbench/static/workbench.js': 'workbench.js', '/workbench/static/workbench.css': 'workbench.css' };

const RecordId = z.object({ id: z.string().min(1).max(200) });
const ViewQueue = z.enum([...QUEUES, 'mine']);
const LabelBody = z.object({
  queue: ViewQueue,
  diagnosis: z.string().min(1).max(500),
  icd10: z.string().min(1).max(20).nullish(),
  suggestion_id: z.number().int().positive().nullish(),
  comment: z.string().max(2000).nullish(),
}).strict();

export interface WorkbenchDeps {
  config: WorkbenchConfig;
  codes: CodeList;
  suggestions: SuggestionDeps | null;
  audit: AuditLog;
  /** Called when a background pass of ranking fails (logged by the caller). */
  status: { lastError: string | null };
}

export function workbenchRoutes(w: WorkbenchDeps): FastifyPluginAsyncZod<ServeContext> {
  return async (app, ctx) => {
    servePageFiles(app, join(import.meta.dirname, 'page'), PAGE_FILES);
    const onRequest = ctx.requireRole('clinician');
    const version = () => currentServing(ctx.db).label;
    const view: ViewDeps = { db: ctx.db, deidentify: ctx.assistant.deidentify, suggestions: w.suggestions, showFraction: w.config.show_suggestions_fraction, version };

    app.get('/api/workbench/summary', { onRequest }, async (req) => {
      const imported = importAssistantConfirmations(ctx.db, { codes: w.codes });
      return {
        user: req.user!.name, role: req.user!.role, site: ctx.siteId, model_version: version(), queues: queueCounts(ctx.db, req.user!.name, version()),
        code_list: { source: w.codes.source, codes: w.codes.size }, suggestions: w.suggestions !== null, assistant_labels_imported: imported.labels, last_error: w.status.lastError,
      };
    });

    app.get('/api/workbench/queues/:queue/next', { onRequest, schema: { params: z.object({ queue: z.enum(QUEUES) }), querystring: z.object({ after: z.string().max(200).optional() }) } }, async (req) => {
      const id = nextInQueue(ctx.db, req.params.queue, req.user!.name, version(), req.query.after ?? null);
      return { record: id === null ? null : await recordView(view, id, req.user!.name, req.params.queue) };
    });

    app.get('/api/workbench/records/:id', { onRequest, schema: { params: RecordId, querystring: z.object({ queue: ViewQueue }) } }, async (req) =>
      ({ record: await recordView(view, req.params.id, req.user!.name, req.query.queue) }));

    app.post('/api/workbench/records/:id/labels', { onRequest, schema: { params: RecordId, body: LabelBody } }, async (req, reply) => {
      const b = req.body;
      const user = req.user!.name;
      const v = currentServing(ctx.db);
      checkAccess(ctx.db, b.queue, user, v.label, req.params.id);
      const shown = w.suggestions !== null && b.suggestion_id != null && showsSuggestions(b.queue, req.params.id, user, w.config.show_suggestions_fraction);
      const r = addLabel(ctx.db, {
        recordId: req.params.id, user, kind: b.queue === 'dispute' ? 'adjudication' : 'annotation', diagnosis: b.diagnosis, icd10: b.icd10 ?? null,
        queue: b.queue, suggestionShown: shown, suggestionId: b.suggestion_id ?? null, modelVersion: v.label, comment: b.comment,
      }, { doubleReadFraction: w.config.double_read_fraction, audit: w.audit, codes: w.codes });
      return reply.status(201).send({ label: r.entry, record: r.record });
    });

    app.get('/api/workbench/codes', { onRequest, schema: { querystring: z.object({ q: z.string().max(100), limit: z.coerce.number().int().min(1).max(50).default(12) }) } }, async (req) =>
      ({ codes: w.codes.search(req.query.q, req.query.limit) }));

    app.get('/api/workbench/mine', { onRequest }, async (req) => ({
      labels: ctx.db.prepare(`SELECT e.id, e.record_id, e.diagnosis, e.icd10, e.queue, e.created_at, lr.status FROM label_entries e
          JOIN label_records lr ON lr.record_id = e.record_id
          WHERE e.user_name = ? AND e.kind = 'annotation' AND e.id = (SELECT max(x.id) FROM label_entries x WHERE x.record_id = e.record_id AND x.user_name = e.user_name AND x.kind = 'annotation')
          ORDER BY e.id DESC LIMIT 50`).all(req.user!.name),
    }));

    app.post('/api/workbench/suggestions', { onRequest: ctx.requireRole('admin'), schema: { body: z.object({ limit: z.number().int().min(1).max(10_000) }).strict() } }, async (req) => {
      if (!w.suggestions) return { ranked: 0, note: 'suggestions are off (serve.workbench.suggestions.enabled) or the backend cannot score' };
      return { ranked: await precomputeSuggestions(w.suggestions, req.body.limit), model_version: version() };
    });
  };
}
