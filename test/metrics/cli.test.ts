// `fedlora job metrics` / `fedlora job cross-eval` against a real listening coordinator API,
// reading with a researcher token (FEDLORA_TOKEN) of sites that share with researchers.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { FastifyInstance } from 'fastify';
import { buildHttpApp } from '../../coordinator/http/app.ts';
import { hashToken } from '../../coordinator/config.ts';
import { crossEvalRequests } from '../../coordinator/metrics/cross-eval-requests.ts';
import { addApiToken } from '../../coordinator/http/api-tokens.ts';
import { harness, online, rawSpec, rmDir, type Harness } from '../coordinator/helpers.ts';
import { evalValue, reportEval, runRounds } from './fixtures.ts';
import type { Metric } from '../../shared/proto.ts';

const run = promisify(execFile);
const TOKEN = 'cli-admin-token';
const SITES = ['s1', 's2'];
let h: Harness;
let app: FastifyInstance;
let url: string;
let researcher: string;

beforeAll(async () => {
  h = harness();
  app = await buildHttpApp({ engine: h.engine, config: { admin_tokens: [{ name: 'cli', sha256: hashToken(TOKEN) }] }, manifestKeyPem: h.signer.publicKeyPem });
  online(h, ...SITES);
  for (const s of SITES) h.store.touchSite(s, Date.now(), { shareSiteMetrics: 'researchers' });
  researcher = addApiToken(h.store.db, { name: 'ana', role: 'researcher', ttlMs: null }).token;
  await h.engine.submitJob((await import('../../coordinator/jobs/spec.ts')).parseJobSpec(rawSpec({ rounds: 1 }), 't'), 'job-cli');
  await runRounds(h.engine, 'job-cli', SITES, 1);
  reportEval(h.engine, 'job-cli', SITES, 1);
  for (const [i, s] of SITES.entries()) h.engine.reportMetrics(s, { taskId: `t-${s}`, jobId: 'job-cli', round: 1, phase: 'eval', metrics: [recall(i)] });
  await app.listen({ host: '127.0.0.1', port: 0 });
  url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
});
afterAll(async () => {
  await app.close();
  h.close();
  rmDir(h.dir);
});

/** Site i's recall of one diagnosis with its interval and bootstrap replicates (what a site sends). */
function recall(i: number): Metric {
  const bootstrap = Array.from({ length: 20 }, (_, b) => Math.fround(0.5 + 0.1 * i + 0.01 * (b - 10)));
  return { kind: 'global', name: 'recall', subset: 'diagnosis=Asthma', evalSet: '', value: 0.5 + 0.1 * i, count: 10 + 10 * i, modelOwner: '', adapterVersion: 1, ci: { low: 0.4 + 0.1 * i, high: 0.6 + 0.1 * i, resamples: 20 }, bootstrap };
}

const fedlora = (...args: string[]) => run(process.execPath, ['cli/bin.mjs', ...args], { env: { ...process.env, FEDLORA_ADMIN_TOKEN: '', FEDLORA_TOKEN: researcher } });
const anonymous = (...args: string[]) => run(process.execPath, ['cli/bin.mjs', ...args], { env: { ...process.env, FEDLORA_ADMIN_TOKEN: '', FEDLORA_TOKEN: '' } });

describe('researcher CLI', () => {
  it('job metrics --format table: each figure with its 95% interval, per site and as the consortium figure', async () => {
    const [rows, summary, summaryJson] = await Promise.all([
      fedlora('job', 'metrics', 'job-cli', '--format', 'table', '--url', url, '--metric', 'recall'),
      fedlora('job', 'metrics', 'job-cli', '--summary', '--format', 'table', '--url', url, '--metric', 'recall', '--subset', 'diagnosis=Asthma'),
      fedlora('job', 'metrics', 'job-cli', '--summary', '--url', url, '--metric', 'recall'),
    ]);
    const lines = rows.stdout.trim().split('\n');
    expect(lines[0]).toMatch(/^round\s+kind\s+site\s+figure\s+value\s+95% CI\s+n$/);
    expect(lines.slice(1)).toEqual([
      expect.stringMatching(/^1\s+global\s+s1\s+recall \(diagnosis=Asthma\)\s+0\.5000\s+\[0\.4000, 0\.6000\]\s+10$/),
      expect.stringMatching(/^1\s+global\s+s2\s+recall \(diagnosis=Asthma\)\s+0\.6000\s+\[0\.5000, 0\.7000\]\s+20$/),
    ]);
    // the consortium figure: weighted by count, (0.5*10 + 0.6*20)/30, with the API's pooled interval
    const c = JSON.parse(summaryJson.stdout).summary[0];
    expect(c.weighted_mean).toBeCloseTo(17 / 30, 12);
    const sl = summary.stdout.trim().split('\n');
    expect(sl[0]).toMatch(/^round\s+kind\s+figure\s+consortium\s+95% CI\s+sites\s+n$/);
    expect(sl[1]).toMatch(new RegExp(`^1\\s+global\\s+recall \\(diagnosis=Asthma\\)\\s+0\\.5667\\s+\\[${c.ci_low.toFixed(4)}, ${c.ci_high.toFixed(4)}\\]\\s+2\\s+30$`));
    expect(sl).toHaveLength(2);
  });

  it('job metrics --format csv|json, --summary; job cross-eval records a request (admin token) and --show prints the matrix', async () => {
    // independent reads in parallel (each CLI start costs a couple of seconds)
    const [csvOut, sumOut, badFormat, notAdmin, noToken] = await Promise.all([
      fedlora('job', 'metrics', 'job-cli', '--format', 'csv', '--url', url, '--kind', 'local', '--metric', 'loss'),
      fedlora('job', 'metrics', 'job-cli', '--summary', '--url', url),
      fedlora('job', 'metrics', 'job-cli', '--format', 'xml', '--url', url).then(() => null, (e: { stderr: string }) => e),
      fedlora('job', 'cross-eval', 'job-cli', '--url', url).then(() => null, (e: { stderr: string }) => e),
      anonymous('job', 'metrics', 'job-cli', '--url', url).then(() => null, (e: { stderr: string }) => e),
    ]);
    const csv = csvOut.stdout.trim().split('\n');
    expect(csv[0]).toBe('job_id,round,site_id,kind,metric,subset,eval_set,value,ci_low,ci_high,count,model_owner,adapter_version,phase,created_ms');
    expect(csv.slice(1).map((l) => l.split(',')[7]).map(Number)).toEqual(SITES.map((s) => evalValue(s, 'local', 'loss', 1)));
    const sum = JSON.parse(sumOut.stdout);
    expect(sum.summary.find((r: { kind: string; metric: string }) => r.kind === 'global' && r.metric === 'accuracy').sites).toBe(2);
    expect(badFormat?.stderr).toMatch(/FEDLORA_ERR_INVALID_ARGUMENT: --format must be json, csv or table/);
    expect(notAdmin?.stderr).toMatch(/FEDLORA_ERR_ROLE: researcher token "ana" may not POST \/api\/jobs\/job-cli\/cross-eval/);
    expect(noToken?.stderr).toMatch(/FEDLORA_ERR_UNAUTHENTICATED: GET \/api\/jobs\/job-cli\/metrics needs a token/);
    const req = await fedlora('job', 'cross-eval', 'job-cli', '--url', url, '--token', TOKEN, '--sites', 's1', 's2');
    expect(req.stdout).toMatch(/cross-evaluation request #1 for job job-cli: pending/);
    expect(crossEvalRequests(h.store.db, 'job-cli').map((r) => [r.requested_by, r.sites_json])).toEqual([['cli', '["s1","s2"]']]);
    const show = JSON.parse((await fedlora('job', 'cross-eval', 'job-cli', '--show', '--url', url)).stdout);
    expect(show).toMatchObject({ available: false, values: [] });
  });
});
