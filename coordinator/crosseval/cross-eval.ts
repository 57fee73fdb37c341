// Cross-site evaluation, coordinator side. A pending cross_eval_requests row (POST
// /api/jobs/:id/cross-eval) is taken once the job's last round is published:
//   1. UPLOAD_LOCAL goes to every participating site that is connected now; a consenting site
//      uploads its local-only adapter (SubmitUpdate with payload_kind "local_adapter", signed
//      like an update), stored as an owner-site adapter version (publishVersion ownerSite=...),
//      a declining site's refusal is audited (task_declined) and nothing of it is stored.
//   2. When every upload task is answered (or the wait times out), CROSS_EVAL goes to every
//      participating connected site, listing the consenting owners' adapters; sites report
//      kind `cross` metrics with model_owner set, which GET /api/jobs/:id/cross-eval renders.
// Tasks are ephemeral (like the EVALUATE tasks sent when a job completes): they are not rows
// in the tasks table, so a site offline at dispatch misses them and its row/column is absent.
import { createHash } from 'node:crypto';
import { fail } from '../../shared/errors.ts';
import type { Task, UpdateHeader, Chunk } from '../../shared/proto.ts';
import { decodeSafetensorsF32 } from '../../shared/safetensors.ts';
import { flatten, layoutOf } from '../../shared/tensors.ts';
import { verifyUpdateSignature } from '../../shared/update-signature.ts';
import { readManifestSigner } from '../../certs/ca.ts';
import { pkiDirOf } from '../enrollment.ts';
import { parseJobSpec } from '../jobs/spec.ts';
import { pendingCrossEvalRequests, setCrossEvalStatus, type CrossEvalRequestRow } from '../metrics/cross-eval-requests.ts';
import { publishVersion, type Signer } from '../publish/publisher.ts';
import type { RoundEngine } from '../rounds/engine.ts';
import type { TaskRow } from '../store/store.ts';

export const LOCAL_ADAPTER_PAYLOAD = 'local_adapter';
const UPLOAD_PREFIX = 'xupload-';

/** What the dispatcher needs from the TaskHub: who is connected, and a way to write a task. */
export interface TaskSink {
  connected(siteId: string): number;
  send(siteId: string, task: Task): number;
}

interface UploadTask { taskId: string; siteId: string; jobId: string; version: number; requestId: number; state: 'sent' | 'uploaded' | 'declined' }
interface Running { req: CrossEvalRequestRow; jobId: string; version: number; sites: string[]; uploads: Map<string, UploadTask>; deadline: number; base: Task }

export interface CrossEvalOptions { uploadTimeoutMs?: number; maxBytes?: number }

export class CrossEvalDispatcher {
  private readonly uploads = new Map<string, UploadTask>();
  private readonly running = new Map<number, Running>();
  private signerCache?: Signer;
  private busy = false;

  constructor(private readonly engine: RoundEngine, private readonly sink: TaskSink, private readonly o: CrossEvalOptions = {}) {}

  private signer(): Signer {
    return (this.signerCache ??= readManifestSigner(pkiDirOf(this.engine.dataDir)));
  }

  /** One pass: start pending requests whose job is ready, move running ones on. Idempotent. */
  tick(): void {
    if (this.busy) return;
    this.busy = true;
    try {
      for (const r of pendingCrossEvalRequests(this.engine.store.db)) if (!this.running.has(r.id)) this.start(r);
      for (const run of [...this.running.values()]) this.advance(run);
    } finally {
      this.busy = false;
    }
  }

  private start(req: CrossEvalRequestRow): void {
    const store = this.engine.store;
    const now = this.engine.now();
    const job = store.job(req.job_id);
    if (!job) return setCrossEvalStatus(store.db, req.id, 'failed', now, `job ${req.job_id} does not exist`);
    const last = store.adapterVersions(req.job_id).filter((v) => !v.owner_site).at(-1);
    const rounds = store.rounds(req.job_id);
    // The last round must be published: no round still open or aggregating.
    if (!last || last.version === 0 || rounds.some((r) => r.state === 'open' || r.state === 'aggregating')) return;
    const lastTaskBySite = new Map<string, TaskRow>();
    for (const r of rounds) for (const t of store.roundTasks(req.job_id, r.round, r.attempt)) lastTaskBySite.set(t.site_id, t);
    const wanted = req.sites_json ? new Set(JSON.parse(req.sites_json) as string[]) : undefined;
    const sites = [...lastTaskBySite.keys()].filter((s) => (!wanted || wanted.has(s)) && this.sink.connected(s) > 0).sort();
    if (sites.length === 0) return setCrossEvalStatus(store.db, req.id, 'failed', now, 'no participating site is connected');
    const base = this.engine.taskMessage(lastTaskBySite.get(sites[0])!);
    const run: Running = { req, jobId: req.job_id, version: last.version, sites, uploads: new Map(), deadline: now + (this.o.uploadTimeoutMs ?? 10 * 60_000), base };
    this.running.set(req.id, run);
    setCrossEvalStatus(store.db, req.id, 'dispatched', now, `UPLOAD_LOCAL sent to ${sites.join(', ')}`);
    for (const siteId of sites) {
      const u: UploadTask = { taskId: `${UPLOAD_PREFIX}${req.id}-${siteId}`, siteId, jobId: req.job_id, version: last.version, requestId: req.id, state: 'sent' };
      this.uploads.set(u.taskId, u);
      run.uploads.set(siteId, u);
      this.sink.send(siteId, { ...base, taskId: u.taskId, kind: 'TASK_KIND_UPLOAD_LOCAL', round: last.version, globalAdapter: null, peerAdapters: [], peerSites: [], payloadKind: LOCAL_ADAPTER_PAYLOAD });
    }
  }

  private advance(run: Running): void {
    const answered = [...run.uploads.values()].every((u) => u.state !== 'sent');
    if (!answered && this.engine.now() < run.deadline) return;
    this.running.delete(run.req.id);
    for (const u of run.uploads.values()) this.uploads.delete(u.taskId);
    const store = this.engine.store;
    const owners = [...run.uploads.values()].filter((u) => u.state === 'uploaded').map((u) => u.siteId);
    if (owners.length === 0) {
      return setCrossEvalStatus(store.db, run.req.id, 'failed', this.engine.now(), 'no participating site consented to share its local-only adapter (policy.allow_cross_eval)');
    }
    const peers = owners.map((o) => store.adapterVersion(run.jobId, run.version, o)!).map((v) => ({ jobId: v.job_id, version: v.version, sha256: v.sha256, sizeBytes: v.size, manifestSha256: v.manifest_sha256 }));
    for (const siteId of run.sites) {
      this.sink.send(siteId, { ...run.base, taskId: `xeval-${run.req.id}-${siteId}`, kind: 'TASK_KIND_CROSS_EVAL', round: run.version, globalAdapter: null, peerAdapters: peers, peerSites: owners });
    }
    setCrossEvalStatus(store.db, run.req.id, 'done', this.engine.now(), `owners ${owners.join(', ')}; CROSS_EVAL sent to ${run.sites.join(', ')}`);
  }

  /** DeclineTask for an UPLOAD_LOCAL task (not a tasks-table row). False if not ours. */
  decline(siteId: string, taskId: string, reason: string, code: string): boolean {
    if (!taskId.startsWith(UPLOAD_PREFIX)) return false;
    const u = this.uploads.get(taskId);
    if (!u || u.siteId !== siteId) throw fail('FEDLORA_ERR_NOT_FOUND', `DeclineRequest.task_id: no open cross-eval upload task ${taskId} for site ${siteId}`);
    u.state = 'declined';
    this.engine.store.audit.append(siteId, 'task_declined', taskId, { code: code.slice(0, 100), reason: reason.slice(0, 1000), kind: 'TASK_KIND_UPLOAD_LOCAL' }, new Date(this.engine.now()));
    this.tick();
    return true;
  }

  /** Start receiving a local-only adapter upload (header with payload_kind local_adapter). */
  beginUpload(siteId: string, h: UpdateHeader, callerCertPem: string | undefined): LocalAdapterUpload {
    const u = this.uploads.get(h.taskId);
    if (!u || u.siteId !== siteId || u.state !== 'sent') throw fail('FEDLORA_ERR_NOT_SELECTED', `UpdateHeader.task_id: site ${siteId} has no open UPLOAD_LOCAL task ${h.taskId}`);
    if (h.jobId !== u.jobId || h.round !== u.version || h.baseVersion !== u.version) throw fail('FEDLORA_ERR_UPDATE_INVALID', `UpdateHeader: task ${h.taskId} is job ${u.jobId} version ${u.version}, header says job ${h.jobId} round ${h.round} base ${h.baseVersion}`);
    const max = this.o.maxBytes ?? 512 * 1024 * 1024;
    if (!(h.totalBytes > 0) || h.totalBytes > max) throw fail('FEDLORA_ERR_CHUNK_SIZE', `UpdateHeader.total_bytes: ${h.totalBytes} (limit ${max})`);
    const sig = Buffer.from(h.signature ?? []);
    const f = { updateId: h.updateId, jobId: h.jobId, round: h.round, baseVersion: h.baseVersion, sha256: h.sha256, numExamples: h.numExamples };
    if (!callerCertPem || sig.length === 0 || !verifyUpdateSignature(callerCertPem, f, sig)) {
      throw fail('FEDLORA_ERR_SIGNATURE', `local adapter upload ${h.updateId}: UpdateHeader.signature does not verify with the caller's certificate`);
    }
    return new LocalAdapterUpload(this, u, h);
  }

  /** Store a verified local-only adapter as owner-site version (signed manifest). */
  storeLocalAdapter(u: UploadTask, bytes: Buffer, numExamples: number): void {
    const job = this.engine.store.job(u.jobId);
    if (!job) throw fail('FEDLORA_ERR_NOT_FOUND', `job ${u.jobId} does not exist`);
    const spec = parseJobSpec(JSON.parse(job.spec_json), `job ${u.jobId}`);
    const { tensors } = decodeSafetensorsF32(bytes, `local adapter of ${u.siteId}`);
    const layout = layoutOf(tensors);
    publishVersion(this.engine.store, this.engine.dataDir, this.signer(), {
      jobId: u.jobId, spec, version: u.version, round: u.version, flat: flatten(tensors, layout), layout, contributingSites: 1, numExamples, createdMs: this.engine.now(), ownerSite: u.siteId,
    });
    this.engine.store.audit.append(u.siteId, 'cross_eval_adapter_stored', u.taskId, { job: u.jobId, version: u.version, sha256: createHash('sha256').update(bytes).digest('hex') }, new Date(this.engine.now()));
    u.state = 'uploaded';
    this.tick();
  }
}

/** One upload in memory (local adapters are small; nothing touches disk before the hash and
 *  signature verify, and the stored copy is the re-encoded, signed owner-site version). */
export class LocalAdapterUpload {
  private readonly parts: Buffer[] = [];
  private received = 0;
  private chunks = 0;
  constructor(private readonly d: CrossEvalDispatcher, private readonly u: UploadTask, readonly header: UpdateHeader) {}

  chunk(c: Pick<Chunk, 'index' | 'offset' | 'data' | 'sha256'>): void {
    const data = Buffer.from(c.data);
    if (c.index !== this.chunks || c.offset !== this.received) throw fail('FEDLORA_ERR_CHUNK_ORDER', `local adapter upload ${this.header.updateId}: chunk ${c.index} at ${c.offset}, expected ${this.chunks} at ${this.received}`);
    if (this.received + data.length > this.header.totalBytes) throw fail('FEDLORA_ERR_CHUNK_SIZE', `local adapter upload ${this.header.updateId}: more than ${this.header.totalBytes} bytes`);
    if (createHash('sha256').update(data).digest('hex') !== c.sha256) throw fail('FEDLORA_ERR_CHUNK_HASH', `local adapter upload ${this.header.updateId}: chunk ${c.index} sha256 mismatch`);
    this.parts.push(data);
    this.received += data.length;
    this.chunks++;
  }

  finish(trailerChunks: number): { updateId: string; receivedBytes: number; receivedChunks: number; complete: boolean; sha256: string } {
    const h = this.header;
    if (trailerChunks !== this.chunks) throw fail('FEDLORA_ERR_CHUNK_ORDER', `local adapter upload ${h.updateId}: trailer says ${trailerChunks} chunks, ${this.chunks} received`);
    const bytes = Buffer.concat(this.parts);
    const sha = createHash('sha256').update(bytes).digest('hex');
    if (bytes.length !== h.totalBytes || sha !== h.sha256) throw fail('FEDLORA_ERR_UPDATE_HASH', `local adapter upload ${h.updateId}: ${bytes.length} bytes with sha256 ${sha}, header says ${h.totalBytes} bytes ${h.sha256}`);
    this.d.storeLocalAdapter(this.u, bytes, h.numExamples);
    return { updateId: h.updateId, receivedBytes: bytes.length, receivedChunks: this.chunks, complete: true, sha256: sha };
  }
}

