// Admin actions over HTTP go in the coordinator's tamper-evident audit log: every write
// request (job submit/cancel, site enable/disable, ...) once answered, with who (the admin
// token's configured NAME, never the token), what (method + path), from where and the outcome.
// Refused writes (401/403/429) are recorded too, as admin_denied. The state changes themselves
// are audited by the engine inside their transactions (job_submitted, job_cancelled, ...).
import type { FastifyInstance } from 'fastify';
import { checkAdminToken, type CoordinatorConfig } from '../config.ts';
import type { Database } from 'better-sqlite3';
import { appendNow } from '../store/audit.ts';

export function installAdminAudit(app: FastifyInstance, db: () => Database, config: Pick<CoordinatorConfig, 'admin_tokens'>): void {
  app.addHook('onResponse', async (req, reply) => {
    if (req.method === 'GET' || req.method === 'HEAD' || req.method === 'OPTIONS') return;
    const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
    const name = m ? checkAdminToken(config, m[1].trim()) : undefined;
    const ok = reply.statusCode < 400;
    const denied = reply.statusCode === 401 || reply.statusCode === 403 || reply.statusCode === 429;
    const path = req.url.split('?')[0];
    const query = req.url.includes('?') ? req.url.slice(req.url.indexOf('?') + 1).slice(0, 500) : undefined;
    try {
      appendNow(db(), name ? `admin:${name}` : 'anonymous', denied ? 'admin_denied' : 'admin_action', `${req.method} ${path}`.slice(0, 500), {
        method: req.method, path: path.slice(0, 500), query, status: reply.statusCode, ok, ip: req.ip, token_presented: !!m,
      });
    } catch {
      /* an audit write failure must not take the API down; the engine's own entries still stand */
    }
  });
}
