// Start a site agent from an enrolled site dir: validate the config, open the site store,
// connect outbound to the coordinator with the site certificate, and run until stopped.

import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { join } from 'node:path';
import type Database from 'better-sqlite3-multiple-ciphers';
import pino from 'pino';
import { loadSiteConfig, type SiteConfig } from '../config.ts';
import { readEnrollment, diagnoseSiteCredentials, AGENT_VERSION } from '../enroll.ts';
import { sitePaths } from '../../shared/tls.ts';
import { SiteAgent } from './agent.ts';
import type { AgentLogger } from './task-context.ts';
import { receiveGlobalAdapter } from '../serve/gate/receive.ts';
import { AuditLog } from '../../shared/audit.ts';
import { createGrpcWire } from './grpc-wire.ts';
import type { FederationWire } from './wire.ts';
import { openSiteDb } from '../site-db.ts';
import { isFedloraError } from '../../shared/errors.ts';

export interface RunningSite {
  agent: SiteAgent;
  siteId: string;
  config: SiteConfig;
  httpPort: number | null;
  stop(): Promise<void>;
}

export interface StartSiteOptions {
  /** Override the federation endpoint recorded at enrollment (e.g. through a proxy in tests). */
  endpoint?: string;
  wire?: FederationWire;
  logger?: AgentLogger;
  logLevel?: string;
}

export async function startSiteAgent(siteDir: string, o: StartSiteOptions = {}): Promise<RunningSite> {
  const config = loadSiteConfig(siteDir);
  const enrollment = readEnrollment(siteDir);
  await diagnoseSiteCredentials(siteDir); // a clear error for an expired or foreign certificate, before connecting
  const log: AgentLogger = o.logger ?? pino({ level: o.logLevel ?? process.env.FEDLORA_LOG_LEVEL ?? 'info', base: { svc: 'site-agent', site: enrollment.siteId } });
  const db = openSiteDb(siteDir);
  const wire = o.wire ?? createGrpcWire(siteDir, o.endpoint ?? enrollment.federationEndpoint, AGENT_VERSION, {
    reconnectInitialMs: config.network.reconnect_initial_ms,
    reconnectMaxMs: config.network.reconnect_max_ms,
  });
  // The release gate runs the safety suite (hundreds of generations) on each new global version:
  // the federation's round must not wait for it, so candidates are decided one at a time behind
  // the agent's work; stopping the agent aborts the one in progress (it stays undecided, and
  // `fedlora site adapter` decides it by hand).
  const gateStop = new AbortController();
  let gates: Promise<void> = Promise.resolve();
  const agent = new SiteAgent({
    siteDir,
    siteId: enrollment.siteId,
    config,
    db,
    wire,
    log,
    agentVersion: AGENT_VERSION,
    // The assistant's release gate: candidate + safety suite + decision; never fails the task.
    onGlobalEvaluated: async (g): Promise<void> => {
      gates = gates.then(() => (gateStop.signal.aborted ? undefined : receiveGlobalAdapter({ siteDir, db, audit: new AuditLog(db, 'site_audit'), config, log, signal: gateStop.signal }, g)))
        .catch((e) => log.warn({ job: g.jobId, version: g.version, err: (e as Error).message }, 'release gate: candidate not decided'));
    },
  });
  agent.start();
  let httpClose: (() => Promise<void>) | null = null;
  let httpPort: number | null = null;
  if (config.http.port !== null) {
    const { startSiteHttp } = await import('../http/index.ts');
    const h = await startSiteHttp({ host: config.http.host, port: config.http.port, getStatus: () => ({ siteId: enrollment.siteId, enrollment, ...agent.status }), db, config });
    httpPort = h.port;
    httpClose = h.close;
  }
  writeFileSync(join(siteDir, 'agent.pid'), String(process.pid));
  log.info({ endpoint: o.endpoint ?? enrollment.federationEndpoint, http_port: httpPort }, 'site agent started');
  return {
    agent,
    siteId: enrollment.siteId,
    config,
    httpPort,
    async stop() {
      await agent.stop();
      gateStop.abort();
      await gates;
      await httpClose?.();
      db.close();
    },
  };
}

/** A short human-readable status of a site dir (no connection needed). */
export function siteStatusSummary(siteDir: string): Record<string, unknown> {
  const enrolled = existsSync(sitePaths(siteDir).cert);
  const out: Record<string, unknown> = { siteDir, enrolled };
  if (enrolled) {
    const e = readEnrollment(siteDir);
    out.siteId = e.siteId;
    out.federationEndpoint = e.federationEndpoint;
    out.certificateNotAfter = new Date(e.notAfterUnixMs).toISOString();
  }
  if (existsSync(join(siteDir, 'site.sqlite'))) {
    let db: Database.Database;
    try {
      db = openSiteDb(siteDir, { readonly: true });
    } catch (e) {
      out.database = isFedloraError(e) ? e.toString() : (e as Error).message;
      return out;
    }
    try {
      const has = (t: string) => !!db.prepare("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?").get(t);
      if (has('data_records')) out.records = (db.prepare('SELECT COUNT(*) n FROM data_records').get() as { n: number }).n;
      if (has('data_quarantine')) out.quarantined = (db.prepare('SELECT COUNT(*) n FROM data_quarantine').get() as { n: number }).n;
      if (has('site_outbox')) out.outboxPending = db.prepare("SELECT update_id, task_id, created_ms FROM site_outbox WHERE state = 'pending' ORDER BY created_ms").all();
      if (has('site_audit')) {
        out.egress = db.prepare("SELECT ts, subject, details FROM site_audit WHERE action = 'egress' ORDER BY seq DESC LIMIT 10").all();
        out.recentTasks = db.prepare("SELECT ts, action, subject FROM site_audit WHERE action LIKE 'task_%' ORDER BY seq DESC LIMIT 10").all();
      }
    } finally {
      db.close();
    }
  }
  return out;
}
