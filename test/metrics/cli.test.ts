// `fedlora job metrics` / `fedlora job cross-eval` against a real listening coordinator API.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import type { FastifyInstance } from 'fastify';
import { buildHttpApp } from '../../coordinator/http/app.ts';
import { hashToken } from '../../coordinator/config.ts';
import { crossEvalRequests } from '../../coordinator/metrics/cross-eval-requests.ts';
import { harness, online, rawSpec, rmDir, type Harness } from '../coordinator/helpers.ts';
import { evalValue, reportEval, runRounds } from './fixtures.ts';

const run = promisify(execFile);
const TOKEN = 'cli-admin-token';
const SITES = ['s1', 's2'];
let h: Harness;
let app: FastifyInstance;
let url: string;

beforeAll(async () => {
  h = harness();
  app = await buildHttpApp({ engine: h.engine, config: { admin_tokens: [{ name: 'cli', sha256: hashToken(TOKEN) }] }, manifestKeyPem: h.signer.publicKeyPem });
  online(h, ...SITES);
  await h.engine.submitJob((await import('../../coordinator/jobs/spec.ts')).parseJobSpec(rawSpec({ rounds: 1 }), 't'), 'job-cli');
  await runRounds(h.engine, 'job-cli', SITES, 1);
  reportEval(h.engine, 'job-cli', SITES, 1);
  await app.listen({ host: '127.0.0.1', port: 0 });
  url = `http://127.0.0.1:${(app.server.address() as { port: number }).port}`;
});
afterAll(async () => {
  await app.close();
  h.close();
  rmDir(h.dir);
});

const fedlora = (...args: string[]) => run(process.execPath, ['cli/bin.mjs', ...args], { env: { ...process.env, FEDLORA_ADMIN_TOKEN: '' } });

describe('researcher CLI', () => {
  it('job metrics --format csv|json, --summary; job cross-eval records a request (admin token) and --show prints the matrix', async () => {
    // independent reads in parallel (each CLI start costs a couple of seconds)
    const [csvOut, sumOut, badFormat, noToken] = await Promise.all([
      fedlora('job', 'metrics', 'job-cli', '--format', 'csv', '--url', url, '--kind', 'local', '--metric', 'loss'),
      fedlora('job', 'metrics', 'job-cli', '--summary', '--url', url),
      fedlora('job', 'metrics', 'job-cli', '--format', 'xml', '--url', url).then(() => null, (e: { stderr: string }) => e),
      fedlora('job', 'cross-eval', 'job-cli', '--url', url).then(() => null, (e: { stderr: string }) => e),
    ]);
    const csv = csvOut.stdout.trim().split('\n');
    expect(csv[0]).toBe('job_id,round,site_id,kind,metric,value,count,model_owner,adapter_version,phase,created_ms');
    expect(csv.slice(1).map((l) => l.split(',')[5]).map(Number)).toEqual(SITES.map((s) => evalValue(s, 'local', 'loss', 1)));
    const sum = JSON.parse(sumOut.stdout);
    expect(sum.summary.find((r: { kind: string; metric: string }) => r.kind === 'global' && r.metric === 'accuracy').sites).toBe(2);
    expect(badFormat?.stderr).toMatch(/FEDLORA_ERR_INVALID_ARGUMENT: --format must be json or csv/);
    expect(noToken?.stderr).toMatch(/FEDLORA_ERR_UNAUTHENTICATED/);
    const req = await fedlora('job', 'cross-eval', 'job-cli', '--url', url, '--token', TOKEN, '--sites', 's1', 's2');
    expect(req.stdout).toMatch(/cross-evaluation request #1 for job job-cli: pending/);
    expect(crossEvalRequests(h.store.db, 'job-cli').map((r) => [r.requested_by, r.sites_json])).toEqual([['cli', '["s1","s2"]']]);
    const show = JSON.parse((await fedlora('job', 'cross-eval', 'job-cli', '--show', '--url', url)).stdout);
    expect(show).toMatchObject({ available: false, values: [] });
  });
});
