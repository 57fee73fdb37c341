// The coordinator's HTTP API (fastify). Route groups are encapsulated plugins; every route
// declares its zod schemas (validation, serialisation and the generated OpenAPI document at
// /api/openapi.json) and who may call it (config.access: roles of the bearer token, from
// api-tokens.ts; checked by access.ts; per-site data further by site-visibility.ts). Errors:
// {error: {code, message}} with the catalogue's HTTP status. Also: Prometheus /metrics and the
// consortium dashboard (static files under /dashboard/).
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import swagger from '@fastify/swagger';
import { jsonSchemaTransform, jsonSchemaTransformObject, serializerCompiler, validatorCompiler, type ZodTypeProvider } from 'fastify-type-provider-zod';
import { isFedloraError, fail, ERRORS } from '../../shared/errors.ts';
import type { RoundEngine } from '../rounds/index.ts';
import type { CoordinatorConfig } from '../config.ts';
import { ANY_ROLE, installAccess } from './access.ts';
import { apiTokenAuthenticator } from './api-tokens.ts';
import { installReadAudit } from './read-audit.ts';
import { healthRoutes, siteRoutes } from './routes-sites.ts';
import { jobRoutes } from './routes-jobs.ts';
import { adapterRoutes } from './routes-adapters.ts';
import { lineageRoutes } from './routes-lineage.ts';
import { metricsRoutes } from './routes-metrics.ts';
import { examRoutes } from './routes-exams.ts';
import { installRateLimits, type RateLimits } from './rate-limits.ts';
import { installSecurityHeaders } from './security-headers.ts';
import { installAdminAudit } from './admin-audit.ts';
import { dashboardRoutes } from './routes-dashboard.ts';
import { prometheusRoutes } from './routes-prometheus.ts';
import { survivedErrors, type SurvivedErrors } from '../metrics/survived-errors.ts';
import { pino } from 'pino';
import { media } from './schemas.ts';
import { z } from 'zod';

export interface HttpDeps {
  engine: RoundEngine;
  config: Pick<CoordinatorConfig, 'admin_tokens'>;
  /** Public key/certificate PEM that verifies manifests (served at /api/manifest-key). */
  manifestKeyPem: string;
  logger?: boolean;
  /** Structured log of admin actions (pino-compatible; fields job/site/admin). Default: none. */
  log?: AdminLog;
  /** Rate limits (default DEFAULT_RATE_LIMITS). */
  rateLimits?: RateLimits;
  /** Where survived errors (failed audit writes) are logged and counted for /metrics; default:
   *  a counter of this app's own that logs to stderr. */
  errors?: SurvivedErrors;
}

export interface AdminLog {
  info(obj: Record<string, unknown>, msg: string): void;
}
const NO_LOG: AdminLog = { info: () => undefined };

/** "querystring.kind: Invalid option: ..." from fastify's validation error. */
function validationMessage(e: { validation?: { instancePath?: string; message?: string }[]; validationContext?: string; message?: string }): string {
  const first = e.validation?.[0];
  if (!first) return e.message ?? 'bad request';
  const path = (first.instancePath ?? '').split('/').filter(Boolean).join('.');
  return `${e.validationContext ?? 'request'}${path ? `.${path}` : ''}: ${first.message ?? 'invalid'}`;
}

export async function buildHttpApp(d: HttpDeps): Promise<FastifyInstance> {
  const app = Fastify({ logger: d.logger ?? false, bodyLimit: 16 * 1024 * 1024 });
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(serializerCompiler);
  await installSecurityHeaders(app); // first: its headers are on every answer, 429s included
  await installRateLimits(app, d.rateLimits);
  installAccess(app, apiTokenAuthenticator(() => d.engine.store.db, d.config)); // token expiry on the wall clock
  const errors = d.errors ?? survivedErrors(pino({ base: { svc: 'coordinator-http' } }, pino.destination(2)));
  installAdminAudit(app, () => d.engine.store.db, errors); // HTTP writes -> audit_log
  installReadAudit(app, () => d.engine.store.db, errors); // reads of per-site data and downloads -> audit_log
  await app.register(swagger, {
    openapi: {
      openapi: '3.1.0',
      info: { title: 'fedlora coordinator API', version: '1.0.0', description: 'Jobs, rounds, published adapters, metrics and privacy of the federated LoRA coordinator. Routes with roles need Authorization: Bearer <token>.' },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } } },
    },
    transform: jsonSchemaTransform,
    transformObject: jsonSchemaTransformObject,
  });

  app.addContentTypeParser(['application/yaml', 'text/yaml', 'application/x-yaml', 'text/plain'], { parseAs: 'string' }, (_req, body, done) => done(null, body));
  app.setErrorHandler((err: unknown, _req: FastifyRequest, reply: FastifyReply) => {
    if (isFedloraError(err)) return reply.status(err.httpStatus).send({ error: { code: err.code, message: err.message } });
    const e = err as { validation?: { instancePath?: string; message?: string }[]; validationContext?: string; statusCode?: number; message?: string };
    if (e.validation || (e.statusCode && e.statusCode >= 400 && e.statusCode < 500)) {
      return reply.status(e.statusCode ?? 400).send({ error: { code: 'FEDLORA_ERR_INVALID_ARGUMENT', message: e.validation ? validationMessage(e) : (e.message ?? 'bad request') } });
    }
    return reply.status(500).send({ error: { code: 'FEDLORA_ERR_INTERNAL', message: e.message ?? String(err) } });
  });
  app.setNotFoundHandler((req, reply) => {
    reply.status(ERRORS.FEDLORA_ERR_NOT_FOUND.http).send({ error: { code: 'FEDLORA_ERR_NOT_FOUND', message: `no route ${req.method} ${req.url.split('?')[0]}` } });
  });

  const api = app.withTypeProvider<ZodTypeProvider>();
  api.get('/api/openapi.json', { config: { access: ANY_ROLE }, schema: { summary: 'this document (OpenAPI 3.1, generated from the route schemas)', response: { 200: z.looseObject({ openapi: z.string(), paths: z.record(z.string(), z.unknown()) }) } } }, async () => app.swagger() as { openapi: string; paths: Record<string, unknown> });
  api.get('/api/manifest-key', { config: { access: ANY_ROLE }, schema: { summary: 'PEM certificate/public key that verifies publication manifests', response: { 200: media('application/x-pem-file', 'PEM') } } },
    async (_req, reply) => reply.type('application/x-pem-file').send(d.manifestKeyPem));
  const log = d.log ?? NO_LOG;
  await app.register(healthRoutes, { engine: d.engine });
  await app.register(siteRoutes, { engine: d.engine, log });
  await app.register(jobRoutes, { engine: d.engine, log });
  await app.register(adapterRoutes, { engine: d.engine });
  await app.register(lineageRoutes, { engine: d.engine });
  await app.register(metricsRoutes, { engine: d.engine, log });
  await app.register(examRoutes, { engine: d.engine, log });
  await app.register(prometheusRoutes, { engine: d.engine, errors });
  await app.register(dashboardRoutes);
  return app;
}
