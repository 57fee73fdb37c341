// The whole coordinator over the real wire: initCoordinator + startCoordinator on 127.0.0.1
// (mutual TLS 1.3 Federation, server-TLS Enrollment, HTTP), a fake site enrolled with a join
// token (real CSR, CA-issued certificate) that receives its TRAIN task on StreamTasks, fetches
// version 0 in chunks, submits a signed update in chunks, and the round publishes version 1.
import { describe, it, expect, afterAll } from 'vitest';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { downloadAdapter } from '../../shared/transfer/download.ts';
import { uploadFile } from '../../shared/transfer/upload.ts';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { initCoordinator, startCoordinator, type RunningCoordinator } from '../../coordinator/service.ts';
import { issueJoinToken } from '../../coordinator/enrollment.ts';
import { enrollSite } from '../../site-agent/enroll.ts';
import { createFederationClient, unary, type AdapterChunk, type Task, type FederationClient, type UpdateMessage, type SubmitUpdateResponse } from '../../shared/proto.ts';
import { createSiteChannelCredentials, sitePaths } from '../../shared/tls.ts';
import { signUpdate } from '../../shared/update-signature.ts';
import { fromGrpcError } from '../../shared/errors.ts';
import { decodeSafetensorsF32 } from '../../shared/safetensors.ts';
import { flatten } from '../../shared/tensors.ts';
import { verifyManifest } from '../../shared/publication-manifest.ts';
import { tempDir, rmDir, rawSpec, fakeDelta, encodeDelta } from './helpers.ts';
import { SLOWDOWN } from '../runner/limits.ts';

const dirs: string[] = [];
let coord: RunningCoordinator | undefined;
const running: RunningCoordinator[] = [];
const clients: FederationClient[] = [];
afterAll(async () => {
  for (const c of clients) c.close();
  for (const c of running) await c.stop(); // stop() is idempotent
  for (const d of dirs) rmDir(d);
});

function nextTask(stream: grpc.ClientReadableStream<Task>): Promise<Task> {
  return new Promise((resolve, reject) => {
    stream.once('data', resolve);
    stream.once('error', reject);
  });
}

function fetchAll(client: FederationClient, jobId: string, version: number): Promise<{ header: Extract<AdapterChunk, { header: unknown }>['header']; data: Buffer }> {
  return new Promise((resolve, reject) => {
    const s = client.fetchAdapter({ jobId, version, offset: 0 });
    let header: any;
    const parts: Buffer[] = [];
    s.on('data', (m: AdapterChunk) => {
      if (m.part === 'header') header = m.header;
      else if (m.chunk) {
        const data = Buffer.from(m.chunk.data);
        if (createHash('sha256').update(data).digest('hex') !== m.chunk.sha256) reject(new Error(`chunk ${m.chunk.index} hash`));
        parts.push(data);
      }
    });
    s.on('end', () => resolve({ header, data: Buffer.concat(parts) }));
    s.on('error', reject);
  });
}

function submit(client: FederationClient, msgs: UpdateMessage[]): Promise<SubmitUpdateResponse> {
  return new Promise((resolve, reject) => {
    const call = client.submitUpdate(new grpc.Metadata(), {}, (err, res) => (err ? reject(fromGrpcError(err)) : resolve(res!)));
    for (const m of msgs) call.write(m);
    call.end();
  });
}

describe('coordinator over gRPC with mutual TLS', () => {
  it('a site gets its task, fetches version 0, submits an update, and version 1 is published', async () => {
    const dataDir = tempDir('coord-e2e');
    dirs.push(dataDir);
    const local = { host: '127.0.0.1', port: 0 };
    const init = await initCoordinator({ dataDir, config: { federation: local, enrollment: local, http: local, transfer: { chunk_size: 1024 }, rounds: { tick_ms: 50 } } });
    coord = await startCoordinator(dataDir, { logger: false });
    running.push(coord);

    const siteDir = tempDir('site-e2e');
    dirs.push(siteDir);
    const { token } = issueJoinToken(coord.store.db, { siteId: 'site-a', ttlMs: 600_000, enrollEndpoint: coord.enrollmentEndpoint, caSha256: init.caSha256 });
    const rec = await enrollSite({ token, siteDir });
    expect(rec.federationEndpoint).toBe(coord.federationEndpoint);
    const client = createFederationClient(coord.federationEndpoint, createSiteChannelCredentials(siteDir));
    clients.push(client);

    const hb = await unary(client.heartbeat.bind(client), { agentVersion: 't', state: 'idle' });
    expect(hb.heartbeatIntervalMs).toBeGreaterThan(0);
    const stream = client.streamTasks({ agentVersion: 't', maxParallelTasks: 1 });
    const taskP = nextTask(stream);

    // submit the job over HTTP (admin token)
    const noAuth = await fetch(`${coord.httpUrl}/api/jobs`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(rawSpec({ rounds: 1, min_sites: 1 })) });
    expect(noAuth.status).toBe(401);
    const res = await fetch(`${coord.httpUrl}/api/jobs?id=job-e2e`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${init.adminToken}` }, body: JSON.stringify(rawSpec({ rounds: 1, min_sites: 1 })) });
    expect(res.status).toBe(201);
    const task = await taskP;
    expect(task).toMatchObject({ jobId: 'job-e2e', round: 1, kind: 'TASK_KIND_TRAIN', globalAdapter: { version: 0 } });
    expect(task.lora).toMatchObject({ r: 2, alpha: 4, targetModules: ['q_proj', 'v_proj'] });

    // fetch version 0 and check the signed manifest
    const { header, data } = await fetchAll(client, 'job-e2e', 0);
    expect(header.totalBytes).toBe(data.length);
    expect(data.length).toBeGreaterThan(1024); // several chunks
    expect(createHash('sha256').update(data).digest('hex')).toBe(task.globalAdapter!.sha256);
    const keyPem = await (await fetch(`${coord.httpUrl}/api/manifest-key`, { headers: { authorization: `Bearer ${init.adminToken}` } })).text();
    expect(verifyManifest(Buffer.from(header.manifestJson), Buffer.from(header.signature), keyPem)).toBe(true);
    expect(JSON.parse(Buffer.from(header.adapterConfigJson).toString())).toMatchObject({ peft_type: 'LORA', r: 2, lora_alpha: 4 });

    // submit a signed update in 512-byte chunks
    const { layout } = coord.engine.jobInfo('job-e2e');
    const delta = fakeDelta(layout.update, 'site-a', 1);
    const bytes = encodeDelta(layout.update, delta);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const fields = { updateId: 'u-site-a-1', jobId: 'job-e2e', round: 1, baseVersion: 0, sha256, numExamples: 12 };
    const signature = signUpdate(readFileSync(sitePaths(siteDir).key), fields);
    const msgs: UpdateMessage[] = [{ part: 'header', header: { updateId: fields.updateId, taskId: task.taskId, jobId: 'job-e2e', round: 1, baseVersion: 0, totalBytes: bytes.length, sha256, chunkSize: 512, numExamples: 12, payloadKind: 'delta', signature, resumeFromChunk: 0, updateNorm: 1, clipped: false, metadataJson: Buffer.alloc(0) } } as UpdateMessage];
    let n = 0;
    expect(bytes.length).toBeGreaterThan(3 * 512);
    for (let off = 0; off < bytes.length; off += 512, n++) {
      const c = bytes.subarray(off, off + 512);
      msgs.push({ part: 'chunk', chunk: { index: n, offset: off, data: c, sha256: createHash('sha256').update(c).digest('hex') } } as UpdateMessage);
    }
    // first upload stops after 2 chunks (interrupted), then resumes from what was persisted
    await submit(client, msgs.slice(0, 3));
    const st = await unary(client.getUploadStatus.bind(client), { updateId: fields.updateId });
    expect(st).toMatchObject({ known: true, receivedChunks: 2, receivedBytes: 1024, complete: false });
    const resumeHeader = { part: 'header', header: { ...(msgs[0] as any).header, resumeFromChunk: 2 } } as UpdateMessage;
    const done = await submit(client, [resumeHeader, ...msgs.slice(3), { part: 'trailer', trailer: { chunks: n } } as UpdateMessage]);
    expect(done).toMatchObject({ complete: true, sha256, receivedChunks: n });
    // idempotent: the same update id again is complete without re-sending
    expect(await submit(client, [msgs[0]])).toMatchObject({ complete: true });

    const job = await coord.engine.waitForJob('job-e2e', 20_000 * SLOWDOWN);
    expect(job.status).toBe('completed');
    const v1 = await fetchAll(client, 'job-e2e', 1);
    const got = flatten(decodeSafetensorsF32(v1.data).tensors, layout.full);
    const v0 = flatten(decodeSafetensorsF32(data).tensors, layout.full);
    const e = layout.full.entries.find((x) => x.name.includes('lora_B'))!;
    expect(got[e.offset]).toBeCloseTo(v0[e.offset] + delta[layout.update.entries.find((x) => x.name === e.name)!.offset], 6);
    const m1 = JSON.parse(Buffer.from(v1.header.manifestJson).toString());
    expect(m1).toMatchObject({ version: 1, round: 1, contributing_sites: 1, num_examples: 12, prev_manifest_sha256: createHash('sha256').update(Buffer.from(header.manifestJson)).digest('hex') });

    // metrics over the wire, read back over HTTP as CSV
    await unary(client.reportMetrics.bind(client), { taskId: task.taskId, jobId: 'job-e2e', round: 1, phase: 'eval', metrics: [{ kind: 'global', name: 'loss', value: 1.25, count: 10, modelOwner: '', adapterVersion: 1 }] });
    const csv = await (await fetch(`${coord.httpUrl}/api/jobs/job-e2e/metrics?format=csv`, { headers: { authorization: `Bearer ${init.adminToken}` } })).text();
    expect(csv.split('\n')[0]).toBe('job_id,round,site_id,kind,metric,subset,eval_set,value,ci_low,ci_high,count,model_owner,adapter_version,phase,created_ms');
    // no subset, no eval set, no interval reported: those cells are empty
    expect(csv.split('\n')[1]).toMatch(/^job-e2e,1,site-a,global,loss,,,1.25,,,10,,1,eval,/);

    // a replayed update id presented for another round is refused; an unknown task too
    await expect(submit(client, [{ part: 'header', header: { ...(msgs[0] as any).header, round: 2 } } as UpdateMessage])).rejects.toMatchObject({ code: 'FEDLORA_ERR_REPLAY' });
    await expect(submit(client, [{ part: 'header', header: { ...(msgs[0] as any).header, updateId: 'fresh', taskId: 'nope' } } as UpdateMessage])).rejects.toMatchObject({ code: 'FEDLORA_ERR_NOT_SELECTED' });
    stream.cancel();
  });

  it('restart mid-round: acknowledged updates survive, a reconnecting site gets its task again, the round publishes', async () => {
    const dataDir = tempDir('coord-restart');
    dirs.push(dataDir);
    const local = { host: '127.0.0.1', port: 0 };
    const init = await initCoordinator({ dataDir, config: { federation: local, enrollment: local, http: local, rounds: { tick_ms: 50 }, transfer: { chunk_size: 1024 } } });
    let c = await startCoordinator(dataDir, { logger: false });
    running.push(c);
    const sites: Record<string, string> = {};
    for (const id of ['site-a', 'site-b']) {
      const siteDir = tempDir(`site-${id}`);
      dirs.push(siteDir);
      const { token } = issueJoinToken(c.store.db, { siteId: id, ttlMs: 600_000, enrollEndpoint: c.enrollmentEndpoint, caSha256: init.caSha256 });
      await enrollSite({ token, siteDir });
      sites[id] = siteDir;
    }
    const connect = (id: string) => {
      const cl = createFederationClient(c.federationEndpoint, createSiteChannelCredentials(sites[id]));
      clients.push(cl);
      return cl;
    };
    let a = connect('site-a'), b = connect('site-b');
    for (const cl of [a, b]) await unary(cl.heartbeat.bind(cl), { state: 'idle' });
    const sa = a.streamTasks({}), sb = b.streamTasks({});
    const ta = nextTask(sa), tb = nextTask(sb);
    await c.engine.submitJob((await import('../../coordinator/jobs/spec.ts')).parseJobSpec(rawSpec({ rounds: 1, min_sites: 2 })), 'job-r');
    const [taskA, taskB] = await Promise.all([ta, tb]);
    const { layout } = c.engine.jobInfo('job-r');
    const upload = async (cl: FederationClient, id: string, task: Task) => {
      const bytes = encodeDelta(layout.update, fakeDelta(layout.update, id, 1));
      const sha256 = createHash('sha256').update(bytes).digest('hex');
      const f = { updateId: `u-${id}`, jobId: 'job-r', round: 1, baseVersion: 0, sha256, numExamples: 5 };
      return submit(cl, [
        { part: 'header', header: { ...f, taskId: task.taskId, totalBytes: bytes.length, chunkSize: 1 << 20, payloadKind: 'delta', signature: signUpdate(readFileSync(sitePaths(sites[id]).key), f), resumeFromChunk: 0, updateNorm: 0, clipped: false, metadataJson: Buffer.alloc(0) } } as UpdateMessage,
        { part: 'chunk', chunk: { index: 0, offset: 0, data: bytes, sha256 } } as UpdateMessage,
        { part: 'trailer', trailer: { chunks: 1 } } as UpdateMessage,
      ]);
    };
    expect(await upload(a, 'site-a', taskA)).toMatchObject({ complete: true });
    sa.cancel();
    sb.cancel();
    await c.stop();

    c = await startCoordinator(dataDir, { logger: false });
    running.push(c);
    expect(c.store.roundUpdates('job-r', 1, 1, 'accepted').map((u) => u.site_id)).toEqual(['site-a']);
    a = connect('site-a');
    b = connect('site-b');
    const sb2 = b.streamTasks({});
    const again = await nextTask(sb2);
    expect(again.taskId).toBe(taskB.taskId);
    // a signature made with another site's key is refused and recorded
    const bytes = encodeDelta(layout.update, fakeDelta(layout.update, 'site-b', 1));
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const f = { updateId: 'u-forged', jobId: 'job-r', round: 1, baseVersion: 0, sha256, numExamples: 5 };
    await expect(submit(b, [
      { part: 'header', header: { ...f, taskId: taskB.taskId, totalBytes: bytes.length, chunkSize: 1 << 20, payloadKind: 'delta', signature: signUpdate(readFileSync(sitePaths(sites['site-a']).key), f), resumeFromChunk: 0, updateNorm: 0, clipped: false, metadataJson: Buffer.alloc(0) } } as UpdateMessage,
      { part: 'chunk', chunk: { index: 0, offset: 0, data: bytes, sha256 } } as UpdateMessage,
      { part: 'trailer', trailer: { chunks: 1 } } as UpdateMessage,
    ])).rejects.toMatchObject({ code: 'FEDLORA_ERR_SIGNATURE' });
    expect(c.store.update('u-forged')!.status).toBe('rejected');
    // site-b as the site agent does it: shared/transfer's helpers (download with a cut + resume at
    // an unaligned byte offset, upload from a file with GetUploadStatus resume)
    const out = join(sites['site-b'], 'global.safetensors');
    await expect(downloadAdapter(b, { jobId: 'job-r', version: 0 }, out, { onChunk: (i) => (i === 0 ? 'cut' : undefined) })).rejects.toMatchObject({ code: 'FEDLORA_ERR_UNAVAILABLE' });
    writeFileSync(`${out}.part`, readFileSync(`${out}.part`).subarray(0, 777)); // a partial write
    const dl = await downloadAdapter(b, { jobId: 'job-r', version: 0 }, out);
    expect(dl).toMatchObject({ resumedFrom: 777, sha256: again.globalAdapter!.sha256 });
    const updFile = join(sites['site-b'], 'update.safetensors');
    writeFileSync(updFile, bytes);
    const fb = { updateId: 'u-site-b', jobId: 'job-r', round: 1, baseVersion: 0, sha256, numExamples: 5 };
    const up = await uploadFile(b, { ...fb, taskId: again.taskId, signature: signUpdate(readFileSync(sitePaths(sites['site-b']).key), fb) }, updFile, { chunkSize: 1 << 20 });
    expect(up).toMatchObject({ complete: true, sha256 });
    const job = await c.engine.waitForJob('job-r', 20_000 * SLOWDOWN);
    expect(job).toMatchObject({ status: 'completed', current_version: 1 });
    expect(JSON.parse(c.store.adapterVersion('job-r', 1)!.manifest_json).contributing_sites).toBe(2);
    sb2.cancel();
  });
});
