// `fedlora site serve`: the assistant as its own process beside the site agent. Loads the base
// model and the approved adapter version once, opens the site database, and serves until
// SIGTERM, when it stops taking connections and finishes every accepted request first.
import { existsSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { AuditLog } from '../../shared/audit.ts';
import { fail } from '../../shared/errors.ts';
import { loadSiteConfig, type SiteConfig } from '../config.ts';
import { deidentify } from '../data/deid/index.ts';
import { loadOrCreateSiteKey } from '../data/site-key.ts';
import { openSiteDb } from '../site-db.ts';
import type { AssistantDeps } from './answer.ts';
import { makeRequireRole } from './auth.ts';
import { createEngineBackend } from './backend/engine-backend.ts';
import { createVllmBackend } from './backend/vllm-backend.ts';
import type { GenerationBackend } from './backend/types.ts';
import type { ServeConfig } from './config.ts';
import { currentServing, servingFollower, type ServingVersion } from './gate/serving.ts';
import { createServeMetrics } from './metrics.ts';
import { RequestQueue } from './queue.ts';
import { searchPassages } from './kb/store.ts';
import { applyRetention } from './retention.ts';
import { buildServeApp, type ServePlugin } from './server.ts';
import { createWorkbench } from './workbench/index.ts';
import { reviewRoutes } from './review/routes.ts';

export interface ServeOverrides {
  host?: string;
  port?: number;
  backend?: 'engine' | 'vllm';
  vllmUrl?: string;
  /** More page plugins (tests, later pages). */
  plugins?: ServePlugin[];
}

export interface RunningServe {
  url: string;
  port: number;
  siteId: string;
  app: FastifyInstance;
  assistant: AssistantDeps;
  serving(): ServingVersion;
  /** Stop taking connections, answer everything accepted, release the model. */
  close(): Promise<void>;
}

export function siteIdOf(siteDir: string, cfg: SiteConfig): string {
  const enr = join(siteDir, 'enrollment.json');
  if (existsSync(enr)) {
    const id = (JSON.parse(readFileSync(enr, 'utf8')) as { siteId?: string }).siteId;
    if (id) return id;
  }
  return cfg.name ?? basename(siteDir);
}

export async function startServe(siteDir: string, o: ServeOverrides = {}): Promise<RunningServe> {
  const site = loadSiteConfig(siteDir);
  const config: ServeConfig = { ...site.serve, host: o.host ?? site.serve.host, port: o.port ?? site.serve.port, backend: o.backend ?? site.serve.backend, vllm_url: o.vllmUrl ?? site.serve.vllm_url };
  const siteId = siteIdOf(siteDir, site);
  const db = openSiteDb(siteDir);
  const audit = new AuditLog(db, 'site_audit');
  const key = loadOrCreateSiteKey(siteDir, site.data.deid.keyFile);
  const backend = await createBackend(site, config);

  const serving = servingFollower(db, (v) => backend.useVersion(v));
  await serving();

  const assistant: AssistantDeps = {
    db, config, backend, audit,
    queue: new RequestQueue(config.concurrency, config.queue_size),
    metrics: createServeMetrics(),
    retrieve: (question, k) => searchPassages(db, question, k),
    deidentify: (text) => deidentify(text, { mode: 'placeholder', key }).text,
    serving,
  };
  // Retention at start, then every 6 hours.
  const days = config.audit.retention_days;
  const retain = () => {
    if (days !== null) applyRetention(db, audit, days);
  };
  retain();
  const retention = setInterval(retain, 6 * 3600_000);
  retention.unref();
  const https = config.tls ? { cert: readFileSync(config.tls.cert), key: readFileSync(config.tls.key) } : null;
  const workbench = await createWorkbench({ siteDir, site, backend, assistant, audit }).catch(async (e: unknown) => {
    clearInterval(retention);
    await backend.close();
    db.close();
    throw e;
  });
  const review = config.review.enabled ? [reviewRoutes() as unknown as ServePlugin] : [];
  const plugins = [...(workbench ? [workbench.plugin] : []), ...review, ...(o.plugins ?? [])];
  const app = await buildServeApp({ siteId, db, config, audit, requireRole: makeRequireRole(db), assistant }, { https, plugins });
  try {
    await app.listen({ host: config.host, port: config.port });
  } catch (e) {
    clearInterval(retention);
    await workbench?.close();
    await backend.close();
    db.close();
    throw fail('FEDLORA_ERR_UNAVAILABLE', `the assistant cannot listen on ${config.host}:${config.port}: ${(e as Error).message}`);
  }
  const port = (app.server.address() as { port: number }).port;
  const host = config.host.includes(':') ? `[${config.host}]` : config.host;
  return {
    url: `${https ? 'https' : 'http'}://${host}:${port}`,
    port, siteId, app, assistant,
    serving: () => currentServing(db),
    async close() {
      clearInterval(retention);
      // fastify's close waits for accepted requests (queued ones included) to be answered; a
      // keep-alive connection that becomes idle after its answer is closed at once, not after
      // the keep-alive timeout.
      const idle = setInterval(() => app.server.closeIdleConnections(), 50);
      try {
        await app.close();
        await assistant.queue.drain();
      } finally {
        clearInterval(idle);
      }
      await workbench?.close();
      await backend.close();
      db.close();
    },
  };
}

async function createBackend(site: SiteConfig, config: ServeConfig): Promise<GenerationBackend> {
  if (config.backend === 'vllm') {
    if (!config.vllm_url) throw fail('FEDLORA_ERR_CONFIG', 'serve.backend is vllm but no vLLM server is named: set serve.vllm_url or pass --vllm-url URL');
    return createVllmBackend({ url: config.vllm_url, modelDir: site.model.path });
  }
  return createEngineBackend({ modelDir: site.model.path, device: site.model.device });
}
