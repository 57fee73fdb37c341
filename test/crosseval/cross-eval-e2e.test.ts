// Cross-site evaluation through the real coordinator: 3 enrolled sites over mutual TLS finish a
// job, an admin asks for cross-evaluation over HTTP, the coordinator sends UPLOAD_LOCAL then
// CROSS_EVAL on the sites' task streams, and the sites answer with handleUploadLocal /
// handleCrossEval (site-agent/agent/cross-eval.ts).
import { describe, it, expect, afterAll } from 'vitest';
import { createHash, randomUUID } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { verifyManifest } from '../../shared/publication-manifest.ts';
import { readManifestSigner } from '../../certs/ca.ts';
import { pkiDirOf } from '../../coordinator/enrollment.ts';
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

/** Owner-site adapter rows stored for a job (shared local-only adapters). */
const ownerRows = (fed: Federation, jobId: string) =>
  (fed.coord.store.db.prepare(`SELECT owner_site FROM adapter_versions WHERE job_id = ? AND owner_site != '' ORDER BY owner_site`).all(jobId) as Array<{ owner_site: string }>).map((r) => r.owner_site);

type Matrix = { data_sites: string[]; model_owners: string[]; values: (number | null)[][] };

describe('cross-site evaluation end to end', () => {
  it('consenting owners are evaluated at every site; the declining site shares nothing', async () => {
    const fed = await finishedJob('job-x');
    feds.push(fed);
    const loops = await siteLoops(fed, (id) => id !== 'site-c');
    const auth = adminHeaders(fed);
    const post = await fetch(`${fed.coord.httpUrl}/api/jobs/job-x/cross-eval`, { method: 'POST', headers: auth, body: '{}' });
    expect(post.status).toBeLessThan(300);

    let matrix: Matrix | undefined;
    for (let i = 0; i < 200; i++) {
      const body = (await (await fetch(`${fed.coord.httpUrl}/api/jobs/job-x/cross-eval`, { headers: auth })).json()) as { matrix?: Matrix } & Matrix;
      matrix = body.matrix ?? body;
      if (matrix?.data_sites?.length === 3 && matrix.model_owners.length >= 2 && matrix.values.every((row) => row.every((v) => v !== null))) break;
      await sleep(50);
    }
    await Promise.all(loops.handled);
    loops.close();
    expect(loops.errors).toEqual([]);

    expect(matrix!.data_sites).toEqual(IDS);
    // site-c evaluates the owners' adapters but shares none: no site-c column (not even its diagonal)
    expect(matrix!.model_owners).toEqual(['site-a', 'site-b']);
    matrix!.data_sites.forEach((_d, di) => matrix!.model_owners.forEach((o, oi) => {
      expect(matrix!.values[di][oi]).toBeCloseTo((IDS.indexOf(o) + 1) / 10 + di / 100, 5);
    }));
    // every site got one UPLOAD_LOCAL and one CROSS_EVAL naming exactly the consenting owners
    // (and, first, the final EVALUATE it missed while no stream was connected)
    for (const id of IDS) {
      expect(loops.tasks.filter((t) => t.site === id).map((t) => t.kind)).toEqual(['TASK_KIND_EVALUATE', 'TASK_KIND_UPLOAD_LOCAL', 'TASK_KIND_CROSS_EVAL']);
      expect(loops.tasks.find((t) => t.site === id && t.kind === 'TASK_KIND_CROSS_EVAL')!.peerSites).toEqual(['site-a', 'site-b']);
    }

    const store = fed.coord.store;
    const v = store.adapterVersions('job-x').filter((r) => !r.owner_site).at(-1)!.version;
    expect(store.adapterVersion('job-x', v, 'site-c')).toBeUndefined();
    expect(ownerRows(fed, 'job-x')).toEqual(['site-a', 'site-b']);
    const signer = readManifestSigner(pkiDirOf(fed.dataDir));
    for (const o of ['site-a', 'site-b']) {
      const row = store.adapterVersion('job-x', v, o)!;
      expect(JSON.parse(row.manifest_json)).toMatchObject({ owner_site: o, job_id: 'job-x', version: v });
      expect(verifyManifest(Buffer.from(row.manifest_json, 'utf8'), Buffer.from(row.signature, 'base64'), signer.certPem)).toBe(true);
    }
    const declined = store.db.prepare(`SELECT actor FROM audit_log WHERE action = 'task_declined'`).all() as Array<{ actor: string }>;
    expect(declined.map((r) => r.actor)).toEqual(['site-c']);
    const egress = (id: string) => loops.audits.get(id)!.some((e) => e.action === 'egress' && e.details.what === 'local-only adapter for cross-evaluation');
    expect(loops.audits.get('site-c')!.map((e) => e.action)).toContain('task_declined');
    expect(egress('site-c')).toBe(false);
    expect(egress('site-a') && egress('site-b')).toBe(true);
    expect(crossEvalRequests(store.db, 'job-x').map((r) => r.status)).toEqual(['done']);

    // A local adapter pushed without an UPLOAD_LOCAL task (the request is done) is refused.
    const s = fed.sites[2];
    const bytes = encodeSafetensors(new Map([['x', { dtype: 'F32' as const, shape: [2], data: new Float32Array([1, 2]) }]]), { format: 'pt' });
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const tmp = mkdtempSync(join(tmpdir(), 'fedlora-xe-'));
    const file = join(tmp, 'a.safetensors');
    writeFileSync(file, bytes);
    const signed = { updateId: `forged-${randomUUID()}`, jobId: 'job-x', round: v, baseVersion: v, sha256, numExamples: 1 };
    await expect(s.grpc.submitUpdate({ ...signed, taskId: 'xupload-1-site-c', totalBytes: bytes.length, chunkSize: 1 << 20, payloadKind: LOCAL_ADAPTER_PAYLOAD,
      signature: signUpdate(readFileSync(join(s.dir, 'site.key'), 'utf8'), signed), updateNorm: 0, clipped: false, metadataJson: Buffer.alloc(0) }, file)).rejects.toMatchObject({ code: 'FEDLORA_ERR_NOT_SELECTED' });
    rmSync(tmp, { recursive: true, force: true });
    expect(store.adapterVersion('job-x', v, 'site-c')).toBeUndefined();
  }, TEST_TIMEOUT_MS);

  it('no site consents: the request fails with a note and no CROSS_EVAL goes out', async () => {
    const fed = await finishedJob('job-n');
    feds.push(fed);
    const loops = await siteLoops(fed, () => false);
    const post = await fetch(`${fed.coord.httpUrl}/api/jobs/job-n/cross-eval`, { method: 'POST', headers: adminHeaders(fed), body: '{}' });
    expect(post.status).toBeLessThan(300);
    for (let i = 0; i < 200 && crossEvalRequests(fed.coord.store.db, 'job-n')[0]?.status !== 'failed'; i++) await sleep(50);
    await Promise.all(loops.handled);
    await sleep(200);
    loops.close();
    expect(loops.errors).toEqual([]);
    const [req] = crossEvalRequests(fed.coord.store.db, 'job-n');
    expect(req.status).toBe('failed');
    expect(req.note).toMatch(/allow_cross_eval/);
    expect(loops.tasks.map((t) => t.kind).filter((k) => k !== 'TASK_KIND_EVALUATE')).toEqual(IDS.map(() => 'TASK_KIND_UPLOAD_LOCAL'));
    expect(ownerRows(fed, 'job-n')).toEqual([]);
  }, TEST_TIMEOUT_MS);
});
