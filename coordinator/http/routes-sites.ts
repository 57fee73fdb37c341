// /healthz (liveness, no token), /api/health, /api/whoami and /api/sites.
import type { FastifyPluginAsyncZod } from 'fastify-type-provider-zod';
import { z } from 'zod';
import { fail } from '../../shared/errors.ts';
import { setSiteStatus } from '../enrollment.ts';
import type { RoundEngine } from '../rounds/index.ts';
import { ADMIN, ANY_ROLE, READERS, ROLES, callerOf } from './access.ts';
import type { AdminLog } from './app.ts';
import { errors, Health, Site, SiteParams } from './schemas.ts';
import { sharePolicies, DEFAULT_SHARE_POLICY } from './site-visibility.ts';

export const healthRoutes: FastifyPluginAsyncZod<{ engine: RoundEngine }> = async (app, { engine }) => {
  app.get('/healthz', { config: { access: 'public' }, schema: { summary: 'liveness for probes (no token; says nothing but ok)', response: { 200: z.object({ status: z.literal('ok') }) } } },
    async () => ({ status: 'ok' as const }));
  app.get('/api/health', { config: { access: ANY_ROLE }, schema: { summary: 'health and progress: jobs running, sites online', response: { 200: Health } } }, async () => ({
    status: 'ok' as const, time: new Date(engine.now()).toISOString(), jobs_running: engine.store.jobs('running').length,
    sites_online: engine.store.onlineSites(engine.now() - engine.heartbeatTimeoutMs).length, sites_total: engine.store.sites().filter((s) => s.status !== 'revoked').length,
  }));
  app.get('/api/whoami', {
    config: { access: ANY_ROLE },
    schema: { summary: 'the token\'s name, role and expiry (the dashboard shows what the role may see)', response: { 200: z.object({ name: z.string(), role: z.enum(ROLES), expires: z.string().nullable(), source: z.enum(['api_tokens', 'coordinator.yaml']) }) } },
  }, async (req) => {
    const c = callerOf(req);
    const row = c.tokenId ? (engine.store.db.prepare('SELECT expires_ms FROM api_tokens WHERE id = ?').get(c.tokenId) as { expires_ms: number | null } | undefined) : undefined;
    return { name: c.name, role: c.role, expires: row?.expires_ms ? new Date(row.expires_ms).toISOString() : null, source: c.tokenId ? 'api_tokens' as const : 'coordinator.yaml' as const };
  });
};

export const siteRoutes: FastifyPluginAsyncZod<{ engine: RoundEngine; log: AdminLog }> = async (app, { engine, log }) => {
  app.get('/api/sites', { config: { access: READERS }, schema: { summary: 'enrolled sites: last heartbeat, agent, and each site\'s share_site_metrics policy', response: { 200: z.object({ sites: z.array(Site) }) } } }, async () => {
    const since = engine.now() - engine.heartbeatTimeoutMs;
    const policies = sharePolicies(engine.store.db);
    return {
      sites: engine.store.sites().map((s) => ({
        id: s.id, status: s.status, online: s.status === 'active' && (s.last_seen_ms ?? 0) >= since, last_seen: s.last_seen_ms ? new Date(s.last_seen_ms).toISOString() : null,
        agent_version: s.agent_version, state: s.state, cert_serial: s.cert_serial, cert_not_after: s.cert_not_after_ms ? new Date(s.cert_not_after_ms).toISOString() : null,
        share_site_metrics: policies.get(s.id) ?? DEFAULT_SHARE_POLICY,
      })),
    };
  });
  app.post('/api/sites/:id/status', {
    config: { access: ADMIN },
    schema: {
      summary: 'enable or disable a site (a disabled site gets no tasks and its calls are refused)',
      params: SiteParams, body: z.object({ status: z.enum(['active', 'disabled']) }),
      response: { 200: z.object({ id: z.string(), status: z.enum(['active', 'disabled']) }), ...errors(400, 404) },
    },
  }, async (req) => {
    const admin = callerOf(req).name;
    const st = req.body.status;
    // One status (sites.status): what selection reads and what every gRPC call is checked against.
    engine.store.tx(() => {
      const site = engine.store.site(req.params.id);
      if (!site) throw fail('FEDLORA_ERR_NOT_FOUND', `site ${req.params.id} is unknown`);
      if (site.status === 'revoked') throw fail('FEDLORA_ERR_CERT_REVOKED', `site ${req.params.id} is revoked; it must enroll again`);
      setSiteStatus(engine.store.db, req.params.id, st);
    });
    log.info({ site: req.params.id, admin, status: st }, 'site status changed');
    return { id: req.params.id, status: st };
  });
};
