// The demo's report.json from a real listening coordinator API: every held-out figure with the
// interval the site sent, the consortium figure per round with the pooled interval (recomputed
// here from the replicates the sites sent), and per-diagnosis recall per site and consortium-wide.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildHttpApp } from '../../coordinator/http/app.ts';
import { hashToken } from '../../coordinator/config.ts';
import { pooledInterval } from '../../coordinator/metrics/consortium.ts';
import { buildReport, printReport, type DemoReport } from '../../cli/demo/report.ts';
import { harness, online, rawSpec, rmDir, type Harness } from '../coordinator/helpers.ts';
import { DIAGNOSES, evalCount, evalValue, recallValue, replicatesAround, reportEval, runRounds } from './fixtures.ts';

const TOKEN = 'report-admin-token';
const SITES = ['s1', 's2', 's3'];
const ROUNDS = 2;
let h: Harness;
let app: FastifyInstance;
let rep: DemoReport;

/** What fixtures.reportEval sent for a site's figure (its spread and seed). */
const sent = (site: string, kind: 'global' | 'local', metric: 'loss' | 'accuracy', round: number) => {
  const c = site.charCodeAt(site.length - 1);
  return replicatesAround(evalValue(site, kind, metric, round), 0.02 * (1 + (c % 3)), round * 13 + c + (kind === 'global' ? 0 : 5));
};
const sentRecall = (site: string, d: number, round: number) => {
  const c = site.charCodeAt(site.length - 1);
  return replicatesAround(recallValue(site, d, round), 0.04 * (1 + (c % 3)), round * 13 + c + d);
};

beforeAll(async () => {
  h = harness();
  app = await buildHttpApp({ engine: h.engine, config: { admin_tokens: [{ name: 'demo', sha256: hashToken(TOKEN) }] }, manifestKeyPem: h.signer.publicKeyPem });
  online(h, ...SITES);
  await h.engine.submitJob((await import('../../coordinator/jobs/spec.ts')).parseJobSpec(rawSpec({ rounds: ROUNDS }), 't'), 'job-rep');
  await runRounds(h.engine, 'job-rep', SITES, ROUNDS);
  reportEval(h.engine, 'job-rep', SITES, ROUNDS, { intervals: true });
  await app.listen({ host: '127.0.0.1', port: 0 });
  const url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
  rep = await buildReport({ url, token: TOKEN }, 'job-rep', SITES, SITES.map((s) => ({ site: s, topDepartment: 'cardiology' })));
});
afterAll(async () => {
  await app.close();
  h.close();
  rmDir(h.dir);
});

describe('report.json', () => {
  it('each site\'s held-out figures with the interval it sent', () => {
    expect(rep.rounds.map((r) => r.round)).toEqual([1, 2]);
    for (const r of rep.rounds) {
      for (const s of SITES) {
        for (const kind of ['global', 'local'] as const) {
          expect(rep.rounds[r.round - 1].heldout[s][kind]).toEqual({ loss: evalValue(s, kind, 'loss', r.round), accuracy: evalValue(s, kind, 'accuracy', r.round) });
          const ci = sent(s, kind, 'accuracy', r.round).ci;
          expect(r.heldout_ci[s][kind].accuracy).toEqual([ci.low, ci.high]);
        }
      }
    }
  });

  it('the consortium figure per round: weighted by count, with the interval pooled from the sites\' replicates', () => {
    const total = SITES.reduce((a, s) => a + evalCount(s), 0);
    for (const r of rep.rounds) {
      for (const kind of ['global', 'local'] as const) {
        const c = r.consortium[kind].accuracy;
        expect(c.value).toBeCloseTo(SITES.reduce((a, s) => a + evalCount(s) * evalValue(s, kind, 'accuracy', r.round), 0) / total, 12);
        expect(c).toMatchObject({ sites: 3, count: total });
        const [lo, hi] = pooledInterval(SITES.map((s) => ({ count: evalCount(s), replicates: Float32Array.from(sent(s, kind, 'accuracy', r.round).bootstrap) })))!;
        expect([c.ci_low, c.ci_high]).toEqual([lo, hi]);
        expect(c.ci_low!).toBeLessThan(c.value);
        expect(c.ci_high!).toBeGreaterThan(c.value);
      }
    }
  });

  it('recall per diagnosis of the global adapter, per site and consortium-wide, with intervals and support; printed', () => {
    const last = rep.rounds.at(-1)!;
    expect(Object.keys(last.per_diagnosis.consortium).sort()).toEqual(DIAGNOSES);
    for (const [i, d] of DIAGNOSES.entries()) {
      const support = SITES.reduce((a, s) => a + evalCount(s) / 2, 0);
      const c = last.per_diagnosis.consortium[d];
      expect(c.recall.value).toBeCloseTo(SITES.reduce((a, s) => a + (evalCount(s) / 2) * recallValue(s, i, ROUNDS), 0) / support, 12);
      expect(c).toMatchObject({ support, sites: 3 });
      const [lo, hi] = pooledInterval(SITES.map((s) => ({ count: evalCount(s) / 2, replicates: Float32Array.from(sentRecall(s, i, ROUNDS).bootstrap) })))!;
      expect([c.recall.ci_low, c.recall.ci_high]).toEqual([lo, hi]);
      for (const s of SITES) {
        const ci = sentRecall(s, i, ROUNDS).ci;
        expect(last.per_diagnosis.sites[s][d]).toEqual({ recall: { value: recallValue(s, i, ROUNDS), ci_low: ci.low, ci_high: ci.high, count: evalCount(s) / 2 }, support: evalCount(s) / 2 });
      }
    }
    const lines: string[] = [];
    printReport(rep, (l) => lines.push(l));
    const acc = last.consortium.global.accuracy;
    expect(lines).toContain(`round ${ROUNDS}: loss ${last.consortium.global.loss.value.toFixed(3)} [${last.consortium.global.loss.ci_low!.toFixed(3)}, ${last.consortium.global.loss.ci_high!.toFixed(3)}] / `
      + `${last.consortium.local.loss.value.toFixed(3)} [${last.consortium.local.loss.ci_low!.toFixed(3)}, ${last.consortium.local.loss.ci_high!.toFixed(3)}] | accuracy ${acc.value.toFixed(3)} [${acc.ci_low!.toFixed(3)}, ${acc.ci_high!.toFixed(3)}] / `
      + `${last.consortium.local.accuracy.value.toFixed(3)} [${last.consortium.local.accuracy.ci_low!.toFixed(3)}, ${last.consortium.local.accuracy.ci_high!.toFixed(3)}]`);
    const asthma = last.per_diagnosis.consortium.Asthma;
    expect(lines).toContain(`  Asthma: ${asthma.recall.value.toFixed(3)} [${asthma.recall.ci_low!.toFixed(3)}, ${asthma.recall.ci_high!.toFixed(3)}] (n=${asthma.support}, 3 site(s))`);
  });
});
