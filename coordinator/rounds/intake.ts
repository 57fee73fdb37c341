// Receiving a site's update, independent of the transport: admit the header (is this site
// selected for this open round, right base version, fresh update id?), append verified
// chunks to <dataDir>/updates/<job>/r<round>a<attempt>/<update_id>.part through an
// UploadSpool (group commit: progress recorded in SQLite only after an fsync covers it, so
// GetUploadStatus can resume it), then verify the whole hash, the site's signature and the
// content, and commit accepted/rejected BEFORE answering.
import { mkdirSync, renameSync, rmSync, truncateSync } from 'node:fs';
import { open } from 'node:fs/promises';
import { createHash } from 'node:crypto';
import { dirname, join } from 'node:path';
import { fail, isFedloraError } from '../../shared/errors.ts';
import type { UpdateHeader } from '../../shared/proto.ts';
import type { UpdateRow } from '../store/store.ts';
import type { AdapterLayout } from '../../shared/tensors.ts';
import type { RoundEngine } from './index.ts';
import type { JobInfo } from '../jobs/job-service.ts';
import { UpdateContentCheck, type UpdateShapes } from './validate-update.ts';
import { roundPlanOf } from './round-plan.ts';
import { MAX_CHUNK_BYTES, UPDATE_ID_RE } from '../../shared/transfer/chunks.ts';
import { GROUP_COMMIT_BYTES, notReceiving, UploadSpool, type ChunkIn, type SeenUpload } from './upload-spool.ts';
import { sha256Hex } from '../../shared/hash.ts';

export type HeaderIn = Pick<UpdateHeader, 'updateId' | 'taskId' | 'jobId' | 'round' | 'baseVersion' | 'totalBytes' | 'sha256' | 'chunkSize' | 'numExamples'>
  & Partial<Pick<UpdateHeader, 'payloadKind' | 'signature' | 'updateNorm' | 'clipped' | 'metadataJson'>>;

export interface Admitted {
  row: UpdateRow;
  /** Already persisted whole and accepted: answer complete without reading chunks. */
  complete: boolean;
}

/** Admission-time signature check (the transport knows the caller's certificate): throws
 *  FEDLORA_ERR_SIGNATURE. Called only for a NEW update id, after the replay checks. */
export type HeaderVerifier = (h: HeaderIn) => void;

export function admitUpdate(engine: RoundEngine, siteId: string, h: HeaderIn, maxBytes: number, verify?: HeaderVerifier): Admitted {
  const store = engine.store;
  if (!UPDATE_ID_RE.test(h.updateId)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `UpdateHeader.update_id ${JSON.stringify(h.updateId)} must match ${UPDATE_ID_RE}`);
  const prior = store.update(h.updateId);
  if (prior) {
    if (prior.site_id !== siteId || prior.job_id !== h.jobId || prior.round !== h.round || prior.task_id !== h.taskId || prior.sha256 !== h.sha256) {
      throw fail('FEDLORA_ERR_REPLAY', `update ${h.updateId} was already used (site ${prior.site_id}, job ${prior.job_id}, round ${prior.round}); choose a fresh update_id`);
    }
    if (prior.status === 'accepted') return { row: prior, complete: true };
    if (prior.status === 'rejected') throw fail('FEDLORA_ERR_UPDATE_INVALID', `update ${h.updateId} was rejected: ${prior.reason ?? ''}`);
    if (prior.status === 'discarded') throw fail('FEDLORA_ERR_ROUND_CLOSED', `update ${h.updateId} was discarded: ${prior.reason ?? 'round closed'}`);
  }
  const task = store.task(h.taskId);
  if (!task || task.site_id !== siteId) throw fail('FEDLORA_ERR_NOT_SELECTED', `UpdateHeader.task_id: site ${siteId} has no task ${h.taskId}`);
  if (task.job_id !== h.jobId || task.round !== h.round) {
    throw fail('FEDLORA_ERR_UPDATE_INVALID', `UpdateHeader: task ${h.taskId} is job ${task.job_id} round ${task.round}, header says job ${h.jobId} round ${h.round}`);
  }
  const round = store.rounds(task.job_id).find((r) => r.round === task.round && r.attempt === task.attempt)!;
  if (round.state !== 'open' || (task.status !== 'pending' && task.status !== 'delivered')) {
    throw fail('FEDLORA_ERR_ROUND_CLOSED', `job ${h.jobId} round ${h.round}: round is ${round.state}, task ${h.taskId} is ${task.status}`);
  }
  if (h.baseVersion !== round.base_version) {
    throw fail('FEDLORA_ERR_UPDATE_INVALID', `UpdateHeader.base_version: ${h.baseVersion}, but round ${h.round} trains from version ${round.base_version}`);
  }
  if (!(h.totalBytes > 0) || h.totalBytes > maxBytes) throw fail('FEDLORA_ERR_CHUNK_SIZE', `UpdateHeader.total_bytes: ${h.totalBytes} (limit ${maxBytes})`);
  if (!(h.chunkSize > 0) || h.chunkSize > MAX_CHUNK_BYTES) throw fail('FEDLORA_ERR_CHUNK_SIZE', `UpdateHeader.chunk_size: ${h.chunkSize} (1..${MAX_CHUNK_BYTES})`);
  if (!/^[0-9a-f]{64}$/.test(h.sha256)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', 'UpdateHeader.sha256: expected 64 lowercase hex characters');
  if (!(h.numExamples > 0)) throw fail('FEDLORA_ERR_UPDATE_INVALID', `UpdateHeader.num_examples: ${h.numExamples}, must be > 0`);
  if (prior) return { row: prior, complete: false }; // resume a 'receiving' upload
  // A captured update presented again under another update id (or for another round) still
  // carries the signature it was captured with: a signature is good for one update only.
  if (h.signature && h.signature.length > 0) {
    const twin = store.updateBySignature(h.signature, h.updateId);
    if (twin) throw fail('FEDLORA_ERR_REPLAY', `UpdateHeader.signature: this signature was already used by update ${twin.update_id} (site ${twin.site_id}, job ${twin.job_id}, round ${twin.round}); a replayed update is refused`);
  }
  const row: UpdateRow = {
    update_id: h.updateId, job_id: h.jobId, round: h.round, attempt: task.attempt, site_id: siteId, task_id: h.taskId, base_version: h.baseVersion,
    path: join(engine.dataDir, 'updates', h.jobId, `r${h.round}a${task.attempt}`, `${h.updateId}.part`), sha256: h.sha256, size: h.totalBytes,
    chunk_size: h.chunkSize, received_chunks: 0, received_bytes: 0, examples: h.numExamples, norm: Number.isFinite(h.updateNorm) ? h.updateNorm ?? null : null,
    clipped: h.clipped === undefined ? null : h.clipped ? 1 : 0, status: 'receiving', reason: null,
    signature: h.signature ? Buffer.from(h.signature) : null, metadata_json: h.metadataJson?.length ? Buffer.from(h.metadataJson).toString('utf8').slice(0, 65536) : null,
    received_ms: engine.now(),
  };
  try {
    verify?.(h);
  } catch (e) {
    // Recorded like any rejection (no byte of it is stored): the same update id stays refused.
    store.tx(() => store.insertUpdate({ ...row, status: 'rejected' }));
    store.setUpdateStatus(row.update_id, 'rejected', isFedloraError(e) ? e.toString() : String(e));
    throw e;
  }
  mkdirSync(dirname(row.path), { recursive: true });
  store.tx(() => {
    store.insertUpdate(row);
    store.setTaskStatus(task.task_id, 'delivered');
  });
  return { row, complete: false };
}

/** What a job's updates may look like: its update layout, or at a site's rank down to min_site_r. */
export function updateShapesOf(info: Pick<JobInfo, 'spec' | 'layout'>): UpdateShapes {
  return { layout: info.layout.update, jobRank: info.spec.lora.r, minSiteRank: info.spec.lora.min_site_r ?? info.spec.lora.r };
}

/** The writer of an admitted update's chunks, for one stream (group commit every
 *  `groupBytes`); shared with other streams of the same update. release() it when done. */
export function openUpload(engine: RoundEngine, updateId: string, o: { groupBytes?: number } = {}): UploadSpool {
  const row = engine.store.update(updateId);
  if (!row) throw fail('FEDLORA_ERR_NOT_FOUND', `update ${updateId} was never admitted (send its UpdateHeader first)`);
  return UploadSpool.acquire(engine.store, row, engine.dataDir, updateShapesOf(engine.jobInfo(row.job_id)), { groupBytes: o.groupBytes ?? GROUP_COMMIT_BYTES });
}

/** Run `fn`, then release the spool (committing what was written). A failed release is the
 *  caller's error when `fn` succeeded; after a failure of `fn`, that first error is the one thrown. */
async function withSpool<T>(spool: UploadSpool, fn: () => Promise<T>): Promise<T> {
  let value: T;
  try {
    value = await fn();
  } catch (e) {
    await spool.release().catch(() => undefined); // the error being thrown already says what failed
    throw e;
  }
  await spool.release();
  return value;
}

/** Append chunk `c` (must be the next one) and commit it: durable before it is recorded. */
export async function appendChunk(engine: RoundEngine, updateId: string, c: ChunkIn): Promise<UpdateRow> {
  const spool = openUpload(engine, updateId, { groupBytes: 0 });
  return withSpool(spool, async () => {
    await spool.append(c);
    const row = await spool.commit();
    if (row.status !== 'receiving') throw notReceiving(row);
    return row;
  });
}

/** Read a stored upload back (a stream that did not carry it from byte 0): hash + content. */
async function readBack(row: UpdateRow, layout: AdapterLayout | UpdateShapes, name: string): Promise<SeenUpload> {
  const h = createHash('sha256');
  const content = new UpdateContentCheck(layout, row.size, name);
  const fh = await open(row.path, 'r');
  try {
    const buf = Buffer.allocUnsafe(4 * 1024 * 1024);
    for (let pos = 0; pos < row.size; ) {
      const { bytesRead } = await fh.read(buf, 0, Math.min(buf.length, row.size - pos), pos);
      if (bytesRead === 0) break;
      const part = buf.subarray(0, bytesRead);
      h.update(part);
      content.feed(part);
      pos += bytesRead;
    }
  } finally {
    await fh.close();
  }
  return { sha256: h.digest('hex'), content };
}

// Finishes of one update run one after another: a site that retries an upload while its first
// stream is still being verified sends the same trailer twice, and the second finish must see
// the first one's verdict (not a spool file the first one just renamed or removed).
const finishing = new Map<string, Promise<void>>();

/** All bytes are in: check the hash, the signature, the content; commit accepted or rejected.
 *  Throws the rejection (after committing it) so the transport can report it. */
export function finishUpdate(engine: RoundEngine, updateId: string, verifySignature?: (row: UpdateRow) => boolean, seen?: SeenUpload): Promise<UpdateRow> {
  const key = `${engine.dataDir}\0${updateId}`;
  const run = (finishing.get(key) ?? Promise.resolve()).then(() => finishOnce(engine, updateId, verifySignature, seen));
  const tail = run.then(() => undefined, () => undefined);
  finishing.set(key, tail);
  void tail.then(() => {
    if (finishing.get(key) === tail) finishing.delete(key);
  });
  return run;
}

async function finishOnce(engine: RoundEngine, updateId: string, verifySignature?: (row: UpdateRow) => boolean, seen?: SeenUpload): Promise<UpdateRow> {
  const store = engine.store;
  const found = store.update(updateId);
  if (!found) throw fail('FEDLORA_ERR_NOT_FOUND', `update ${updateId} was never admitted (send its UpdateHeader first)`);
  let row = found;
  if (row.status === 'accepted') return row;
  if (row.status === 'rejected') throw fail('FEDLORA_ERR_UPDATE_INVALID', `update ${updateId} was rejected: ${row.reason ?? ''}`);
  if (row.status === 'discarded') throw fail('FEDLORA_ERR_ROUND_CLOSED', `update ${updateId} was discarded: ${row.reason ?? 'round closed'}`);
  if (row.received_bytes !== row.size) throw fail('FEDLORA_ERR_CHUNK_SIZE', `update ${updateId}: ${row.received_bytes} of ${row.size} bytes received`);
  const reject = (e: unknown): never => {
    const msg = isFedloraError(e) ? e.toString() : String((e as Error)?.message ?? e);
    store.tx(() => {
      store.setUpdateStatus(updateId, 'rejected', msg);
      store.audit.append(row.site_id, 'update_rejected', updateId, {
        code: isFedloraError(e) ? e.code : 'FEDLORA_ERR_INTERNAL', reason: msg.slice(0, 2000), job: row.job_id, round: row.round, attempt: row.attempt, sha256: row.sha256, size: row.size,
      }, new Date(engine.now()));
    });
    // A rejected update can never be resumed or aggregated: drop its bytes (the audit entry keeps
    // its sha256 and size), so a site sending garbage under fresh update ids cannot fill the disk.
    rmSync(row.path, { force: true });
    throw e;
  };
  const shapes = updateShapesOf(engine.jobInfo(row.job_id));
  // Errors name the update (the site's own id), not the coordinator's spool path.
  const hashed = seen ? { v: seen } : await readBack(row, shapes, `update ${updateId}`).then((v) => ({ v }), (e: unknown) => ({ e }));
  // While the bytes were hashed the round may have closed (engine checkCollection discards a
  // 'receiving' row and deletes its .part): check that first; from here on all is synchronous.
  const cur0 = store.update(updateId);
  if (cur0?.status === 'discarded') throw fail('FEDLORA_ERR_ROUND_CLOSED', `update ${updateId} was discarded: ${cur0.reason ?? 'round closed'}`);
  if ('e' in hashed) throw hashed.e;
  const sha = hashed.v.sha256;
  if (sha !== row.sha256) {
    // Not the site's fault necessarily (corruption in transit): start this upload again.
    store.tx(() => { store.setUpdateProgress(updateId, 0, 0); });
    truncateSync(row.path, 0);
    throw fail('FEDLORA_ERR_UPDATE_HASH', `update ${updateId}: payload sha256 ${sha} != header ${row.sha256}; upload again`);
  }
  if (verifySignature && !verifySignature(row)) reject(fail('FEDLORA_ERR_SIGNATURE', `update ${updateId}: site ${row.site_id}'s signature does not verify`));
  let measured = NaN;
  let loraR: number | null = null;
  try {
    ({ norm: measured, loraR } = hashed.v.content.result());
  } catch (e) {
    reject(e);
  }
  const final = row.path.replace(/\.part$/, '.safetensors');
  renameSync(row.path, final);
  // Accept only while the round is still open; the commit is what the ack stands for.
  store.tx(() => {
    const task = store.task(row.task_id)!;
    const round = store.rounds(row.job_id).find((r) => r.round === row.round && r.attempt === row.attempt)!;
    const cur = store.update(updateId)!;
    if (cur.status === 'discarded') {
      // e.g. the site was revoked while it uploaded (coordinator/enrollment.ts revokeSite)
      store.setUpdateStatus(updateId, 'discarded', null, final);
      throw fail('FEDLORA_ERR_ROUND_CLOSED', `update ${updateId} was discarded: ${cur.reason ?? ''}`);
    }
    if (round.state !== 'open' || (task.status !== 'pending' && task.status !== 'delivered')) {
      store.setUpdateStatus(updateId, 'discarded', `round ${row.round} closed before the upload finished`, final);
      store.audit.append(row.site_id, 'update_rejected', updateId, { code: 'FEDLORA_ERR_ROUND_CLOSED', reason: `round ${row.round} closed before the upload finished`, job: row.job_id, round: row.round, attempt: row.attempt, sha256: row.sha256, size: row.size }, new Date(engine.now()));
      throw fail('FEDLORA_ERR_ROUND_CLOSED', `update ${updateId}: round ${row.round} closed before the upload finished`);
    }
    store.setUpdateStatus(updateId, 'accepted', null, final);
    if (loraR !== null) store.setUpdateLoraRank(updateId, loraR);
    store.setTaskStatus(row.task_id, 'submitted');
    // What reached the round: the site's own report (norm before/after its clipping) next to
    // the norm the coordinator measured, and for DP rounds the clip norm C the round told sites
    // and the norm after clipping to C (what the DP strategy will use: min(norm, C)).
    const plan = roundPlanOf(round);
    const clip = plan.config.dpClipNorm ?? NaN;
    store.audit.append(row.site_id, 'update_received', updateId, {
      job: row.job_id, round: row.round, attempt: row.attempt, task: row.task_id, sha256: row.sha256, size: row.size, examples: row.examples,
      signature_sha256: row.signature ? createHash('sha256').update(row.signature).digest('hex') : null, payload_kind: plan.payloadKind,
      ...(loraR !== null ? { lora_r: loraR } : {}), site_norm: row.norm, site_clipped: row.clipped === null ? null : row.clipped === 1, coordinator_norm: measured,
      ...(clip > 0 ? { dp_clip_norm: clip, norm_after_clip: Math.min(measured, clip), clipped_by_coordinator: measured > clip } : {}),
    }, new Date(engine.now()));
  });
  row = store.update(updateId)!;
  engine.emit('update', row.job_id, row.round, row.site_id);
  void engine.tick().catch((e) => engine.emit('error', e));
  return row;
}

/** Whole-buffer convenience (tests, in-process sites): admit, one chunk at a time, finish. */
export async function submitUpdateBytes(engine: RoundEngine, siteId: string, h: Omit<HeaderIn, 'totalBytes' | 'sha256' | 'chunkSize'>, bytes: Uint8Array, o: { maxBytes?: number; chunkSize?: number } = {}): Promise<UpdateRow> {
  const chunkSize = o.chunkSize ?? 1024 * 1024;
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const { row, complete } = admitUpdate(engine, siteId, { ...h, totalBytes: bytes.length, sha256, chunkSize }, o.maxBytes ?? 1 << 30);
  if (complete) return row;
  const spool = openUpload(engine, h.updateId);
  const seen = await withSpool(spool, async () => {
    for (let off = row.received_bytes, i = row.received_chunks; off < bytes.length; off += chunkSize, i++) {
      const data = bytes.subarray(off, Math.min(off + chunkSize, bytes.length));
      await spool.append({ index: i, offset: off, data, sha256: sha256Hex(data) });
    }
    await spool.commit();
    return spool.seen();
  });
  return finishUpdate(engine, h.updateId, undefined, seen);
}
