// The site's assistant server (fastify). Each page or route group is an encapsulated plugin
// that receives the ServeContext (site database, config, audit log, the requireRole hook, the
// answer pipeline); another page is added by passing one more plugin to buildServeApp.
import Fastify, { type FastifyInstance, type FastifyPluginAsync } from 'fastify';
import { serializerCompiler, validatorCompiler } from 'fastify-type-provider-zod';
import type Database from 'better-sqlite3-multiple-ciphers';
import type { AuditLog } from '../../shared/audit.ts';
import { ERRORS } from '../../shared/errors.ts';
import type { AssistantDeps } from './answer.ts';
import type { RequireRole } from './auth.ts';
import type { ServeConfig } from './config.ts';
import { currentServing } from './gate/serving.ts';
import { openaiRoutes } from './routes/openai.ts';
import { siteErrorHandler } from './routes/errors.ts';
import { chatPageRoutes } from './routes/chat-page.ts';
import { PROMETHEUS_CONTENT_TYPE } from '../../shared/prometheus.ts';

export interface ServeContext {
  siteId: string;
  db: Database.Database;
  config: ServeConfig;
  audit: AuditLog;
  /** The reusable auth hook: app.addHook('onRequest', requireRole('clinician')). */
  requireRole: RequireRole;
  assistant: AssistantDeps;
}

export type ServePlugin = FastifyPluginAsync<ServeContext>;

export interface BuildOptions {
  https?: { cert: Buffer; key: Buffer } | null;
  /** Page/route-group plugins, each registered with the ServeContext. */
  plugins?: ServePlugin[];
}

export async function buildServeApp(ctx: ServeContext, o: BuildOptions = {}): Promise<FastifyInstance> {
  const app = (o.https ? Fastify({ https: o.https, bodyLimit: 2 * 1024 * 1024 }) : Fastify({ bodyLimit: 2 * 1024 * 1024 })) as unknown as FastifyInstance;
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  app.setErrorHandler(siteErrorHandler);
  app.setNotFoundHandler((req, reply) => {
    reply.status(ERRORS.FEDLORA_ERR_NOT_FOUND.http).send({ error: { code: 'FEDLORA_ERR_NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}` } });
  });
  app.addHook('onSend', async (_req, reply, payload) => {
    reply.header('X-Content-Type-Options', 'nosniff');
    reply.header('X-Frame-Options', 'DENY');
    reply.header('Referrer-Policy', 'no-referrer');
    if (!reply.hasHeader('Content-Security-Policy')) reply.header('Content-Security-Policy', "default-src 'none'; frame-ancestors 'none'");
    if (!reply.hasHeader('Cache-Control')) reply.header('Cache-Control', 'no-store');
    return payload;
  });

  app.get('/health', async () => ({ ok: true, site: ctx.siteId, model_version: currentServing(ctx.db).label }));
  app.get('/metrics', async (_req, reply) => {
    const q = ctx.assistant.queue;
    reply.type(PROMETHEUS_CONTENT_TYPE);
    return ctx.assistant.metrics.render({ queueLength: q.length, active: q.active, servingVersion: currentServing(ctx.db).label });
  });
  await app.register(openaiRoutes, { assistant: ctx.assistant, requireRole: ctx.requireRole });
  await app.register(chatPageRoutes, ctx);
  for (const p of o.plugins ?? []) await app.register(p, ctx);
  return app;
}
