// The site's own small HTTP listener (loopback by default; config http.host/port): Prometheus
// `/metrics`, a local admin page `/` for the hospital's operators (enrollment, dataset summary,
// the site policy, WHAT LEFT THE SITE from the tamper-evident `site_audit` log, recent rounds)
// and `/api/status` (the same as JSON). Read-only: it changes nothing, and shows only counts
// and audit entries (no record content). Counters come from the audit log, so they survive
// restarts; rounds done / tokens per second / connected come from the running agent.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Database } from 'better-sqlite3-multiple-ciphers';
import { fail } from '../../shared/errors.ts';
import { PROMETHEUS_CONTENT_TYPE } from '../../shared/prometheus.ts';
import { siteMetricsText } from './site-metrics.ts';
import { readSiteView } from './site-view.ts';
import { renderSitePage } from './page.ts';

export interface SiteHttpOptions {
  host: string;
  port: number;
  /** The running agent's status (AgentStatus + siteId, enrollment) — read on every request. */
  getStatus: () => object;
  db: Database;
  /** The site config (SiteConfig); `policy` is shown. */
  config: object;
}

export interface SiteHttp {
  port: number;
  close(): Promise<void>;
}

const HEADERS = {
  'X-Content-Type-Options': 'nosniff',
  'X-Frame-Options': 'DENY',
  'Referrer-Policy': 'no-referrer',
  'Cache-Control': 'no-store',
  'Content-Security-Policy': "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
};

export async function startSiteHttp(o: SiteHttpOptions): Promise<SiteHttp> {
  const handle = (req: IncomingMessage, res: ServerResponse) => {
    const send = (status: number, type: string, body: string) => {
      res.writeHead(status, { ...HEADERS, 'Content-Type': type, 'Content-Length': Buffer.byteLength(body) });
      res.end(req.method === 'HEAD' ? undefined : body);
    };
    try {
      if (req.method !== 'GET' && req.method !== 'HEAD') {
        return send(405, 'application/json', JSON.stringify({ error: { code: 'FEDLORA_ERR_INVALID_ARGUMENT', message: `${req.method} not allowed: this page is read-only` } }));
      }
      const path = (req.url ?? '/').split('?')[0];
      const status = o.getStatus() as Record<string, unknown>;
      if (path === '/metrics') return send(200, PROMETHEUS_CONTENT_TYPE, siteMetricsText(status, o.db));
      if (path === '/api/status') return send(200, 'application/json; charset=utf-8', JSON.stringify(readSiteView(status, o.db, o.config), null, 2));
      if (path === '/' || path === '/index.html') return send(200, 'text/html; charset=utf-8', renderSitePage(readSiteView(status, o.db, o.config)));
      return send(404, 'application/json', JSON.stringify({ error: { code: 'FEDLORA_ERR_NOT_FOUND', message: `no route ${req.method} ${path}` } }));
    } catch (e) {
      return send(500, 'application/json', JSON.stringify({ error: { code: 'FEDLORA_ERR_INTERNAL', message: (e as Error).message } }));
    }
  };
  const server = createServer(handle);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (e) => reject(fail('FEDLORA_ERR_UNAVAILABLE', `site HTTP cannot listen on ${o.host}:${o.port}: ${e.message}`)));
    server.listen(o.port, o.host, () => resolve());
  });
  return {
    port: (server.address() as AddressInfo).port,
    close: () => new Promise<void>((resolve) => {
      server.closeAllConnections?.();
      server.close(() => resolve());
    }),
  };
}
