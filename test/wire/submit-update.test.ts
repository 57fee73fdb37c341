// SubmitUpdate over real mutual-TLS gRPC into the coordinator's production intake (a real
// coordinator service: store, round engine, Federation handlers; certificates made at run
// time): chunked uploads land verified and accepted; a cut upload resumes from the committed
// progress (group commit); chunk, order, size, whole-payload hash and content checks refuse
// bad input and keep nothing unverified; a duplicate is idempotent, a changed one a replay;
// streams carrying the same update cooperate; after a coordinator restart the progress is
// still there and bytes written but never committed are cut.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendFileSync, existsSync, readFileSync, rmSync, statSync } from 'node:fs';
import { createHash } from 'node:crypto';
import * as grpc from '@grpc/grpc-js';
import { fromGrpcError } from '../../shared/errors.ts';
import { unary, type FederationClient, type SubmitUpdateResponse, type UpdateHeader, type UpdateMessage } from '../../shared/proto.ts';
import { uploadFile } from '../../shared/transfer/upload.ts';
import { sitePaths } from '../../shared/tls.ts';
import { signUpdate } from '../../shared/update-signature.ts';
import { startUploadRig, type RigSite, type UploadRig } from './upload-fixture.ts';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';

const CHUNK = 64 * 1024;
const GROUP = 3 * CHUNK; // commit_group_bytes: progress is committed every few chunks
let rig: UploadRig;
let spare = 0;
/** A site with its own task in the open round (each accepted update uses one up). */
const nextSite = (): RigSite => rig.sites[spare++];

beforeAll(async () => {
  rig = await startUploadRig({ sites: 13, model: { hidden: 512, layers: 8, r: 8 }, config: { transfer: { max_update_bytes: 4 * 1024 * 1024, commit_group_bytes: GROUP } } });
}, TEST_TIMEOUT_MS);
afterAll(async () => {
  await rig?.close();
  if (rig) rmSync(rig.work, { recursive: true, force: true });
});

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

function fullHeader(u: ReturnType<UploadRig['update']>, over: Partial<UpdateHeader> = {}): UpdateHeader {
  return {
    taskId: '', round: 1, baseVersion: 0, numExamples: 10, payloadKind: 'delta', signature: Buffer.alloc(0), updateNorm: 0, clipped: false, metadataJson: Buffer.alloc(0),
    ...u.header, totalBytes: u.bytes.length, sha256: u.sha256, chunkSize: CHUNK, resumeFromChunk: 0, ...over,
  } as UpdateHeader;
}

function chunkOf(bytes: Uint8Array, index: number, chunkSize = CHUNK) {
  const data = bytes.subarray(index * chunkSize, Math.min(bytes.length, (index + 1) * chunkSize));
  return { index, offset: index * chunkSize, data, sha256: sha(data) };
}

/** A hand-driven SubmitUpdate stream: write messages, then end or cancel. */
function rawStream(client: FederationClient) {
  let resolve!: (r: SubmitUpdateResponse) => void, reject!: (e: grpc.ServiceError) => void;
  const result = new Promise<SubmitUpdateResponse>((a, b) => ((resolve = a), (reject = b)));
  result.catch(() => undefined);
  const call = client.submitUpdate(new grpc.Metadata(), {}, (err, res) => (err ? reject(err) : resolve(res!)));
  call.on('error', () => undefined);
  return { call, result, send: (m: UpdateMessage) => call.write(m) };
}

const status = (s: RigSite, updateId: string) => unary(s.client.getUploadStatus.bind(s.client), { updateId });

async function rejected(p: Promise<unknown>): Promise<{ code: string; message: string; grpc?: number }> {
  const e = await p.then(() => null, (x) => x);
  expect(e, 'expected a rejection').not.toBeNull();
  const fe = e.code && typeof e.code === 'string' ? e : fromGrpcError(e);
  return { code: fe.code, message: fe.message, grpc: typeof e.code === 'number' ? e.code : undefined };
}

/** Poll GetUploadStatus (the acknowledged progress) until `pred` holds; the deadline is the
 *  caller's test timeout. */
async function statusWhen(s: RigSite, updateId: string, pred: (st: Awaited<ReturnType<typeof status>>) => boolean) {
  for (;;) {
    const st = await status(s, updateId);
    if (pred(st)) return st;
    await new Promise((r) => setTimeout(r, 20));
  }
}

describe('SubmitUpdate into the production intake', () => {
  it('uploads a signed update in chunks: accepted, stored under its final name, status complete', async () => {
    const s = nextSite();
    const u = rig.update(s, 'up-1');
    expect(u.bytes.length).toBeGreaterThan(6 * CHUNK);
    const res = await uploadFile(s.client, u.header, u.file, { chunkSize: CHUNK });
    const chunks = Math.ceil(u.bytes.length / CHUNK);
    expect(res).toMatchObject({ updateId: 'up-1', complete: true, sha256: u.sha256, receivedChunks: chunks, receivedBytes: u.bytes.length, resumedFromChunk: 0 });
    const row = rig.coord.store.update('up-1')!;
    expect(row).toMatchObject({ status: 'accepted', site_id: s.id, received_chunks: chunks, received_bytes: u.bytes.length });
    expect(row.path.endsWith('.safetensors')).toBe(true);
    expect(readFileSync(row.path).equals(u.bytes)).toBe(true);
    expect(await status(s, 'up-1')).toEqual({ known: true, receivedChunks: chunks, receivedBytes: u.bytes.length, complete: true });
  });

  it('a cut upload resumes from the committed progress, and sends nothing twice', async () => {
    const s = nextSite();
    const u = rig.update(s, 'up-2');
    const st = rawStream(s.client);
    st.send({ header: fullHeader(u) });
    for (let i = 0; i < 5; i++) st.send({ chunk: chunkOf(u.bytes, i) });
    // a group (more than 3 chunks written) is acknowledged while the stream is still open
    await statusWhen(s, 'up-2', (x) => x.receivedChunks >= 4);
    st.call.cancel();
    await rejected(st.result);
    const sent: number[] = [];
    const res = await uploadFile(s.client, u.header, u.file, { chunkSize: CHUNK, onChunkSent: (i) => void sent.push(i) });
    expect(res.resumedFromChunk).toBeGreaterThanOrEqual(4);
    expect(res).toMatchObject({ complete: true, sha256: u.sha256 });
    expect(sent[0]).toBe(res.resumedFromChunk);
    expect(readFileSync(rig.coord.store.update('up-2')!.path).equals(u.bytes)).toBe(true);
  });

  it('the uploader cut hook + a retry completes with the right sha256', async () => {
    const s = nextSite();
    const u = rig.update(s, 'up-3');
    const e = await rejected(uploadFile(s.client, u.header, u.file, { chunkSize: CHUNK, onChunkSent: (i) => (i === 3 ? 'cut' : undefined) }));
    expect(e.grpc).toBe(grpc.status.CANCELLED);
    const before = await status(s, 'up-3');
    expect(before.complete).toBe(false);
    // (the cut stream's last chunks may still be committing: the retry resumes at or after this)
    const res = await uploadFile(s.client, u.header, u.file, { chunkSize: CHUNK });
    expect(res.resumedFromChunk).toBeGreaterThanOrEqual(before.receivedChunks);
    expect(res.resumedFromChunk).toBeLessThanOrEqual(4);
    expect(res).toMatchObject({ complete: true, sha256: u.sha256 });
    expect(readFileSync(rig.coord.store.update('up-3')!.path).equals(u.bytes)).toBe(true);
  });

  it('a corrupted chunk: FEDLORA_ERR_CHUNK_HASH (DATA_LOSS), the chunks before it kept, nothing of it stored', async () => {
    const s = spareSite();
    const u = rig.update(s, 'bad-chunk');
    const st = rawStream(s.client);
    st.send({ header: fullHeader(u) });
    st.send({ chunk: chunkOf(u.bytes, 0) });
    const c = chunkOf(u.bytes, 1);
    const bad = Buffer.from(c.data);
    bad[100] ^= 0xff;
    st.send({ chunk: { ...c, data: bad } });
    st.call.end();
    const e = await rejected(st.result);
    expect(e.grpc).toBe(grpc.status.DATA_LOSS);
    expect(e).toMatchObject({ code: 'FEDLORA_ERR_CHUNK_HASH', message: expect.stringMatching(/update bad-chunk: chunk 1 sha256 mismatch/) });
    const got = await statusWhen(s, 'bad-chunk', () => true);
    expect(got).toMatchObject({ receivedChunks: 1, receivedBytes: CHUNK, complete: false });
    expect(statSync(rig.coord.store.update('bad-chunk')!.path).size).toBe(CHUNK);
  });

  it('out-of-order chunks, wrong sizes and oversized updates are refused by name', async () => {
    const s = spareSite();
    const u = rig.update(s, 'order');
    const run = async (msgs: UpdateMessage[]) => {
      const st = rawStream(s.client);
      for (const m of msgs) st.send(m);
      st.call.end();
      return rejected(st.result);
    };
    expect(await run([{ header: fullHeader(u) }, { chunk: chunkOf(u.bytes, 1) }])).toMatchObject({ code: 'FEDLORA_ERR_CHUNK_ORDER', message: expect.stringMatching(/update order: chunk 1 at offset 65536, expected chunk 0 at offset 0/) });
    const big = Buffer.alloc(CHUNK + 1, 1);
    expect(await run([{ header: fullHeader(rig.update(s, 'size1')) }, { chunk: { index: 0, offset: 0, data: big, sha256: sha(big) } }])).toMatchObject({ code: 'FEDLORA_ERR_CHUNK_SIZE' });
    expect(await run([{ header: fullHeader(rig.update(s, 'size3'), { totalBytes: 5 * 1024 * 1024 }) }])).toMatchObject({ code: 'FEDLORA_ERR_CHUNK_SIZE', message: expect.stringMatching(/total_bytes/) });
    expect(await run([{ header: fullHeader(rig.update(s, 'size4'), { chunkSize: 8 * 1024 * 1024 }) }])).toMatchObject({ code: 'FEDLORA_ERR_CHUNK_SIZE' });
    expect(await run([{ chunk: chunkOf(u.bytes, 0) }])).toMatchObject({ code: 'FEDLORA_ERR_INVALID_ARGUMENT', message: expect.stringMatching(/first message must be the header/) });
    expect(await run([{ header: fullHeader(rig.update(s, 'twice')) }, { header: fullHeader(rig.update(s, 'twice')) }])).toMatchObject({ code: 'FEDLORA_ERR_INVALID_ARGUMENT', message: expect.stringMatching(/second header/) });
  });

  it('a stream that ends without its trailer answers the committed progress; the rest follows later', async () => {
    const s = spareSite();
    const u = rig.update(s, 'no-trailer');
    const st = rawStream(s.client);
    st.send({ header: fullHeader(u) });
    for (let i = 0; i < 4; i++) st.send({ chunk: chunkOf(u.bytes, i) });
    st.call.end();
    expect(await st.result).toEqual({ updateId: 'no-trailer', receivedBytes: 4 * CHUNK, receivedChunks: 4, complete: false, sha256: '' });
    expect(await status(s, 'no-trailer')).toMatchObject({ receivedChunks: 4 });
  });

  it('a duplicate of a complete update gets the same answer; another payload under its id is a replay', async () => {
    const s = nextSite();
    const u = rig.update(s, 'dup');
    const first = await uploadFile(s.client, u.header, u.file, { chunkSize: CHUNK });
    const again = await uploadFile(s.client, u.header, u.file, { chunkSize: CHUNK });
    const noResume = await uploadFile(s.client, u.header, u.file, { chunkSize: CHUNK, resume: false });
    const strip = (r: SubmitUpdateResponse) => ({ updateId: r.updateId, receivedBytes: r.receivedBytes, receivedChunks: r.receivedChunks, complete: r.complete, sha256: r.sha256 });
    expect(strip(again)).toEqual(strip(first));
    expect(strip(noResume)).toEqual(strip(first));
    expect(rig.coord.store.db.prepare(`SELECT COUNT(*) AS n FROM audit_log WHERE action = 'update_received' AND subject = 'dup'`).get()).toEqual({ n: 1 });
    const other = rig.update(s, 'dup', (f) => { f[0] += 1; });
    expect(await rejected(uploadFile(s.client, other.header, other.file, { chunkSize: CHUNK }))).toMatchObject({ code: 'FEDLORA_ERR_REPLAY' });
  });

  it('a wrong whole-payload sha256 sends the upload back to chunk 0; the sender refuses a file that does not match', async () => {
    const s = spareSite();
    const u = rig.update(s, 'whole');
    // the site's uploader checks the file against the header before it sends the trailer
    const wrong = { ...u.header, sha256: 'a'.repeat(64) };
    expect(await rejected(uploadFile(s.client, wrong, u.file, { chunkSize: CHUNK }))).toMatchObject({ code: 'FEDLORA_ERR_UPDATE_HASH', message: expect.stringMatching(/trailer not sent/) });
    // every chunk right, the header's (signed) sha256 wrong: the coordinator's own check
    const st = rawStream(s.client);
    const fields = { updateId: 'whole-2', jobId: rig.jobId, round: 1, baseVersion: 0, sha256: 'b'.repeat(64), numExamples: 10 };
    st.send({ header: fullHeader(u, { ...fields, signature: signUpdate(readFileSync(sitePaths(s.dir).key), fields) }) });
    const n = Math.ceil(u.bytes.length / CHUNK);
    for (let i = 0; i < n; i++) st.send({ chunk: chunkOf(u.bytes, i) });
    st.send({ trailer: { chunks: n } });
    st.call.end();
    const e = await rejected(st.result);
    expect(e.grpc).toBe(grpc.status.DATA_LOSS);
    expect(e).toMatchObject({ code: 'FEDLORA_ERR_UPDATE_HASH', message: expect.stringMatching(/update whole-2: payload sha256 [0-9a-f]{64} != header b{64}; upload again/) });
    expect(await status(s, 'whole-2')).toMatchObject({ known: true, receivedChunks: 0, complete: false });
  });

  it('content that is not a finite update of the job layout is rejected, and its bytes are dropped', async () => {
    const s = spareSite();
    const u = rig.update(s, 'nan', (f) => { f[5] = Number.NaN; });
    const e = await rejected(uploadFile(s.client, u.header, u.file, { chunkSize: CHUNK }));
    expect(e).toMatchObject({ code: 'FEDLORA_ERR_UPDATE_NONFINITE', message: expect.stringMatching(/update nan: tensor ".*" element 5 is NaN/) });
    const row = rig.coord.store.update('nan')!;
    expect(row.status).toBe('rejected');
    expect(existsSync(row.path)).toBe(false);
    expect(await rejected(status(s, 'nan'))).toMatchObject({ code: 'FEDLORA_ERR_UPDATE_INVALID' });
  });

  it('two streams of one update (a site that reconnected while its first stream is open) cooperate: stored once, right bytes', async () => {
    const s = nextSite();
    const u = rig.update(s, 'twostreams');
    const older = rawStream(s.client);
    older.send({ header: fullHeader(u) });
    for (let i = 0; i < 5; i++) older.send({ chunk: chunkOf(u.bytes, i) });
    await statusWhen(s, 'twostreams', (x) => x.receivedChunks >= 4);
    // the new stream resumes from the acknowledged progress; chunks already written are skipped
    const res = await uploadFile(s.client, u.header, u.file, { chunkSize: CHUNK });
    expect(res).toMatchObject({ complete: true, sha256: u.sha256 });
    // the old stream wakes up with a chunk that is already in: skipped, not an error
    older.send({ chunk: chunkOf(u.bytes, 5) });
    older.call.end();
    const n = Math.ceil(u.bytes.length / CHUNK);
    expect(await older.result).toEqual({ updateId: 'twostreams', receivedBytes: u.bytes.length, receivedChunks: n, complete: false, sha256: '' });
    expect(readFileSync(rig.coord.store.update('twostreams')!.path).equals(u.bytes)).toBe(true);
    expect(rig.coord.store.db.prepare(`SELECT COUNT(*) AS n FROM audit_log WHERE action = 'update_received' AND subject = 'twostreams'`).get()).toEqual({ n: 1 });
  });

  it('three streams sending the same update at once: each is told it is complete, it is stored once', async () => {
    const s = nextSite();
    const u = rig.update(s, 'threestreams');
    const res = await Promise.all([1, 2, 3].map(() => uploadFile(s.client, u.header, u.file, { chunkSize: CHUNK, resume: false })));
    for (const r of res) expect(r).toMatchObject({ complete: true, sha256: u.sha256 });
    expect(readFileSync(rig.coord.store.update('threestreams')!.path).equals(u.bytes)).toBe(true);
  });
});

describe('SubmitUpdate across a coordinator restart', () => {
  it('progress survives, unrecorded bytes are cut, chunks already stored are skipped when resent', async () => {
    const s = nextSite();
    const u = rig.update(s, 'restart');
    const st = rawStream(s.client);
    st.send({ header: fullHeader(u) });
    for (let i = 0; i < 4; i++) st.send({ chunk: chunkOf(u.bytes, i) });
    st.call.end();
    expect(await st.result).toMatchObject({ receivedChunks: 4, complete: false });
    await rig.restart();
    expect(await status(s, 'restart')).toEqual({ known: true, receivedChunks: 4, receivedBytes: 4 * CHUNK, complete: false });
    // a crash between a write and its commit leaves bytes no record covers: they are cut
    const part = rig.coord.store.update('restart')!.path;
    appendFileSync(part, Buffer.alloc(12345, 7));
    // the site resumes one chunk early (it never saw chunk 3 acknowledged)
    const again = rawStream(s.client);
    again.send({ header: fullHeader(u, { resumeFromChunk: 3 }) });
    const n = Math.ceil(u.bytes.length / CHUNK);
    for (let i = 3; i < n; i++) again.send({ chunk: chunkOf(u.bytes, i) });
    again.send({ trailer: { chunks: n } });
    again.call.end();
    expect(await again.result).toMatchObject({ complete: true, sha256: u.sha256, receivedChunks: n });
    expect(readFileSync(rig.coord.store.update('restart')!.path).equals(u.bytes)).toBe(true);
  });
});

/** A site whose task is not used up by an accepted update (the round stays open). */
function spareSite(): RigSite {
  return rig.sites[rig.sites.length - 1];
}
