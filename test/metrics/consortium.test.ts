// Consortium figures from what leaves the sites: per-site figures with counts, intervals and
// bootstrap replicates go in through the engine's ReportMetrics path; the summary's weighted mean
// and its interval are checked against numpy (the same stratified bootstrap computed there).
// Subsets and exam sets are kept apart; malformed intervals are refused naming the figure.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildHttpApp } from '../../coordinator/http/app.ts';
import { hashToken } from '../../coordinator/config.ts';
import { harness, online, rawSpec, rmDir, type Harness } from '../coordinator/helpers.ts';
import { runRounds } from './fixtures.ts';
import { mulberry32 } from '../../shared/prng.ts';
import { PYTHON, requireTool, TORCH } from '../runner/reference-tools.ts';
import { runProcess } from '../runner/run-process.ts';
import type { Metric } from '../../shared/proto.ts';

const TOKEN = 'consortium-admin-token';
const auth = { authorization: `Bearer ${TOKEN}` };
const SITES = ['s1', 's2', 's3'];
const B = 500;
let h: Harness;
let app: FastifyInstance;

/** Site s's replicates of a figure around `value` (seeded, like a site's own bootstrap). */
function replicates(site: string, value: number, spread: number): number[] {
  const r = mulberry32(site.charCodeAt(1) * 31 + Math.round(value * 1000));
  return Array.from({ length: B }, () => Math.fround(value + spread * (r() + r() + r() - 1.5)));
}
const counts: Record<string, number> = { s1: 12, s2: 40, s3: 26 };
const accuracy: Record<string, number> = { s1: 0.5, s2: 0.75, s3: 0.6 };

function figure(site: string, over: Partial<Metric> = {}): Metric {
  const reps = replicates(site, accuracy[site], 0.2);
  const sorted = [...reps].sort((a, b) => a - b);
  return { kind: 'global', name: 'accuracy', value: accuracy[site], count: counts[site], modelOwner: '', adapterVersion: 1, ci: { low: sorted[12], high: sorted[487], resamples: B }, subset: '', bootstrap: reps, evalSet: '', ...over };
}

beforeAll(async () => {
  h = harness();
  app = await buildHttpApp({ engine: h.engine, config: { admin_tokens: [{ name: 'lab', sha256: hashToken(TOKEN) }] }, manifestKeyPem: h.signer.publicKeyPem });
  online(h, ...SITES);
  expect((await app.inject({ method: 'POST', url: '/api/jobs?id=job-c', headers: auth, payload: rawSpec({ rounds: 1 }) })).statusCode).toBe(201);
  await runRounds(h.engine, 'job-c', SITES, 1);
  for (const s of SITES) {
    h.engine.reportMetrics(s, {
      taskId: `t-${s}`, jobId: 'job-c', round: 1, phase: 'eval', metrics: [
        figure(s),
        figure(s, { name: 'recall', subset: 'diagnosis=Asthma', value: accuracy[s] - 0.1, count: counts[s] / 2, bootstrap: replicates(s, accuracy[s] - 0.1, 0.3) }),
        // s3 sends no replicates for its per-diagnosis precision: no consortium interval for it
        figure(s, { name: 'precision', subset: 'diagnosis=Asthma', bootstrap: s === 's3' ? [] : replicates(s, 0.4, 0.1) }),
        figure(s, { name: 'accuracy', evalSet: 'exam:medqa', value: 0.3, count: 100, bootstrap: replicates(s, 0.3, 0.1) }),
        { kind: 'global', name: 'support', subset: 'diagnosis=Asthma', value: counts[s] / 2, count: counts[s] / 2, modelOwner: '', adapterVersion: 1 },
      ],
    });
  }
});
afterAll(async () => {
  await app.close();
  h.close();
  rmDir(h.dir);
});

/** numpy: percentile interval of the count-weighted mean of the sites' replicates (float32 as stored). */
async function numpyPooled(parts: { count: number; reps: number[] }[]): Promise<[number, number]> {
  await requireTool(TORCH);
  const code = `import json,sys,numpy as np
q=json.load(sys.stdin); w=np.array([p['count'] for p in q],float); R=np.array([np.array(p['reps'],dtype=np.float32) for p in q],dtype=np.float64)
m=(w[:,None]*R).sum(0)/w.sum(); print(json.dumps([float(np.percentile(m,2.5)),float(np.percentile(m,97.5))]))`;
  const r = await runProcess(PYTHON, ['-c', code], { input: JSON.stringify(parts) });
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout);
}

describe('consortium figures', () => {
  it('the weighted mean of the sites\' figures with a stratified-bootstrap interval equal to numpy\'s', async () => {
    const { summary } = (await app.inject({ headers: auth, url: '/api/jobs/job-c/metrics/summary?eval_set=&subset=' })).json();
    const acc = summary.find((r: { metric: string }) => r.metric === 'accuracy');
    expect(summary.every((r: { subset: string; eval_set: string }) => r.subset === '' && r.eval_set === '')).toBe(true);
    const n = SITES.reduce((a, s) => a + counts[s], 0);
    expect(acc.weighted_mean).toBeCloseTo(SITES.reduce((a, s) => a + counts[s] * accuracy[s], 0) / n, 12);
    const [lo, hi] = await numpyPooled(SITES.map((s) => ({ count: counts[s], reps: replicates(s, accuracy[s], 0.2) })));
    expect(acc.ci_low).toBeCloseTo(lo, 6);
    expect(acc.ci_high).toBeCloseTo(hi, 6);
    // pooling narrows the interval compared with any one site's
    for (const s of SITES) expect(acc.ci_high - acc.ci_low).toBeLessThan(figure(s).ci!.high - figure(s).ci!.low);
  });

  it('per-diagnosis recall pooled by support; no interval when a site sent no replicates; counts have none', async () => {
    const { summary } = (await app.inject({ headers: auth, url: '/api/jobs/job-c/metrics/summary?subset=diagnosis%3DAsthma' })).json();
    const rec = summary.find((r: { metric: string }) => r.metric === 'recall');
    const [lo, hi] = await numpyPooled(SITES.map((s) => ({ count: counts[s] / 2, reps: replicates(s, accuracy[s] - 0.1, 0.3) })));
    expect([rec.ci_low, rec.ci_high].map((x: number) => x.toFixed(6))).toEqual([lo, hi].map((x) => x.toFixed(6)));
    expect(summary.find((r: { metric: string }) => r.metric === 'precision')).toMatchObject({ sites: 3, ci_low: null, ci_high: null });
    expect(summary.find((r: { metric: string }) => r.metric === 'support')).toMatchObject({ weighted_mean: expect.any(Number), ci_low: null });
  });

  it('rows carry subset, eval set and the site\'s interval; filters by both; exams apart from the held-out set', async () => {
    const rows = (await app.inject({ headers: auth, url: '/api/jobs/job-c/metrics?site=s2&metric=accuracy' })).json().metrics;
    expect(rows.map((r: { eval_set: string }) => r.eval_set).sort()).toEqual(['', 'exam:medqa']);
    const held = rows.find((r: { eval_set: string }) => r.eval_set === '');
    expect(held).toMatchObject({ subset: '', value: 0.75, count: 40, ci_low: figure('s2').ci!.low, ci_high: figure('s2').ci!.high, ci_resamples: B });
    const exam = (await app.inject({ headers: auth, url: '/api/jobs/job-c/metrics/summary?eval_set=exam%3Amedqa' })).json().summary;
    expect(exam).toHaveLength(1);
    expect(exam[0]).toMatchObject({ metric: 'accuracy', eval_set: 'exam:medqa', sites: 3, weighted_mean: 0.3 });
    expect(exam[0].ci_low).toBeLessThan(0.3);
    expect(exam[0].ci_high).toBeGreaterThan(0.3);
  });

  it('a malformed interval or eval set is refused naming the figure; nothing of the report is stored', () => {
    const before = h.store.metrics('job-c').length;
    expect(() => h.engine.reportMetrics('s1', { taskId: 'bad', jobId: 'job-c', round: 1, phase: 'eval', metrics: [figure('s1'), figure('s1', { subset: 'sex=F', ci: { low: 0.9, high: 0.1, resamples: B } })] }))
      .toThrow(/MetricsReport\.metrics accuracy\[sex=F\]: ci \[0\.9, 0\.1\] is not a finite interval/);
    expect(() => h.engine.reportMetrics('s1', { taskId: 'bad', jobId: 'job-c', round: 1, phase: 'eval', metrics: [figure('s1', { evalSet: '../etc' })] }))
      .toThrow(/eval_set "\.\.\/etc" is none of/);
    expect(h.store.metrics('job-c').length).toBe(before);
  });
});
