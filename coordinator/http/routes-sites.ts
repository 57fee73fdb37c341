// /api/health and /api/sites.
import type { FastifyPluginAsync } from 'fastify';
import { fail } from '../../shared/errors.ts';
import { getPkiSiteStatus, setPkiSiteStatus } from '../enrollment.ts';
import type { RoundEngine } from '../rounds/engine.ts';
import type { AdminGuard, AdminLog } from './app.ts';

export const healthRoutes: FastifyPluginAsync<{ engine: RoundEngine }> = async (app, { engine }) => {
  app.get('/api/health', async () => ({ status: 'ok', time: new Date(engine.now()).toISOString(), jobs_running: engine.store.jobs('running').length }));
};

export const siteRoutes: FastifyPluginAsync<{ engine: RoundEngine; requireAdmin: AdminGuard; log: AdminLog }> = async (app, { engine, requireAdmin, log }) => {
  app.get('/api/sites', async () => {
    const since = engine.now() - engine.heartbeatTimeoutMs;
    return {
      sites: engine.store.sites().map((s) => ({
        id: s.id, status: s.status, online: s.status === 'active' && (s.last_seen_ms ?? 0) >= since, last_seen: s.last_seen_ms ? new Date(s.last_seen_ms).toISOString() : null,
        agent_version: s.agent_version, state: s.state, cert_serial: s.cert_serial, cert_not_after: s.cert_not_after_ms ? new Date(s.cert_not_after_ms).toISOString() : null,
      })),
    };
  });
  app.post<{ Params: { id: string }; Body: { status?: string } }>('/api/sites/:id/status', async (req) => {
    const admin = requireAdmin(req);
    const st = req.body?.status;
    if (st !== 'active' && st !== 'disabled') throw fail('FEDLORA_ERR_INVALID_ARGUMENT', 'body.status must be active or disabled');
    if (!engine.store.site(req.params.id)) throw fail('FEDLORA_ERR_NOT_FOUND', `site ${req.params.id} is unknown`);
    // Both views agree: ours (selection) and C1's pki_sites (checked on every gRPC call).
    engine.store.tx(() => {
      engine.store.setSiteStatus(req.params.id, st);
      const pki = getPkiSiteStatus(engine.store.db, req.params.id);
      if (pki === 'revoked') throw fail('FEDLORA_ERR_CERT_REVOKED', `site ${req.params.id} is revoked; it must enroll again`);
      if (pki) setPkiSiteStatus(engine.store.db, req.params.id, st, engine.now());
    });
    log.info({ site: req.params.id, admin, status: st }, 'site status changed');
    return { id: req.params.id, status: st };
  });
};
