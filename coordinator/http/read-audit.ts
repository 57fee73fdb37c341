// Reads of per-site data and adapter downloads go in the audit log too: routes that declare
// config.audit get one entry per answer (refusals included) with who (role:name), what, the
// job, which sites' per-site data the answer held (set by the handler in req.auditSites),
// from where and the status.
import type { FastifyInstance } from 'fastify';
import type { Database } from 'better-sqlite3-multiple-ciphers';
import { actorOf, auditHttp } from './admin-audit.ts';
import type { SurvivedErrors } from '../metrics/survived-errors.ts';

export type AuditedRead = 'site_metrics_read' | 'adapter_download';

declare module 'fastify' {
  interface FastifyContextConfig {
    audit?: AuditedRead;
  }
  interface FastifyRequest {
    auditSites: string[] | null;
  }
}

export function installReadAudit(app: FastifyInstance, db: () => Database, errors: SurvivedErrors): void {
  app.decorateRequest('auditSites', null);
  app.addHook('onResponse', async (req, reply) => {
    const action = req.routeOptions.config?.audit;
    if (!action) return;
    const path = req.url.split('?')[0];
    const query = req.url.includes('?') ? req.url.slice(req.url.indexOf('?') + 1).slice(0, 500) : undefined;
    const job = (req.params as { id?: string } | undefined)?.id;
    auditHttp(db(), errors, actorOf(req), action, `${req.method} ${path}`, { job, sites: req.auditSites, query, status: reply.statusCode, ip: req.ip });
  });
}
