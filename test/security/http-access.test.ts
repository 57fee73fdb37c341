// Access control of the coordinator's HTTP API: every read needs a token (401 without, with a
// wrong, expired or revoked one; 403 for a role that may not), by role (admin, researcher,
// observer); tokens made, listed and revoked with the real `fedlora coordinator token` CLI and
// stored as sha256 only; per-site data only of sites whose share_site_metrics policy allows the
// caller (sent by the site in its heartbeat over real mutual-TLS gRPC); adapter downloads for
// researchers only when the job allows them; reads of per-site data and downloads audited.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3-multiple-ciphers';
import * as grpc from '@grpc/grpc-js';
import type { FastifyInstance } from 'fastify';
import type { OpenAPIV3_1 } from 'openapi-types';
import { buildHttpApp } from '../../coordinator/http/app.ts';
import { initCoordinator } from '../../coordinator/service.ts';
import { loadCoordinatorConfig } from '../../coordinator/config.ts';
import { addApiToken } from '../../coordinator/http/api-tokens.ts';
import { parseJobSpec } from '../../coordinator/jobs/spec.ts';
import { AuditLog } from '../../shared/audit.ts';
import { fromGrpcError } from '../../shared/errors.ts';
import { SiteAgent, type AgentLogger } from '../../site-agent/agent/agent.ts';
import type { FederationWire } from '../../site-agent/agent/wire.ts';
import { parseSiteConfig } from '../../site-agent/config.ts';
import { openSiteDb } from '../../site-agent/site-db.ts';
import { harness, rawSpec, rmDir, tempDir, type Harness } from '../coordinator/helpers.ts';
import { reportCross, reportEval, runRounds } from '../metrics/fixtures.ts';
import { fedlora, liveCoordinator } from './helpers.ts';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';

// One site per policy, and a second sharing one (so a researcher's aggregates have two visible sites).
const POLICY = { 's-share': 'researchers', 's-share2': 'researchers', 's-consortium': 'consortium', 's-none': 'none' } as const;
const SITES = Object.keys(POLICY);
const J = '/api/jobs/job-a';

let dataDir: string;
let h: Harness;
let app: FastifyInstance;
let yamlAdmin: string;
const tok: Record<'admin' | 'researcher' | 'observer', string> = { admin: '', researcher: '', observer: '' };

beforeAll(async () => {
  dataDir = tempDir('http-access');
  yamlAdmin = (await initCoordinator({ dataDir })).adminToken;
  h = harness({ dir: dataDir });
  app = await buildHttpApp({ engine: h.engine, config: loadCoordinatorConfig(dataDir), manifestKeyPem: h.signer.publicKeyPem });
  for (const [s, p] of Object.entries(POLICY)) h.store.touchSite(s, h.clock.t, { shareSiteMetrics: p });
  await h.engine.submitJob(parseJobSpec(rawSpec({ rounds: 1, min_sites: 4, max_sites: 4 }), 't'), 'job-a');
  await h.engine.submitJob(parseJobSpec(rawSpec({ rounds: 1, min_sites: 4, max_sites: 4, access: { researcher_downloads: true } }), 't'), 'job-open');
  await runRounds(h.engine, 'job-a', SITES, 1, (s) => 10 + SITES.indexOf(s));
  await runRounds(h.engine, 'job-open', SITES, 1);
  reportEval(h.engine, 'job-a', SITES, 1);
  reportCross(h.engine, 'job-a', SITES, 1);
  tok.admin = addApiToken(h.store.db, { name: 'ops', role: 'admin', ttlMs: null }).token;
  tok.observer = addApiToken(h.store.db, { name: 'grafana', role: 'observer', ttlMs: 3_600_000 }).token;
}, TEST_TIMEOUT_MS);
afterAll(async () => {
  await app?.close();
  h?.close();
  if (dataDir) rmDir(dataDir);
});

const get = (url: string, token?: string) => app.inject({ url, headers: token ? { authorization: `Bearer ${token}` } : {} });

describe('tokens: fedlora coordinator token add|list|revoke', () => {
  it('prints a token once, stores only its sha256, lists it without the secret, revokes it; yaml admin tokens keep working', async () => {
    const add = await fedlora(['coordinator', 'token', 'add', '--data-dir', dataDir, '--name', 'ana', '--role', 'researcher', '--expires', '30d']);
    expect(add.status, add.stderr).toBe(0);
    expect(add.stdout).toMatch(/^token for ana \(role researcher, expires \d{4}-\d\d-\d\dT[\d:.]+Z\); shown once, keep it secret:\nflt_[A-Za-z0-9_-]{32}\n$/);
    tok.researcher = add.stdout.trim().split('\n')[1];
    const expires = Date.parse(/expires (\S+)\)/.exec(add.stdout)![1]);
    expect(Math.abs(expires - (Date.now() + 30 * 86_400_000))).toBeLessThan(120_000);

    const who = await get('/api/whoami', tok.researcher);
    expect(who.json()).toEqual({ name: 'ana', role: 'researcher', expires: new Date(expires).toISOString(), source: 'api_tokens' });
    expect((await get('/api/whoami', yamlAdmin)).json()).toMatchObject({ name: 'init', role: 'admin', expires: null, source: 'coordinator.yaml' });

    const list = await fedlora(['coordinator', 'token', 'list', '--data-dir', dataDir]);
    expect(list.status, list.stderr).toBe(0);
    expect(list.stdout).toMatch(/^init\tadmin\tactive\tcoordinator\.yaml\t/m);
    expect(list.stdout).toMatch(/^ana\tresearcher\tactive\tapi_tokens\t/m);
    expect(list.stdout).toMatch(/^grafana\tobserver\tactive\t/m);
    for (const t of [...Object.values(tok), yamlAdmin]) expect(list.stdout).not.toContain(t);

    // at rest: only hashes, in the table and in the audit log
    const db = new Database(join(dataDir, 'coordinator.sqlite'), { readonly: true });
    const rows = JSON.stringify(db.prepare('SELECT * FROM api_tokens').all()) + JSON.stringify(db.prepare('SELECT * FROM audit_log').all());
    db.close();
    for (const t of Object.values(tok)) expect(rows).not.toContain(t);
    expect(new AuditLog(h.store.db).list({ action: 'api_token_added' }).map((e) => e.subject)).toEqual(['ops', 'grafana', 'ana']);

    const dup = await fedlora(['coordinator', 'token', 'add', '--data-dir', dataDir, '--name', 'ana', '--role', 'observer']);
    expect(dup.status).toBe(2);
    expect(dup.stderr).toMatch(/FEDLORA_ERR_INVALID_ARGUMENT: --name ana: a token with this name exists/);
    const badRole = await fedlora(['coordinator', 'token', 'add', '--data-dir', dataDir, '--name', 'x', '--role', 'root']);
    expect(badRole.stderr).toMatch(/FEDLORA_ERR_INVALID_ARGUMENT: --role "root" must be one of admin, researcher, observer/);

    // a token that is revoked, or has expired, is a 401 with its own code
    const temp = (await fedlora(['coordinator', 'token', 'add', '--data-dir', dataDir, '--name', 'temp', '--role', 'observer', '--expires', 'never'])).stdout.trim().split('\n')[1];
    expect((await get('/api/health', temp)).statusCode).toBe(200);
    const rev = await fedlora(['coordinator', 'token', 'revoke', '--data-dir', dataDir, '--name', 'temp']);
    expect(rev.stdout).toMatch(/^token temp \(role observer\) revoked at /);
    const revoked = await get('/api/health', temp);
    expect(revoked.statusCode).toBe(401);
    expect(revoked.json().error).toMatchObject({ code: 'FEDLORA_ERR_API_TOKEN_EXPIRED', message: expect.stringMatching(/^token "temp" was revoked at /) });
    expect((await fedlora(['coordinator', 'token', 'list', '--data-dir', dataDir])).stdout).toMatch(/^temp\tobserver\trevoked\t/m);
    const old = addApiToken(h.store.db, { name: 'old', role: 'researcher', ttlMs: 1000, now: Date.now() - 60_000 }).token;
    const expired = await get('/api/health', old);
    expect(expired.statusCode).toBe(401);
    expect(expired.json().error).toMatchObject({ code: 'FEDLORA_ERR_API_TOKEN_EXPIRED', message: expect.stringMatching(/^token "old" expired at .*fedlora coordinator token add/) });
    const wrong = await get('/api/health', 'flt_not-a-real-token');
    expect(wrong.statusCode).toBe(401);
    expect(wrong.json().error).toEqual({ code: 'FEDLORA_ERR_UNAUTHENTICATED', message: 'token not recognised' });
  }, TEST_TIMEOUT_MS);
});

describe('roles', () => {
  const ALL = ['admin', 'researcher', 'observer'] as const;
  const READERS = ['admin', 'researcher'] as const;
  /** Every GET route that needs a token, with the roles that may read it. */
  const READS: [string, readonly string[]][] = [
    ['/api/health', ALL], ['/api/whoami', ALL], ['/api/openapi.json', ALL], ['/api/manifest-key', ALL], ['/api/jobs', ALL], [J, ALL],
    ['/api/sites', READERS], [`${J}/rounds`, READERS], [`${J}/privacy`, READERS], [`${J}/adapters`, READERS],
    [`${J}/metrics`, READERS], [`${J}/metrics/summary`, READERS], [`${J}/cross-eval`, READERS], [`${J}/exams`, READERS],
    [`${J}/lineage`, READERS], ['/api/versions', READERS],
    [`${J}/adapters/1/adapter_model.safetensors`, ['admin']], // job-a does not let researchers download
    ['/metrics', ['admin', 'observer']],
  ];
  const PUBLIC = ['/healthz', '/', '/dashboard', '/dashboard/', '/dashboard/{file}', '/dashboard/vendor/{file}'];

  it('the table covers every GET route of the OpenAPI document; only liveness and the dashboard page are public', async () => {
    const doc = (await get('/api/openapi.json', tok.admin)).json() as OpenAPIV3_1.Document;
    const gets = Object.entries(doc.paths ?? {}).filter(([, item]) => item?.get);
    const asPath = (u: string) => u.replace('/job-a', '/{id}').replace('/1/adapter_model.safetensors', '/{version}/{file}');
    expect(gets.filter(([, i]) => !i!.get!.security).map(([p]) => p).sort()).toEqual([...PUBLIC].sort());
    expect(gets.filter(([, i]) => i!.get!.security).map(([p]) => p).sort()).toEqual(READS.map(([u]) => asPath(u)).sort());
  });

  it('no token → 401; a role that may not read → 403 FEDLORA_ERR_ROLE; the others → 200', async () => {
    expect(tok.researcher).not.toBe('');
    for (const [url, roles] of READS) {
      const anon = await get(url);
      expect(anon.statusCode, url).toBe(401);
      expect(anon.json().error.code, url).toBe('FEDLORA_ERR_UNAUTHENTICATED');
      expect(anon.json().error.message, url).toMatch(/needs a token: Authorization: Bearer <token>/);
      for (const role of ALL) {
        const r = await get(url, tok[role]);
        if (roles.includes(role)) expect(r.statusCode, `${role} ${url}: ${r.body.slice(0, 200)}`).toBe(200);
        else {
          expect(r.statusCode, `${role} ${url}`).toBe(403);
          expect(r.json().error.code, `${role} ${url}`).toBe('FEDLORA_ERR_ROLE');
        }
      }
    }
    for (const p of ['/healthz', '/dashboard/']) expect((await get(p)).statusCode).toBe(200);
    // writes are the admin's
    for (const role of ['researcher', 'observer'] as const) {
      const w = await app.inject({ method: 'POST', url: `${J}/cancel`, headers: { authorization: `Bearer ${tok[role]}` } });
      expect(w.statusCode).toBe(403);
      expect(w.json().error.message).toBe(`${role} token "${role === 'researcher' ? 'ana' : 'grafana'}" may not POST ${J}/cancel (roles: admin)`);
    }
  });

  it('health tells every role how far the federation is, and nothing per site', async () => {
    expect((await get('/api/health', tok.observer)).json()).toMatchObject({ status: 'ok', jobs_running: 0, sites_online: 4, sites_total: 4 });
    expect((await get('/healthz')).json()).toEqual({ status: 'ok' });
  });
});

describe('per-site data follows each site\'s share_site_metrics', () => {
  it('metrics rows: researchers see sites sharing with researchers, admins all but "none"; the rest is named as withheld', async () => {
    const sitesIn = (b: { metrics: { site_id: string }[] }) => [...new Set(b.metrics.map((m) => m.site_id))].sort();
    const r = (await get(`${J}/metrics`, tok.researcher)).json();
    expect(sitesIn(r)).toEqual(['s-share', 's-share2']);
    expect(r.withheld_sites).toEqual(['s-consortium', 's-none']);
    const a = (await get(`${J}/metrics`, tok.admin)).json();
    expect(sitesIn(a)).toEqual(['s-consortium', 's-share', 's-share2']);
    expect(a.withheld_sites).toEqual(['s-none']);
    const csv = (await get(`${J}/metrics?format=csv&site=s-consortium`, tok.researcher)).body.trim().split('\n');
    expect(csv).toHaveLength(1); // the header only
    expect((await get('/api/sites', tok.researcher)).json().sites.map((s: { id: string; share_site_metrics: string }) => [s.id, s.share_site_metrics]))
      .toEqual(Object.entries(POLICY).sort());
  });

  it('aggregates: one hidden contributor withholds the row, more blank min/max; a fully visible row is whole', async () => {
    const r = (await get(`${J}/metrics/summary?kind=global&metric=loss`, tok.researcher)).json();
    expect(r.summary).toEqual([expect.objectContaining({ sites: 4, min: null, max: null, mean: expect.any(Number) })]); // 2 hidden
    expect(r.withheld).toBe(0);
    const a = (await get(`${J}/metrics/summary?kind=global&metric=loss`, tok.admin)).json();
    expect(a.summary).toEqual([]); // exactly one site (s-none) hidden from admins: n·mean − the rest would give it away
    expect(a.withheld).toBe(1);
    const one = (await get(`${J}/metrics/summary?kind=global&metric=loss&site=s-share`, tok.researcher)).json();
    expect(one.summary).toEqual([expect.objectContaining({ sites: 1, min: expect.any(Number), max: expect.any(Number) })]);
    const hiddenOne = (await get(`${J}/metrics/summary?kind=global&metric=loss&site=s-consortium`, tok.researcher)).json();
    expect([hiddenOne.summary, hiddenOne.withheld]).toEqual([[], 1]);
  });

  it('cross-evaluation cells need both the data site and the model owner to be visible; rounds hide examples and norms', async () => {
    const r = (await get(`${J}/cross-eval`, tok.researcher)).json();
    expect(r.cells.map((c: { data_site: string; model_owner: string }) => `${c.data_site}>${c.model_owner}`).sort()).toEqual(['s-share2>s-share', 's-share2>s-share2', 's-share>s-share', 's-share>s-share2']);
    expect((await get(`${J}/cross-eval`, tok.admin)).json().cells).toHaveLength(9);
    const rounds = (await get(`${J}/rounds`, tok.researcher)).json().rounds;
    const u = Object.fromEntries(rounds[0].updates.map((x: { site: string }) => [x.site, x]));
    expect(u['s-share']).toMatchObject({ examples: 10, status: 'accepted' });
    expect(u['s-share']).not.toHaveProperty('withheld');
    expect(u['s-consortium']).toMatchObject({ examples: null, norm: null, withheld: true, status: 'accepted' });
    expect((await get(`${J}/rounds`, tok.admin)).json().rounds[0].updates.find((x: { site: string }) => x.site === 's-consortium').examples).toBe(12);
  });

  it('downloads: researchers only where the job spec allows (access.researcher_downloads), validated with the field named', async () => {
    const denied = await get(`${J}/adapters/1/adapter_model.safetensors`, tok.researcher);
    expect(denied.statusCode).toBe(403);
    expect(denied.json().error.message).toMatch(/job job-a does not let researchers download its adapters \(job spec access.researcher_downloads/);
    const ok = await get('/api/jobs/job-open/adapters/1/adapter_model.safetensors', tok.researcher);
    expect(ok.statusCode).toBe(200);
    expect(ok.rawPayload.length).toBe(h.store.adapterVersion('job-open', 1)!.size);
    const bad = await app.inject({ method: 'POST', url: '/api/jobs', headers: { authorization: `Bearer ${tok.admin}` }, payload: rawSpec({ access: { researcher_downloads: 'yes' } }) });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error).toMatchObject({ code: 'FEDLORA_ERR_JOB_INVALID', message: expect.stringMatching(/^request body: access\.researcher_downloads: /) });
  });

  it('reads of per-site data and downloads are in the audit log: who, which sites, the status; refusals too', async () => {
    const audit = new AuditLog(h.store.db);
    const reads = audit.list({ action: 'site_metrics_read' }).filter((e) => e.actor === 'researcher:ana' && e.subject === `GET ${J}/metrics`);
    expect(reads[0].details).toMatchObject({ job: 'job-a', sites: ['s-share', 's-share2'], status: 200 });
    const downloads = audit.list({ action: 'adapter_download' });
    expect(downloads.filter((e) => e.actor === 'researcher:ana').map((e) => [e.subject, e.details.status])).toEqual([
      [`GET ${J}/adapters/1/adapter_model.safetensors`, 403], // from the role table above
      [`GET ${J}/adapters/1/adapter_model.safetensors`, 403],
      ['GET /api/jobs/job-open/adapters/1/adapter_model.safetensors', 200],
    ]);
    expect(downloads.some((e) => e.actor === 'anonymous' && e.details.status === 401)).toBe(true);
    expect(audit.verify().ok).toBe(true);
  });
});

describe('how the coordinator learns a site\'s policy', () => {
  it('the agent sends policy.share_site_metrics in every heartbeat', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fedlora-share-'));
    const sent: unknown[] = [];
    const wire = {
      heartbeat: async (req: { shareSiteMetrics?: string }) => (sent.push(req.shareSiteMetrics), { serverTimeUnixMs: Date.now(), renewCertificate: false }),
      streamTasks: (_on: unknown, signal: AbortSignal) => new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve())),
      close: () => undefined,
    } as unknown as FederationWire;
    const quiet: AgentLogger = { info: () => {}, warn: () => {}, error: () => {} } as unknown as AgentLogger;
    const config = parseSiteConfig({ model: { path: join(dir, 'model') }, policy: { share_site_metrics: 'none' }, network: { heartbeat_interval_ms: 100 } });
    const db = openSiteDb(dir);
    const agent = new SiteAgent({ siteDir: dir, siteId: 'hospital-1', config, db, wire, log: quiet, trainer: { kind: 'fake', train: async () => { throw new Error('unused'); } } });
    agent.start();
    while (sent.length < 2) await new Promise((r) => setTimeout(r, 20));
    await agent.stop();
    db.close();
    rmSync(dir, { recursive: true, force: true });
    expect(sent.slice(0, 2)).toEqual(['METRICS_SHARING_NONE', 'METRICS_SHARING_NONE']);
    expect(() => parseSiteConfig({ model: { path: '/m' }, policy: { share_site_metrics: 'everyone' } })).toThrow(/policy\.share_site_metrics/);
  });

  it('the coordinator stores it from a heartbeat over mutual-TLS gRPC and shows it; an unknown value reads as none', async () => {
    const live = await liveCoordinator(['hosp-a']);
    try {
      const c = live.connect('hosp-a');
      const beat = (v: unknown) => new Promise<void>((resolve, reject) =>
        c.heartbeat({ agentVersion: 't', state: 'idle', currentTaskId: '', trainingTokensPerS: 0, shareSiteMetrics: v as 'METRICS_SHARING_NONE' }, new grpc.Metadata(), {}, (e) => (e ? reject(fromGrpcError(e)) : resolve())));
      const sites = async () => (await (await fetch(`${live.coord.httpUrl}/api/sites`, { headers: { authorization: `Bearer ${live.adminToken}` } })).json()) as { sites: { id: string; share_site_metrics: string }[] };
      await beat('METRICS_SHARING_UNSPECIFIED');
      expect((await sites()).sites).toEqual([expect.objectContaining({ id: 'hosp-a', share_site_metrics: 'consortium' })]);
      await beat('METRICS_SHARING_RESEARCHERS');
      expect((await sites()).sites[0].share_site_metrics).toBe('researchers');
      await beat('METRICS_SHARING_NONE');
      expect((await sites()).sites[0].share_site_metrics).toBe('none');
      await beat('METRICS_SHARING_CONSORTIUM');
      expect((await sites()).sites[0].share_site_metrics).toBe('consortium');
      await beat(7); // a value this coordinator does not know (a newer agent's): the most restrictive
      expect((await sites()).sites[0].share_site_metrics).toBe('none');
    } finally {
      await live.cleanup();
    }
  }, TEST_TIMEOUT_MS);
});
