// The site's own HTTP listener: Prometheus /metrics (parsed), the local admin page (what left
// the site, from the site_audit log; dataset counts; policy; recent rounds) and /api/status.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import Database from 'better-sqlite3-multiple-ciphers';
import { join } from 'node:path';
import { startSiteHttp, type SiteHttp } from '../../site-agent/http/index.ts';
import { AuditLog } from '../../shared/audit.ts';
import { SiteDataStore } from '../../site-agent/data/store.ts';
import { SitePolicySchema } from '../../site-agent/config.ts';
import { rmDir, tempDir } from '../coordinator/helpers.ts';
import { parsePrometheus, sampleValue } from './fixtures.ts';
import { openSiteDb } from '../../site-agent/site-db.ts';

let dir: string;
let db: Database.Database;
let http: SiteHttp;
const status = {
  siteId: 'site-<b>a</b>', enrollment: { siteId: 'site-a', federationEndpoint: '127.0.0.1:7443', notAfterUnixMs: Date.UTC(2027, 0, 1), enrolledAtMs: Date.UTC(2026, 0, 1), caSha256: 'c'.repeat(64) },
  state: 'training', connected: true, currentTaskId: 'job-1.r2.a1.site-a', lastError: null as string | null, trainingTokensPerSecond: 812.5,
  rounds: [{ jobId: 'job-1', round: 1, status: 'done', at: '2026-11-22T10:00:00.000Z' }, { jobId: 'job-1', round: 2, status: 'failed: FEDLORA_ERR_TRAINING', at: '2026-11-22T11:00:00.000Z' }],
};
const policy = SitePolicySchema.parse({ max_epsilon: 8, allow_cross_eval: true });

beforeAll(async () => {
  dir = tempDir('site-http');
  db = openSiteDb(dir);
  new SiteDataStore(db, false);
  const ins = db.prepare("INSERT INTO data_records (id, patient_key, lang, json, source) VALUES (?, ?, ?, '{}', 'test')");
  for (let i = 0; i < 5; i++) ins.run(`r${i}`, `p${i}`, i < 3 ? 'en' : 'zh');
  db.prepare("INSERT INTO data_quarantine (reason, source, detail) VALUES ('missing_field', 'x.csv', 'row 3')").run();
  const audit = new AuditLog(db, 'site_audit');
  audit.append('site-a', 'task_received', 'job-1/1', { task_id: 't1' });
  audit.append('site-a', 'egress', 'job-1/1', { what: 'adapter update', bytes: 4096, sha256: 'ab'.repeat(32), to: 'coordinator', num_examples: 40 });
  audit.append('site-a', 'egress', 'job-1/1', { what: 'aggregate metrics', phase: 'eval', metrics: ['global.loss'], to: 'coordinator' });
  audit.append('site-a', 'egress', 'job-1/2', { what: 'adapter update', bytes: 1000, sha256: 'cd'.repeat(32), to: 'coordinator', num_examples: 40 });
  http = await startSiteHttp({ host: '127.0.0.1', port: 0, getStatus: () => status, db, config: { policy } });
});
afterAll(async () => {
  await http.close();
  db.close();
  rmDir(dir);
});

const get = (path: string) => fetch(`http://127.0.0.1:${http.port}${path}`);

describe('site HTTP', () => {
  it('/metrics: valid exposition with rounds, updates, bytes sent, tokens/s, connected', async () => {
    const r = await get('/metrics');
    expect(r.headers.get('content-type')).toBe('text/plain; version=0.0.4; charset=utf-8');
    const fams = parsePrometheus(await r.text());
    for (const f of fams.values()) expect(f.help!.length, `HELP of ${f.name}`).toBeGreaterThan(10);
    expect(sampleValue(fams, 'fedlora_site_rounds_done_total')).toBe(1);
    expect(sampleValue(fams, 'fedlora_site_rounds_failed_total')).toBe(1);
    expect(sampleValue(fams, 'fedlora_site_updates_sent_total')).toBe(2);
    expect(sampleValue(fams, 'fedlora_site_update_bytes_sent_total')).toBe(5096);
    expect(sampleValue(fams, 'fedlora_site_metric_reports_sent_total')).toBe(1);
    expect(sampleValue(fams, 'fedlora_site_training_tokens_per_second')).toBe(812.5);
    expect(sampleValue(fams, 'fedlora_site_connected')).toBe(1);
    expect(sampleValue(fams, 'fedlora_site_state', { state: 'training' })).toBe(1);
    expect(sampleValue(fams, 'fedlora_site_state', { state: 'idle' })).toBe(0);
    status.connected = false;
    expect(sampleValue(parsePrometheus(await (await get('/metrics')).text()), 'fedlora_site_connected')).toBe(0);
    status.connected = true;
  });

  it('local page: what left the site, dataset counts, policy, rounds; values are HTML-escaped', async () => {
    const r = await get('/');
    expect(r.status).toBe(200);
    expect(r.headers.get('content-security-policy')).toMatch(/default-src 'none'/);
    const html = await r.text();
    expect(html).toContain('2 adapter update(s), 5.0 KiB');
    expect(html).toContain('1 aggregate metric report(s)');
    expect((html.match(/data-egress="/g) ?? []).length).toBe(3);
    expect(html).toContain('abababababababab…');
    expect(html).toContain('127.0.0.1:7443');
    expect(html).toMatch(/<th>records<\/th><td>5<\/td>/);
    expect(html).toContain('{&quot;en&quot;:3,&quot;zh&quot;:2}');
    expect(html).toMatch(/<th>max_epsilon<\/th><td>8<\/td>/);
    expect(html).toMatch(/<th>allow_cross_eval<\/th><td>true<\/td>/);
    expect(html).toMatch(/id="metrics-sharing">Per-site metrics on the coordinator's API are visible to <b>consortium admins only<\/b> \(policy.share_site_metrics: consortium;/);
    expect(html).toContain('failed: FEDLORA_ERR_TRAINING');
    expect(html).not.toContain('<b>a</b>');
    expect(html).toContain('site-&lt;b&gt;a&lt;/b&gt;');
    const s = await (await get('/api/status')).json();
    expect(s.egress_totals).toEqual({ updates: 2, update_bytes: 5096, metric_reports: 1, other: 0 });
    expect(s.dataset).toMatchObject({ available: true, records: 5, quarantined: 1, quarantine_by_reason: { missing_field: 1 } });
    expect(s.egress.map((e: { seq: number }) => e.seq)).toEqual([4, 3, 2]);
  });

  it('read-only and 404s', async () => {
    expect((await fetch(`http://127.0.0.1:${http.port}/`, { method: 'POST' })).status).toBe(405);
    expect((await get('/nope')).status).toBe(404);
  });

  it('works on an empty site database (no data or audit tables yet)', async () => {
    const empty = new Database(':memory:');
    const h2 = await startSiteHttp({ host: '127.0.0.1', port: 0, getStatus: () => ({ state: 'starting', connected: false, rounds: [] }), db: empty, config: {} });
    try {
      const html = await (await fetch(`http://127.0.0.1:${h2.port}/`)).text();
      expect(html).toContain('nothing has left this site yet');
      expect(html).toContain('no data ingested yet');
      const fams = parsePrometheus(await (await fetch(`http://127.0.0.1:${h2.port}/metrics`)).text());
      expect(sampleValue(fams, 'fedlora_site_updates_sent_total')).toBe(0);
    } finally {
      await h2.close();
      empty.close();
    }
  });
});
