// Chunked transfers over real mutual-TLS gRPC: SubmitUpdate into the UploadReceiver
// (persist-before-ack, resume, hash checks, limits, idempotence) and FetchAdapter downloads.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { enrollSite } from '../../site-agent/enroll.ts';
import { issueJoinToken } from '../../coordinator/enrollment.ts';
import { authenticateCall } from '../../coordinator/auth.ts';
import { fail, fromGrpcError } from '../../shared/errors.ts';
import { createFederationClient, unary, type FederationClient, type SubmitUpdateResponse, type UpdateHeader, type UpdateMessage } from '../../shared/proto.ts';
import { createSiteChannelCredentials } from '../../shared/tls.ts';
import { UploadReceiver, submitUpdateHandler, uploadStatusHandler, type CompletedUpload } from '../../shared/transfer/receiver.ts';
import { uploadFile } from '../../shared/transfer/upload.ts';
import { downloadAdapter, streamFile } from '../../shared/transfer/download.ts';
import { MiB, sha256File, sha256Hex } from '../../shared/transfer/chunks.ts';
import { startCoordinator, tempDir, type TestCoordinator } from './helpers.ts';

let coord: TestCoordinator;
let client: FederationClient;
let work: string;
let receiver: UploadReceiver;
const completed: CompletedUpload[] = [];
let rejectNext: string | null = null;
let adapterFile: string;

beforeAll(async () => {
  coord = await startCoordinator(({ db, auth, dataDir }) => {
    receiver = new UploadReceiver({
      db, spoolDir: join(dataDir, 'uploads', 'spool'), finalDir: join(dataDir, 'uploads', 'complete'), maxTotalBytes: 16 * MiB,
      onComplete: (u) => {
        // Stands in for C3's content validation: sees verified bytes at u.path.
        expect(readFileSync(u.path).length).toBe(u.totalBytes);
        if (rejectNext === u.header.updateId) throw fail('FEDLORA_ERR_UPDATE_NONFINITE', `update ${u.header.updateId}: tensor x has NaN`);
        completed.push(u);
      },
    });
    const who = (call: { getAuthContext(): unknown }) => authenticateCall(call as never, auth).siteId;
    return {
      submitUpdate: submitUpdateHandler(receiver, who),
      getUploadStatus: uploadStatusHandler(receiver, who),
      fetchAdapter: (call) => {
        try {
          who(call);
        } catch (e) {
          call.emit('error', { code: grpc.status.PERMISSION_DENIED, details: String(e) });
          return;
        }
        void streamFile(call, { ref: { jobId: call.request.jobId, version: call.request.version, sha256: adapterSha, sizeBytes: 0, manifestSha256: '' }, chunkSize: MiB }, adapterFile, call.request.offset);
      },
    };
  });
  work = tempDir('transfer');
  const { token } = issueJoinToken(coord.db, { siteId: 'site-up', ttlMs: 60_000, enrollEndpoint: coord.enrollEndpoint, caSha256: coord.ca.sha256 });
  const siteDir = join(work, 'site');
  await enrollSite({ token, siteDir });
  client = createFederationClient(coord.federationEndpoint, createSiteChannelCredentials(siteDir));
  adapterFile = join(work, 'adapter.safetensors.bin');
  writeFileSync(adapterFile, randomBytes(3 * MiB + 12345));
  adapterSha = await sha256File(adapterFile);
});
let adapterSha = '';

afterAll(async () => {
  client?.close();
  await coord.close();
  rmSync(work, { recursive: true, force: true });
});

function payload(name: string, bytes: number): string {
  const f = join(work, name);
  writeFileSync(f, randomBytes(bytes));
  return f;
}

function header(updateId: string, file: string, sha: string, over: Partial<UpdateHeader> = {}): UpdateHeader {
  return {
    updateId, taskId: 't1', jobId: 'job1', round: 1, baseVersion: 0, totalBytes: statSync(file).size, sha256: sha, chunkSize: MiB,
    numExamples: 10, payloadKind: 'delta', signature: Buffer.alloc(0), resumeFromChunk: 0, updateNorm: 1, clipped: false, metadataJson: Buffer.alloc(0), ...over,
  };
}

function chunkOf(file: string, index: number, chunkSize = MiB) {
  const all = readFileSync(file);
  const data = all.subarray(index * chunkSize, Math.min(all.length, (index + 1) * chunkSize));
  return { index, offset: index * chunkSize, data, sha256: sha256Hex(data) };
}

/** A hand-driven SubmitUpdate stream: write messages, then end or cancel. */
function rawStream() {
  let resolve!: (r: SubmitUpdateResponse) => void, reject!: (e: grpc.ServiceError) => void;
  const result = new Promise<SubmitUpdateResponse>((a, b) => ((resolve = a), (reject = b)));
  const call = client.submitUpdate(new grpc.Metadata(), {}, (err, res) => (err ? reject(err) : resolve(res!)));
  call.on('error', () => undefined);
  return { call, result, send: (m: UpdateMessage) => call.write(m) };
}

const status = (updateId: string) => unary(client.getUploadStatus.bind(client), { updateId });

async function rejected(p: Promise<unknown>): Promise<{ code: string; message: string; grpc?: number }> {
  const e = await p.then(() => null, (x) => x);
  expect(e, 'expected a rejection').not.toBeNull();
  const fe = e.code && typeof e.code === 'string' ? e : fromGrpcError(e);
  return { code: fe.code, message: fe.message, grpc: typeof e.code === 'number' ? e.code : undefined };
}

describe('SubmitUpdate', () => {
  it('uploads a file in chunks and lands the verified bytes in their final place', async () => {
    const f = payload('u1.bin', 5 * MiB + 777);
    const res = await uploadFile(client, { updateId: 'u1', jobId: 'job1', round: 1, taskId: 't1' }, f, { chunkSize: MiB });
    const sha = await sha256File(f);
    expect(res).toMatchObject({ updateId: 'u1', complete: true, sha256: sha, receivedChunks: 6, receivedBytes: 5 * MiB + 777, resumedFromChunk: 0 });
    const done = completed.find((c) => c.header.updateId === 'u1')!;
    expect(done.siteId).toBe('site-up');
    expect(await sha256File(done.finalPath)).toBe(sha);
    expect(await status('u1')).toEqual({ known: true, receivedChunks: 6, receivedBytes: 5 * MiB + 777, complete: true });
  });

  it('an upload cut after N chunks resumes from the last persisted chunk', async () => {
    const f = payload('u2.bin', 4 * MiB + 5);
    const sha = await sha256File(f);
    const s = rawStream();
    s.send({ header: header('u2', f, sha) });
    for (let i = 0; i < 3; i++) s.send({ chunk: chunkOf(f, i) });
    // wait until the coordinator says the 3 chunks are persisted, then drop the stream
    for (let t = 0; t < 200 && (await status('u2')).receivedChunks < 3; t++) await new Promise((r) => setTimeout(r, 10));
    s.call.cancel();
    await rejected(s.result);
    expect(await status('u2')).toEqual({ known: true, receivedChunks: 3, receivedBytes: 3 * MiB, complete: false });
    const res = await uploadFile(client, { updateId: 'u2', jobId: 'job1', round: 1, taskId: 't1' }, f, { chunkSize: MiB });
    expect(res.resumedFromChunk).toBe(3);
    expect(res.complete).toBe(true);
    expect(res.sha256).toBe(sha);
    expect(await sha256File(completed.find((c) => c.header.updateId === 'u2')!.finalPath)).toBe(sha);
  });

  it('the uploadFile cut hook + retry completes with the right sha256', async () => {
    const f = payload('u2b.bin', 3 * MiB + 1);
    const e = await rejected(uploadFile(client, { updateId: 'u2b', jobId: 'job1' }, f, { chunkSize: MiB, onChunkSent: (i) => (i === 1 ? 'cut' : undefined) }));
    expect(e.grpc).toBe(grpc.status.CANCELLED);
    const before = await status('u2b');
    expect(before.complete).toBe(false);
    const res = await uploadFile(client, { updateId: 'u2b', jobId: 'job1' }, f, { chunkSize: MiB });
    expect(res.resumedFromChunk).toBe(before.receivedChunks);
    expect(res.sha256).toBe(await sha256File(f));
  });

  it('a corrupted chunk is rejected with FEDLORA_ERR_CHUNK_HASH and nothing is stored', async () => {
    const f = payload('u3.bin', 2 * MiB);
    const s = rawStream();
    s.send({ header: header('u3', f, await sha256File(f)) });
    const c = chunkOf(f, 0);
    const bad = Buffer.from(c.data);
    bad[100] ^= 0xff;
    s.send({ chunk: { ...c, data: bad } });
    s.call.end();
    const e = await rejected(s.result);
    expect(e.grpc).toBe(grpc.status.DATA_LOSS);
    expect(e.code).toBe('FEDLORA_ERR_CHUNK_HASH');
    expect(e.message).toMatch(/chunk 0 of update u3/);
    expect(await status('u3')).toMatchObject({ receivedChunks: 0, receivedBytes: 0, complete: false });
    const spool = join(coord.dataDir, 'uploads', 'spool', 'site-up__u3.part');
    expect(statSync(spool).size).toBe(0);
    expect(completed.some((x) => x.header.updateId === 'u3')).toBe(false);
  });

  it('rejects out-of-order chunks, oversized chunks and oversized updates', async () => {
    const f = payload('u4.bin', 3 * MiB);
    const sha = await sha256File(f);
    let s = rawStream();
    s.send({ header: header('u4', f, sha) });
    s.send({ chunk: chunkOf(f, 1) });
    s.call.end();
    let e = await rejected(s.result);
    expect(e.code).toBe('FEDLORA_ERR_CHUNK_ORDER');
    expect(e.message).toMatch(/chunk 1 of update u4 arrived, expected chunk 0/);

    s = rawStream();
    s.send({ header: header('u5', f, sha) });
    const big = randomBytes(MiB + 1);
    s.send({ chunk: { index: 0, offset: 0, data: big, sha256: sha256Hex(big) } });
    s.call.end();
    e = await rejected(s.result);
    expect(e.code).toBe('FEDLORA_ERR_CHUNK_SIZE');
    expect(e.message).toMatch(/more than the chunk size/);

    s = rawStream();
    s.send({ header: header('u6', f, sha, { totalBytes: 17 * MiB }) });
    s.call.end();
    e = await rejected(s.result);
    expect(e.code).toBe('FEDLORA_ERR_CHUNK_SIZE');
    expect(e.message).toMatch(/total_bytes 17825792 exceeds the limit/);
    expect((await status('u6')).known).toBe(false);

    s = rawStream();
    s.send({ header: header('u7', f, sha, { chunkSize: 8 * MiB }) });
    s.call.end();
    e = await rejected(s.result);
    expect(e.code).toBe('FEDLORA_ERR_CHUNK_SIZE');
  });

  it('a duplicate of a complete update is idempotent; a changed one is a replay', async () => {
    const f = payload('u8.bin', MiB + 3);
    const first = await uploadFile(client, { updateId: 'u8', jobId: 'job1', round: 1 }, f, { chunkSize: MiB });
    const again = await uploadFile(client, { updateId: 'u8', jobId: 'job1', round: 1 }, f, { chunkSize: MiB });
    const noResume = await uploadFile(client, { updateId: 'u8', jobId: 'job1', round: 1 }, f, { chunkSize: MiB, resume: false });
    const strip = (r: SubmitUpdateResponse) => ({ updateId: r.updateId, receivedBytes: r.receivedBytes, receivedChunks: r.receivedChunks, complete: r.complete, sha256: r.sha256 });
    expect(strip(again)).toEqual(strip(first));
    expect(strip(noResume)).toEqual(strip(first));
    expect(completed.filter((c) => c.header.updateId === 'u8').length).toBe(1);
    const other = payload('u8-other.bin', MiB + 3);
    const e = await rejected(uploadFile(client, { updateId: 'u8', jobId: 'job1', round: 1 }, other, { chunkSize: MiB }));
    expect(e.code).toBe('FEDLORA_ERR_REPLAY');
  });

  it('a wrong whole-payload sha256 or a content rejection stores nothing', async () => {
    const f = payload('u9.bin', 2 * MiB + 9);
    // the sender refuses a header sha256 that does not match its file...
    const e0 = await rejected(uploadFile(client, { updateId: 'u9', jobId: 'job1', sha256: 'a'.repeat(64) }, f, { chunkSize: MiB }));
    expect(e0.code).toBe('FEDLORA_ERR_UPDATE_HASH');
    // ...and the receiver checks the whole payload itself: every chunk fine, header hash wrong
    const s = rawStream();
    s.send({ header: header('u9', f, 'a'.repeat(64)) });
    for (let i = 0; i < 3; i++) s.send({ chunk: chunkOf(f, i) });
    s.send({ trailer: { chunks: 3 } });
    s.call.end();
    const e = await rejected(s.result);
    expect(e.grpc).toBe(grpc.status.DATA_LOSS);
    expect(e.code).toBe('FEDLORA_ERR_UPDATE_HASH');
    expect(e.message).toMatch(/update u9: sha256 of the 2097161 bytes received is [0-9a-f]{64}, header says a{64}/);
    expect((await status('u9')).known).toBe(false);
    rejectNext = 'u10';
    const e2 = await rejected(uploadFile(client, { updateId: 'u10', jobId: 'job1' }, f, { chunkSize: MiB }));
    expect(e2.code).toBe('FEDLORA_ERR_UPDATE_NONFINITE');
    expect((await status('u10')).known).toBe(false);
    const spool = readdirSync(join(coord.dataDir, 'uploads', 'spool'));
    expect(spool.filter((n) => n.includes('u9') || n.includes('u10'))).toEqual([]);
    expect(existsSync(join(coord.dataDir, 'uploads', 'complete', 'site-up', 'u10.bin'))).toBe(false);
  });
});

describe('FetchAdapter', () => {
  it('downloads with per-chunk verification and resumes a cut download from its offset', async () => {
    const out = join(work, 'dl.bin');
    const e = await rejected(downloadAdapter(client, { jobId: 'job1', version: 1 }, out, { onChunk: (i) => (i === 1 ? 'cut' : undefined) }));
    expect(e.code).toBe('FEDLORA_ERR_UNAVAILABLE');
    expect(statSync(`${out}.part`).size).toBe(2 * MiB);
    const r = await downloadAdapter(client, { jobId: 'job1', version: 1 }, out);
    expect(r.resumedFrom).toBe(2 * MiB);
    expect(r.sha256).toBe(adapterSha);
    expect(await sha256File(out)).toBe(adapterSha);
    expect(existsSync(`${out}.part`)).toBe(false);
  });

  it('a download that does not match the expected sha256 is deleted', async () => {
    const out = join(work, 'dl2.bin');
    const e = await rejected(downloadAdapter(client, { jobId: 'job1', version: 1 }, out, { sha256: 'b'.repeat(64) }));
    expect(e.code).toBe('FEDLORA_ERR_UPDATE_HASH');
    expect(existsSync(out) || existsSync(`${out}.part`)).toBe(false);
  });
});
