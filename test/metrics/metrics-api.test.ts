// Researchers' API: metrics rows, summary (weighted/unweighted averages), cross-eval matrix and
// requests, CSV exports, and the coordinator's Prometheus /metrics (parsed with a tiny parser).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildHttpApp } from '../../coordinator/http/app.ts';
import { hashToken } from '../../coordinator/config.ts';
import { harness, online, rawSpec, rmDir, type Harness } from '../coordinator/helpers.ts';
import { crossValue, evalCount, evalValue, parsePrometheus, reportCross, reportEval, runRounds, sampleValue } from './fixtures.ts';
import { Exposition } from '../../shared/prometheus.ts';
import { crossEvalRequests } from '../../coordinator/metrics/cross-eval-requests.ts';
import { createPrivacyLedger } from '../../coordinator/privacy/ledger.ts';

const TOKEN = 'researcher-admin-token';
const auth = { authorization: `Bearer ${TOKEN}` };
const SITES = ['s1', 's2', 's3'];
const DP = { clip_norm: 1, noise_multiplier: 1.2, delta: 1e-5, sample_rate: 1, epsilon_budget: 100, adaptive_clipping: false };
let h: Harness;
let app: FastifyInstance;
const logs: Record<string, unknown>[] = [];

beforeAll(async () => {
  h = harness();
  app = await buildHttpApp({ engine: h.engine, config: { admin_tokens: [{ name: 'lab', sha256: hashToken(TOKEN) }] }, manifestKeyPem: h.signer.publicKeyPem, log: { info: (o, msg) => logs.push({ ...o, msg }) } });
  online(h, ...SITES);
  expect((await app.inject({ method: 'POST', url: '/api/jobs?id=job-m', headers: auth, payload: rawSpec({ rounds: 2, privacy: { dp: DP } }) })).statusCode).toBe(201);
  await runRounds(h.engine, 'job-m', SITES, 2, (s) => (s === 's3' ? 8 : 4));
  reportEval(h.engine, 'job-m', SITES, 2);
});
afterAll(async () => {
  await app.close();
  h.close();
  rmDir(h.dir);
});

describe('metrics API', () => {
  it('filters rows; CSV has a header and one line per row', async () => {
    const all = (await app.inject({ headers: auth, url: '/api/jobs/job-m/metrics' })).json().metrics;
    expect(all).toHaveLength(SITES.length * 2 /* rounds */ * 2 /* kinds */ * 2 /* metrics */);
    const f = (await app.inject({ headers: auth, url: '/api/jobs/job-m/metrics?site=s2&kind=local&metric=loss' })).json().metrics;
    expect(f.map((r: { round: number; value: number }) => [r.round, r.value])).toEqual([1, 2].map((r) => [r, evalValue('s2', 'local', 'loss', r)]));
    const csv = await app.inject({ headers: auth, url: '/api/jobs/job-m/metrics?format=csv&kind=global' });
    expect(csv.headers['content-type']).toMatch(/text\/csv/);
    const lines = csv.body.trim().split('\n');
    expect(lines[0]).toBe('job_id,round,site_id,kind,metric,subset,eval_set,value,ci_low,ci_high,count,model_owner,adapter_version,phase,created_ms');
    expect(lines).toHaveLength(1 + SITES.length * 2 * 2);
    expect((await app.inject({ headers: auth, url: '/api/jobs/job-m/metrics?kind=nope' })).statusCode).toBe(400);
    expect((await app.inject({ headers: auth, url: '/api/jobs/nope/metrics' })).statusCode).toBe(404);
  });

  it('summary: unweighted and count-weighted means across sites per round/kind/metric; a re-reported value replaces the old one', async () => {
    // s1 re-evaluates round 2 global loss: only its newest value may count.
    h.engine.reportMetrics('s1', { taskId: 'x', jobId: 'job-m', round: 2, phase: 'eval', metrics: [{ kind: 'global', name: 'loss', value: 0.25, count: 50, modelOwner: '', adapterVersion: 2 }] });
    const { summary } = (await app.inject({ headers: auth, url: '/api/jobs/job-m/metrics/summary' })).json();
    expect(summary).toHaveLength(2 * 2 * 2);
    for (const row of summary as { round: number; kind: 'global' | 'local'; metric: 'loss' | 'accuracy'; sites: number; count: number; mean: number; weighted_mean: number }[]) {
      const vals = SITES.map((s) => (row.round === 2 && row.kind === 'global' && row.metric === 'loss' && s === 's1' ? { v: 0.25, c: 50 } : { v: evalValue(s, row.kind, row.metric, row.round), c: evalCount(s) }));
      const n = vals.reduce((a, x) => a + x.c, 0);
      expect(row.sites).toBe(3);
      expect(row.count).toBe(n);
      expect(row.mean).toBeCloseTo(vals.reduce((a, x) => a + x.v, 0) / 3, 12);
      expect(row.weighted_mean).toBeCloseTo(vals.reduce((a, x) => a + x.v * x.c, 0) / n, 12);
    }
    // counts differ per site, so the two averages differ: the test would catch one computed as the other
    const r1 = summary.find((r: { round: number; kind: string; metric: string }) => r.round === 1 && r.kind === 'local' && r.metric === 'loss');
    expect(Math.abs(r1.mean - r1.weighted_mean)).toBeGreaterThan(1e-6);
    const csv = (await app.inject({ headers: auth, url: '/api/jobs/job-m/metrics/summary?format=csv&metric=accuracy' })).body.trim().split('\n');
    expect(csv[0]).toBe('round,kind,metric,model_owner,subset,eval_set,sites,count,mean,weighted_mean,ci_low,ci_high,min,max');
    expect(csv).toHaveLength(1 + 2 * 2);
  });

  it('cross-eval: available:false and an empty matrix before any; requests need the admin token; then the matrix', async () => {
    const empty = (await app.inject({ headers: auth, url: '/api/jobs/job-m/cross-eval' })).json();
    expect(empty).toMatchObject({ available: false, data_sites: [], model_owners: [], values: [], cells: [], requests: [] });
    expect(empty.message).toMatch(/no cross-evaluation results yet/);
    expect((await app.inject({ method: 'POST', url: '/api/jobs/job-m/cross-eval' })).statusCode).toBe(401);
    expect((await app.inject({ method: 'POST', url: '/api/jobs/job-m/cross-eval', headers: { authorization: 'Bearer wrong' } })).statusCode).toBe(401);
    const bad = await app.inject({ method: 'POST', url: '/api/jobs/job-m/cross-eval', headers: auth, payload: { sites: ['s1', 'nobody'] } });
    expect(bad.statusCode).toBe(404);
    const req = await app.inject({ method: 'POST', url: '/api/jobs/job-m/cross-eval', headers: auth, payload: { sites: ['s1', 's2'] } });
    expect(req.statusCode).toBe(202);
    expect(req.json()).toMatchObject({ job_id: 'job-m', requested_by: 'lab', sites: ['s1', 's2'], status: 'pending' });
    expect(crossEvalRequests(h.store.db, 'job-m', 'pending').map((r) => r.id)).toEqual([req.json().id]);
    // admin actions are logged with the job (and who asked)
    expect(logs).toContainEqual(expect.objectContaining({ msg: 'job submitted', job: 'job-m', admin: 'lab' }));
    expect(logs).toContainEqual(expect.objectContaining({ msg: 'cross-evaluation requested', job: 'job-m', admin: 'lab', request: req.json().id, sites: ['s1', 's2'] }));

    reportCross(h.engine, 'job-m', SITES, 2);
    const m = (await app.inject({ headers: auth, url: '/api/jobs/job-m/cross-eval' })).json();
    expect(m).toMatchObject({ available: true, metric: 'accuracy', data_sites: SITES, model_owners: SITES });
    for (let i = 0; i < 3; i++) for (let j = 0; j < 3; j++) expect(m.values[i][j]).toBeCloseTo(crossValue(SITES[i], SITES[j]), 12);
    expect(m.requests).toHaveLength(1);
    const csv = (await app.inject({ headers: auth, url: '/api/jobs/job-m/cross-eval?format=csv' })).body.trim().split('\n');
    expect(csv[0]).toBe('data_site,model_owner,value,count,ci_low,ci_high,round,adapter_version');
    expect(csv).toHaveLength(1 + 9);
  });
});

describe('Prometheus /metrics (coordinator)', () => {
  it('parses; every family has HELP and TYPE; values agree with the store', async () => {
    const r = await app.inject({ headers: auth, url: '/metrics' });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toBe('text/plain; version=0.0.4; charset=utf-8');
    const fams = parsePrometheus(r.body);
    for (const f of fams.values()) expect(f.help!.length, `HELP of ${f.name}`).toBeGreaterThan(10);
    const job = { job: 'job-m' };
    expect(sampleValue(fams, 'fedlora_rounds_completed_total', job)).toBe(2);
    expect(sampleValue(fams, 'fedlora_updates_received_total', job)).toBe(6);
    expect(sampleValue(fams, 'fedlora_updates_accepted_total', job)).toBe(6);
    expect(sampleValue(fams, 'fedlora_updates_rejected_total', job)).toBe(0);
    const bytes = (h.store.db.prepare("SELECT SUM(size) AS b FROM updates WHERE job_id = 'job-m'").get() as { b: number }).b;
    expect(bytes).toBeGreaterThan(0);
    expect(sampleValue(fams, 'fedlora_update_bytes_received_total', job)).toBe(bytes);
    expect(sampleValue(fams, 'fedlora_sites_connected')).toBe(3);
    expect(sampleValue(fams, 'fedlora_privacy_epsilon_spent', job)).toBeCloseTo(createPrivacyLedger(DP).epsilonAfter(2).epsilon, 9);
    expect(sampleValue(fams, 'fedlora_privacy_epsilon_budget', job)).toBe(100);
    // histogram: cumulative buckets, +Inf bucket == _count == published rounds
    const agg = fams.get('fedlora_aggregation_duration_seconds')!;
    expect(agg.type).toBe('histogram');
    const buckets = agg.samples.filter((s) => s.name.endsWith('_bucket') && s.labels.job === 'job-m');
    for (let i = 1; i < buckets.length; i++) expect(buckets[i].value).toBeGreaterThanOrEqual(buckets[i - 1].value);
    expect(buckets.at(-1)!.labels.le).toBe('+Inf');
    expect(buckets.at(-1)!.value).toBe(2);
    expect(sampleValue(fams, 'fedlora_aggregation_duration_seconds_count', job, 'fedlora_aggregation_duration_seconds')).toBe(2);
  });

  it('connected sites follow the heartbeat timeout; tokens/s from the heartbeat column, else from metrics', async () => {
    h.engine.reportMetrics('s2', { taskId: 't', jobId: 'job-m', round: 2, phase: 'train', metrics: [{ kind: 'global', name: 'train_tokens_per_s', value: 123.5, count: 1, modelOwner: '', adapterVersion: 2 }] });
    h.store.setSiteThroughput('s1', 456.25, h.clock.t);
    h.clock.t += 31_000; // past heartbeatTimeoutMs (30 s in the harness)
    online(h, 's3');
    const fams = parsePrometheus((await app.inject({ headers: auth, url: '/metrics' })).body);
    expect(sampleValue(fams, 'fedlora_sites_connected')).toBe(1);
    expect(sampleValue(fams, 'fedlora_site_up', { site: 's3' })).toBe(1);
    expect(sampleValue(fams, 'fedlora_site_up', { site: 's1' })).toBe(0);
    expect(sampleValue(fams, 'fedlora_site_training_tokens_per_second', { site: 's1' })).toBe(456.25);
    expect(sampleValue(fams, 'fedlora_site_training_tokens_per_second', { site: 's2' })).toBe(123.5);
    expect(sampleValue(fams, 'fedlora_site_training_tokens_per_second', { site: 's3' })).toBeUndefined();
  });

  it('OpenAPI lists the new routes', async () => {
    const paths = Object.keys((await app.inject({ headers: auth, url: '/api/openapi.json' })).json().paths);
    for (const p of ['/api/jobs/{id}/metrics/summary', '/api/jobs/{id}/cross-eval', '/metrics', '/dashboard/']) expect(paths).toContain(p);
  });

  it('escapes label values and HELP text; the parser rejects broken lines', () => {
    const nasty = 'a"b\\c\nd';
    const text = new Exposition().gauge('x_gauge', 'help with \\ and\nnewline', 1.5, { v: nasty }).counter('y_total', 'c', 3).histogram('z_seconds', 'h', [1, 2], [0.5, 1.5, 9]).render();
    expect(text).toContain('x_gauge{v="a\\"b\\\\c\\nd"} 1.5');
    expect(text).toContain('# HELP x_gauge help with \\\\ and\\nnewline');
    const fams = parsePrometheus(text);
    expect(fams.get('x_gauge')!.samples[0].labels.v).toBe(nasty);
    expect(sampleValue(fams, 'z_seconds_bucket', { le: '1' }, 'z_seconds')).toBe(1);
    expect(sampleValue(fams, 'z_seconds_bucket', { le: '+Inf' }, 'z_seconds')).toBe(3);
    expect(sampleValue(fams, 'z_seconds_sum', {}, 'z_seconds')).toBe(11);
    expect(() => parsePrometheus('# HELP a x\n# TYPE a gauge\na{v="unclosed} 1\n')).toThrow(/grammar/);
    expect(() => parsePrometheus('# TYPE a gauge\na 1\n')).toThrow(/lacks HELP/);
    expect(() => parsePrometheus('b 1\n')).toThrow(/no TYPE/);
    expect(() => new Exposition().counter('bad', 'x', 1)).toThrow(/_total/);
  });
});
