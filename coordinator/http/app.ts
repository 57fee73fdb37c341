// The coordinator's HTTP API (fastify). Route groups are encapsulated plugins; read routes are
// open on the HTTP listener (bound to 127.0.0.1 by default), writes need an admin bearer token
// (stored as sha256 in coordinator.yaml). Errors: {error: {code, message}} with the
// catalogue's HTTP status. Security headers on every response. Also: Prometheus /metrics and
// the researchers' dashboard (static files, /dashboard/, same read-open/write-token rule).
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { isFedloraError, fail, ERRORS } from '../../shared/errors.ts';
import type { RoundEngine } from '../rounds/engine.ts';
import { checkAdminToken, type CoordinatorConfig } from '../config.ts';
import { healthRoutes, siteRoutes } from './routes-sites.ts';
import { jobRoutes } from './routes-jobs.ts';
import { adapterRoutes } from './routes-adapters.ts';
import { metricsRoutes } from './routes-metrics.ts';
import { OPENAPI } from './openapi.ts';
import { installRateLimit } from './rate-limit.ts';
import { installAdminAudit } from './admin-audit.ts';
import { dashboardRoutes } from './routes-dashboard.ts';
import { prometheusRoutes } from './routes-prometheus.ts';

export interface HttpDeps {
  engine: RoundEngine;
  config: Pick<CoordinatorConfig, 'admin_tokens'>;
  /** Public key/certificate PEM that verifies manifests (served at /api/manifest-key). */
  manifestKeyPem: string;
  logger?: boolean;
  /** Structured log of admin actions (pino-compatible; fields job/site/admin). Default: none. */
  log?: AdminLog;
}

export interface AdminLog {
  info(obj: Record<string, unknown>, msg: string): void;
}
const NO_LOG: AdminLog = { info: () => undefined };

/** Throws unless the request carries a known admin token; returns the token's name. */
export type AdminGuard = (req: FastifyRequest) => string;

export async function buildHttpApp(d: HttpDeps): Promise<FastifyInstance> {
  const app = Fastify({ logger: d.logger ?? false, bodyLimit: 16 * 1024 * 1024 });
  installRateLimit(app); // per-IP token buckets, stricter for admin writes and failed auth (429)
  installAdminAudit(app, () => d.engine.store.db, d.config); // HTTP writes -> audit_log
  const requireAdmin: AdminGuard = (req) => {
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    if (!m) throw fail('FEDLORA_ERR_UNAUTHENTICATED', 'this route needs an admin token: Authorization: Bearer <token>');
    const name = checkAdminToken(d.config, m[1].trim());
    if (!name) throw fail('FEDLORA_ERR_PERMISSION', 'admin token not recognised');
    return name;
  };

  app.addContentTypeParser(['application/yaml', 'text/yaml', 'application/x-yaml', 'text/plain'], { parseAs: 'string' }, (_req, body, done) => done(null, body));
  app.addHook('onSend', async (_req, reply, payload) => {
    reply.header('X-Content-Type-Options', 'nosniff');
    reply.header('X-Frame-Options', 'DENY');
    reply.header('Referrer-Policy', 'no-referrer');
    // The dashboard sets its own (self-hosted scripts/styles only); everything else gets none.
    if (!reply.hasHeader('Content-Security-Policy')) reply.header('Content-Security-Policy', "default-src 'none'; frame-ancestors 'none'");
    reply.header('Cross-Origin-Resource-Policy', 'same-origin');
    if (!reply.hasHeader('Cache-Control')) reply.header('Cache-Control', 'no-store');
    return payload;
  });
  app.setErrorHandler((err: unknown, _req: FastifyRequest, reply: FastifyReply) => {
    if (isFedloraError(err)) return reply.status(err.httpStatus).send({ error: { code: err.code, message: err.message } });
    const e = err as { validation?: unknown; statusCode?: number; message?: string };
    if (e.validation || (e.statusCode && e.statusCode >= 400 && e.statusCode < 500)) {
      return reply.status(e.statusCode ?? 400).send({ error: { code: 'FEDLORA_ERR_INVALID_ARGUMENT', message: e.message ?? 'bad request' } });
    }
    return reply.status(500).send({ error: { code: 'FEDLORA_ERR_INTERNAL', message: e.message ?? String(err) } });
  });
  app.setNotFoundHandler((req, reply) => {
    reply.status(ERRORS.FEDLORA_ERR_NOT_FOUND.http).send({ error: { code: 'FEDLORA_ERR_NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}` } });
  });

  app.get('/api/openapi.json', async () => OPENAPI);
  app.get('/api/manifest-key', async (_req, reply) => reply.type('application/x-pem-file').send(d.manifestKeyPem));
  await app.register(healthRoutes, { engine: d.engine });
  const log = d.log ?? NO_LOG;
  await app.register(siteRoutes, { engine: d.engine, requireAdmin, log });
  await app.register(jobRoutes, { engine: d.engine, requireAdmin, log });
  await app.register(adapterRoutes, { engine: d.engine });
  await app.register(metricsRoutes, { engine: d.engine, requireAdmin, log });
  await app.register(prometheusRoutes, { engine: d.engine });
  await app.register(dashboardRoutes);
  return app;
}
