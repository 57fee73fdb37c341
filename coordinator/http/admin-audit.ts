// Admin actions over HTTP go in the coordinator's tamper-evident audit log: every write
// request (job submit/cancel, site enable/disable, ...) once answered, with who (the token's
// role and NAME, never the token), what (method + path), from where and the outcome.
// Refused writes (401/403/429) are recorded too, as admin_denied. The state changes themselves
// are audited by the engine inside their transactions (job_submitted, job_cancelled, ...).
import type { FastifyInstance, FastifyRequest } from 'fastify';
import type { Database } from 'better-sqlite3-multiple-ciphers';
import { appendNow } from '../store/audit.ts';
import type { SurvivedErrors } from '../metrics/survived-errors.ts';

/** "role:name" of the request's caller, or anonymous. */
export const actorOf = (req: FastifyRequest) => (req.caller ? `${req.caller.role}:${req.caller.name}` : 'anonymous');

/** Append one HTTP audit entry. A failed write must not take the API down (the engine's own
 *  entries still stand): it is logged and counted instead. */
export function auditHttp(db: Database, errors: SurvivedErrors, actor: string, action: string, subject: string, details: Record<string, unknown>): void {
  try {
    appendNow(db, actor, action, subject.slice(0, 500), details);
  } catch (e) {
    errors.record('audit_write', e, { action, subject: subject.slice(0, 200), actor });
  }
}

export function installAdminAudit(app: FastifyInstance, db: () => Database, errors: SurvivedErrors): void {
  app.addHook('onResponse', async (req, reply) => {
    if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS') return;
    const ok = reply.statusCode < 400;
    const denied = reply.statusCode === 401 || reply.statusCode === 403 || reply.statusCode === 429;
    const path = req.url.split('?')[0];
    const query = req.url.includes('?') ? req.url.slice(req.url.indexOf('?') + 1).slice(0, 500) : undefined;
    auditHttp(db(), errors, actorOf(req), denied ? 'admin_denied' : 'admin_action', `${req.method} ${path}`, {
      method: req.method, path: path.slice(0, 500), query, status: reply.statusCode, ok, ip: req.ip, token_presented: req.headers.authorization !== undefined,
    });
  });
}
