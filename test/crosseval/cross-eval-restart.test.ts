// A cross-evaluation request survives a coordinator restart (stop + startCoordinator on the same
// data dir): its upload tasks, their answers and its dispatch time are in SQLite, so the
// restarted coordinator re-sends the unanswered UPLOAD_LOCAL when the site reconnects, starts
// CROSS_EVAL when every upload is answered, or when the wait (counted from the persisted
// dispatch time, not from the restart) is over.
import { describe, it, expect, afterAll } from 'vitest';
import { createHash } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import YAML from 'yaml';
import { crossEvalRequests } from '../../coordinator/metrics/cross-eval-requests.ts';
import { LOCAL_ADAPTER_PAYLOAD } from '../../site-agent/agent/cross-eval.ts';
import { encodeSafetensors } from '../../shared/safetensors.ts';
import { signUpdate } from '../../shared/update-signature.ts';
import type { Federation } from '../secagg-e2e/helpers.ts';
import { IDS, adminHeaders, finishedJob, siteLoops, sleep } from './helpers.ts';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';

const feds: Federation[] = [];
afterAll(async () => {
  for (const f of feds) await f.close();
});

type Matrix = { data_sites: string[]; model_owners: string[]; values: (number | null)[][] };

async function until<T>(what: string, f: () => T | undefined | false | Promise<T | undefined | false>, ms = 15_000): Promise<T> {
  const t0 = Date.now();
  for (;;) {
    const v = await f();
    if (v) return v;
    if (Date.now() - t0 > ms) throw new Error(`timed out waiting for ${what}`);
    await sleep(25);
  }
}

const sideRows = (fed: Federation, kind: string) =>
  (fed.coord.store.db.prepare('SELECT site_id, status, created_ms FROM side_tasks WHERE kind = ? ORDER BY site_id').all(kind) as Array<{ site_id: string; status: string; created_ms: number }>);

/** A finished job; site-a uploads, site-c declines, site-b receives its UPLOAD_LOCAL but has not
 *  answered when the coordinator is stopped. */
async function midRequest(jobId: string): Promise<Federation> {
  const fed = await finishedJob(jobId);
  feds.push(fed);
  const loops = await siteLoops(fed, (id) => id !== 'site-c', (id, kind) => id === 'site-b' && kind === 'TASK_KIND_UPLOAD_LOCAL');
  const post = await fetch(`${fed.coord.httpUrl}/api/jobs/${jobId}/cross-eval`, { method: 'POST', headers: adminHeaders(fed), body: '{}' });
  expect(post.status).toBe(202);
  await until('site-a uploaded, site-c declined', () => {
    const s = sideRows(fed, 'TASK_KIND_UPLOAD_LOCAL').map((r) => r.status);
    return s.join() === 'done,delivered,declined';
  });
  await Promise.all(loops.handled);
  loops.close();
  expect(loops.errors).toEqual([]);
  expect(crossEvalRequests(fed.coord.store.db, jobId).map((r) => r.status)).toEqual(['dispatched']);
  return fed;
}

async function matrixOf(fed: Federation, jobId: string, owners: number): Promise<Matrix> {
  return until('the cross-eval matrix', async () => {
    const body = (await (await fetch(`${fed.coord.httpUrl}/api/jobs/${jobId}/cross-eval`, { headers: adminHeaders(fed) })).json()) as { matrix?: Matrix } & Matrix;
    const m = body.matrix ?? body;
    return m?.data_sites?.length === 3 && m.model_owners.length === owners && m.values.every((row) => row.every((v) => v !== null)) && m;
  });
}

describe('cross-evaluation across a coordinator restart', () => {
  it('the unanswered UPLOAD_LOCAL is re-sent on reconnect, then CROSS_EVAL completes the request', async () => {
    const fed = await midRequest('job-r1');
    await fed.restart();
    expect(crossEvalRequests(fed.coord.store.db, 'job-r1').map((r) => r.status)).toEqual(['dispatched']);
    const loops = await siteLoops(fed, (id) => id !== 'site-c');
    const matrix = await matrixOf(fed, 'job-r1', 2);
    await until('CROSS_EVAL done at every site', () => sideRows(fed, 'TASK_KIND_CROSS_EVAL').map((r) => r.status).join() === 'done,done,done');
    await Promise.all(loops.handled);
    loops.close();
    expect(loops.errors).toEqual([]);

    expect(matrix.model_owners).toEqual(['site-a', 'site-b']);
    matrix.data_sites.forEach((_d, di) => matrix.model_owners.forEach((o, oi) => expect(matrix.values[di][oi]).toBeCloseTo((IDS.indexOf(o) + 1) / 10 + di / 100, 5)));
    // After the restart only site-b was asked to upload again (a's upload and c's refusal were kept).
    const uploads = loops.tasks.filter((t) => t.kind === 'TASK_KIND_UPLOAD_LOCAL').map((t) => t.site);
    expect(uploads).toEqual(['site-b']);
    for (const id of IDS) expect(loops.tasks.filter((t) => t.site === id && t.kind === 'TASK_KIND_CROSS_EVAL').map((t) => t.peerSites)).toEqual([['site-a', 'site-b']]);
    expect(sideRows(fed, 'TASK_KIND_UPLOAD_LOCAL').map((r) => r.status)).toEqual(['done', 'done', 'declined']);
    const [req] = crossEvalRequests(fed.coord.store.db, 'job-r1');
    expect(req.status).toBe('done');
    // one row per (data site, owner, metric): nothing stored twice
    const cross = fed.coord.store.metrics('job-r1', { kind: 'cross' });
    expect(new Set(cross.map((m) => `${m.site_id}/${m.model_owner}/${m.metric}`)).size).toBe(cross.length);
    expect(cross).toHaveLength(6);
  }, TEST_TIMEOUT_MS);

  it('a request made while every site is away stays pending across a restart and completes when they connect', async () => {
    const fed = await finishedJob('job-r3');
    feds.push(fed);
    const post = await fetch(`${fed.coord.httpUrl}/api/jobs/job-r3/cross-eval`, { method: 'POST', headers: adminHeaders(fed), body: '{}' });
    expect(post.status).toBe(202);
    await sleep(300); // several dispatcher ticks: no site connected, within the first heartbeat timeout
    expect(crossEvalRequests(fed.coord.store.db, 'job-r3').map((r) => r.status)).toEqual(['pending']);
    await fed.restart();
    const loops = await siteLoops(fed, () => true);
    const matrix = await matrixOf(fed, 'job-r3', 3);
    await Promise.all(loops.handled);
    loops.close();
    expect(loops.errors).toEqual([]);
    expect(matrix.model_owners).toEqual(IDS);
    expect(crossEvalRequests(fed.coord.store.db, 'job-r3').map((r) => r.status)).toEqual(['done']);
  }, TEST_TIMEOUT_MS);

  it('with site-b silent, CROSS_EVAL starts when the wait counted from the persisted dispatch time ends', async () => {
    const fed = await midRequest('job-r2');
    const timeout = 3000;
    const file = join(fed.dataDir, 'coordinator.yaml');
    writeFileSync(file, YAML.stringify({ ...YAML.parse(readFileSync(file, 'utf8')), side_tasks: { cross_eval_upload_timeout_ms: timeout } }));
    const dispatched = crossEvalRequests(fed.coord.store.db, 'job-r2')[0].dispatched_ms!;
    await sleep(Math.max(0, dispatched + 1500 - Date.now()));
    await fed.restart();
    const restarted = Date.now();
    const loops = await siteLoops(fed, (id) => id !== 'site-c', (id, kind) => id === 'site-b' && kind === 'TASK_KIND_UPLOAD_LOCAL');
    const matrix = await matrixOf(fed, 'job-r2', 1);
    await Promise.all(loops.handled);
    loops.close();
    expect(loops.errors).toEqual([]);
    expect(matrix.model_owners).toEqual(['site-a']);
    const xeval = sideRows(fed, 'TASK_KIND_CROSS_EVAL');
    expect(xeval.map((r) => r.site_id)).toEqual(IDS);
    // the wait ended `timeout` after the dispatch, not `timeout` after the restart
    expect(xeval[0].created_ms - dispatched).toBeGreaterThanOrEqual(timeout);
    expect(xeval[0].created_ms - restarted).toBeLessThan(timeout - 500);
    expect(sideRows(fed, 'TASK_KIND_UPLOAD_LOCAL').map((r) => r.status)).toEqual(['done', 'expired', 'declined']);
    const [req] = crossEvalRequests(fed.coord.store.db, 'job-r2');
    expect(req.status).toBe('done');
    expect(req.note).toMatch(/site-b did not answer within 3000 ms/);
    // site-b's late upload is refused: its UPLOAD_LOCAL task expired
    const b = fed.sites[1];
    const bytes = encodeSafetensors(new Map([['x', { dtype: 'F32' as const, shape: [2], data: new Float32Array([1, 2]) }]]), { format: 'pt' });
    const tmp = mkdtempSync(join(tmpdir(), 'fedlora-xe-'));
    writeFileSync(join(tmp, 'a.safetensors'), bytes);
    const signed = { updateId: `late-${req.id}`, jobId: 'job-r2', round: 1, baseVersion: 1, sha256: createHash('sha256').update(bytes).digest('hex'), numExamples: 1 };
    await expect(b.grpc.submitUpdate({ ...signed, taskId: `xupload-${req.id}-site-b`, totalBytes: bytes.length, chunkSize: 1 << 20, payloadKind: LOCAL_ADAPTER_PAYLOAD,
      signature: signUpdate(readFileSync(join(b.dir, 'site.key'), 'utf8'), signed), updateNorm: 0, clipped: false, metadataJson: Buffer.alloc(0) }, join(tmp, 'a.safetensors'))).rejects.toMatchObject({ code: 'FEDLORA_ERR_NOT_SELECTED' });
    rmSync(tmp, { recursive: true, force: true });
    expect(fed.coord.store.adapterVersion('job-r2', 1, 'site-b')).toBeUndefined();
  }, TEST_TIMEOUT_MS);
});
