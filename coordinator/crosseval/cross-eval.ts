// Cross-site evaluation, coordinator side. A pending cross_eval_requests row (POST
// /api/jobs/:id/cross-eval) is taken once the job's last round is published:
//   1. UPLOAD_LOCAL goes to every participating site that is connected at dispatch (in the first
//      heartbeat timeout after the coordinator starts, dispatch waits for all of them); a
//      consenting site uploads its local-only adapter (SubmitUpdate with payload_kind
//      "local_adapter", signed like an update), stored as an owner-site adapter version
//      (publishVersion ownerSite=...); a declining site's refusal is audited (task_declined) and
//      nothing of it is stored.
//   2. When every upload task is answered (or the wait, side_tasks.cross_eval_upload_timeout_ms
//      from the persisted dispatch time, is over), CROSS_EVAL goes to every participating site,
//      listing the consenting owners' adapters; sites report kind `cross` metrics with
//      model_owner set, which GET /api/jobs/:id/cross-eval renders.
// Nothing lives only in memory: the tasks are side tasks (coordinator/store/side-tasks.ts, with
// request_id), their states are the uploads' answers, and the request row keeps its phase
// (status dispatched = waiting for uploads, done = CROSS_EVAL made) and dispatched_ms. A
// restarted coordinator's tick() picks a 'dispatched' request up where it was; the TaskHub
// delivers open side tasks whenever a site (re)connects, so a site offline when CROSS_EVAL is
// made evaluates when it comes back.
import { createHash } from 'node:crypto';
import { fail } from '../../shared/errors.ts';
import type { Task, UpdateHeader, Chunk } from '../../shared/proto.ts';
import { decodeSafetensorsF32 } from '../../shared/safetensors.ts';
import { flatten, layoutOf, type AdapterLayout } from '../../shared/tensors.ts';
import { alphaAtRank, rankOfLayout } from '../../shared/lora/rank.ts';
import { verifyUpdateSignature } from '../../shared/update-signature.ts';
import { readManifestSigner } from '../../certs/ca.ts';
import { pkiDirOf } from '../enrollment.ts';
import { parseJobSpec, type JobSpec } from '../jobs/spec.ts';
import { crossEvalRequestsIn, markCrossEvalDispatched, setCrossEvalStatus, type CrossEvalRequestRow } from '../metrics/cross-eval-requests.ts';
import { publishVersion, type Signer } from '../publish/publisher.ts';
import type { RoundEngine } from '../rounds/index.ts';
import type { TaskRow } from '../store/store.ts';
import { insertSideTasks, isOpen, requestSideTasks, setSideTaskStatus, sideTask, sideTaskMessage } from '../store/side-tasks.ts';

export const LOCAL_ADAPTER_PAYLOAD = 'local_adapter';
const UPLOAD_PREFIX = 'xupload-';
export const UPLOAD_TIMEOUT_MS = 10 * 60_000;

/** What the dispatcher needs from the TaskHub: who is connected, and "send this site its open tasks". */
export interface TaskSink {
  connected(siteId: string): number;
  push(siteId: string): void;
}

interface UploadTask { taskId: string; siteId: string; jobId: string; version: number }

export interface CrossEvalOptions { uploadTimeoutMs?: number; maxBytes?: number }

export class CrossEvalDispatcher {
  private signerCache?: Signer;
  private busy = false;
  private readonly startedMs: number;

  constructor(private readonly engine: RoundEngine, private readonly sink: TaskSink, private readonly o: CrossEvalOptions = {}) {
    this.startedMs = engine.now();
  }

  private signer(): Signer {
    return (this.signerCache ??= readManifestSigner(pkiDirOf(this.engine.dataDir)));
  }

  /** One pass: start pending requests whose job is ready, move dispatched ones on. Idempotent. */
  tick(): void {
    if (this.busy) return;
    this.busy = true;
    try {
      for (const r of crossEvalRequestsIn(this.engine.store.db, 'pending')) this.start(r);
      for (const r of crossEvalRequestsIn(this.engine.store.db, 'dispatched')) this.advance(r);
    } finally {
      this.busy = false;
    }
  }

  /** The job's participating sites (those with a round task), limited to the request's sites, with their last task. */
  private participants(req: CrossEvalRequestRow): Map<string, TaskRow> {
    const store = this.engine.store;
    const wanted = req.sites_json ? new Set(JSON.parse(req.sites_json) as string[]) : undefined;
    const last = [...store.lastRoundTaskPerSite(req.job_id)].filter(([site]) => !wanted || wanted.has(site));
    return new Map(last.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
  }

  private start(req: CrossEvalRequestRow): void {
    const store = this.engine.store;
    const now = this.engine.now();
    const job = store.job(req.job_id);
    if (!job) return setCrossEvalStatus(store.db, req.id, 'failed', now, `job ${req.job_id} does not exist`);
    const last = store.adapterVersions(req.job_id).at(-1);
    // The last round must be published: no round still open or aggregating.
    if (!last || last.version === 0 || store.rounds(req.job_id).some((r) => r.state === 'open' || r.state === 'aggregating')) return;
    const participants = this.participants(req);
    const sites = [...participants.keys()].filter((s) => this.sink.connected(s) > 0);
    // Just after a (re)start the sites are still reconnecting: wait for all of them, for at most
    // one heartbeat timeout, before choosing whom to ask for an upload.
    if (sites.length < participants.size && now - this.startedMs < this.engine.heartbeatTimeoutMs) return;
    if (sites.length === 0) return setCrossEvalStatus(store.db, req.id, 'failed', now, 'no participating site is connected');
    const base = this.engine.taskMessage(participants.get(sites[0])!);
    const upload = (siteId: string): Task => ({
      ...base, taskId: `${UPLOAD_PREFIX}${req.id}-${siteId}`, kind: 'TASK_KIND_UPLOAD_LOCAL', round: last.version, globalAdapter: null, peerAdapters: [], peerSites: [], payloadKind: LOCAL_ADAPTER_PAYLOAD,
    });
    store.tx(() => {
      markCrossEvalDispatched(store.db, req.id, now, `UPLOAD_LOCAL sent to ${sites.join(', ')}`);
      insertSideTasks(store.db, sites.map((siteId) => ({ siteId, task: upload(siteId), requestId: req.id })), now);
    });
    for (const siteId of sites) this.sink.push(siteId);
  }

  private advance(req: CrossEvalRequestRow): void {
    const store = this.engine.store;
    const now = this.engine.now();
    const timeout = this.o.uploadTimeoutMs ?? UPLOAD_TIMEOUT_MS;
    const ups = requestSideTasks(store.db, req.id, 'TASK_KIND_UPLOAD_LOCAL');
    const open = ups.filter(isOpen);
    if (open.length > 0 && now < (req.dispatched_ms ?? req.updated_ms) + timeout) return;
    const owners = ups.filter((u) => u.status === 'done').map((u) => u.site_id);
    const closeUploads = () => open.forEach((u) => setSideTaskStatus(store.db, u.task_id, 'expired', now));
    const unanswered = open.length ? `; ${open.map((u) => u.site_id).join(', ')} did not answer within ${timeout} ms` : '';
    if (owners.length === 0) {
      return store.tx(() => {
        closeUploads();
        setCrossEvalStatus(store.db, req.id, 'failed', now, `no participating site consented to share its local-only adapter (policy.allow_cross_eval)${unanswered}`);
      });
    }
    const version = sideTaskMessage(ups[0]).round;
    const peers = owners.map((o) => store.adapterVersion(req.job_id, version, o)!).map((v) => ({ jobId: v.job_id, version: v.version, sha256: v.sha256, sizeBytes: v.size, manifestSha256: v.manifest_sha256 }));
    const participants = this.participants(req);
    const sites = [...participants.keys()];
    const base = this.engine.taskMessage(participants.get(sites[0])!);
    store.tx(() => {
      closeUploads();
      insertSideTasks(store.db, sites.map((siteId) => ({
        siteId, requestId: req.id,
        task: { ...base, taskId: `xeval-${req.id}-${siteId}`, kind: 'TASK_KIND_CROSS_EVAL' as const, round: version, globalAdapter: null, peerAdapters: peers, peerSites: owners },
      })), now);
      setCrossEvalStatus(store.db, req.id, 'done', now, `owners ${owners.join(', ')}; CROSS_EVAL for ${sites.join(', ')}${unanswered}`);
    });
    for (const siteId of sites) this.sink.push(siteId);
  }

  /** The open UPLOAD_LOCAL side task `taskId` of `siteId`, or a FEDLORA_ERR_NOT_SELECTED. */
  private openUpload(siteId: string, taskId: string): UploadTask {
    const row = taskId.startsWith(UPLOAD_PREFIX) ? sideTask(this.engine.store.db, taskId) : undefined;
    if (!row || row.site_id !== siteId || row.kind !== 'TASK_KIND_UPLOAD_LOCAL' || !isOpen(row)) {
      throw fail('FEDLORA_ERR_NOT_SELECTED', `UpdateHeader.task_id: site ${siteId} has no open UPLOAD_LOCAL task ${taskId}`);
    }
    return { taskId, siteId, jobId: row.job_id, version: sideTaskMessage(row).round };
  }

  /** Start receiving a local-only adapter upload (header with payload_kind local_adapter). */
  beginUpload(siteId: string, h: UpdateHeader, callerCertPem: string | undefined): LocalAdapterUpload {
    const u = this.openUpload(siteId, h.taskId);
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

  /** Store a verified local-only adapter as owner-site version (signed manifest); its upload
   *  task is then done. Refused if the task closed meanwhile (the wait ended during the upload). */
  storeLocalAdapter(u: UploadTask, bytes: Buffer, numExamples: number): void {
    this.openUpload(u.siteId, u.taskId);
    const job = this.engine.store.job(u.jobId);
    if (!job) throw fail('FEDLORA_ERR_NOT_FOUND', `job ${u.jobId} does not exist`);
    const spec = parseJobSpec(JSON.parse(job.spec_json), `job ${u.jobId}`);
    const { tensors } = decodeSafetensorsF32(bytes, `local adapter of ${u.siteId}`);
    const layout = layoutOf(tensors);
    const now = this.engine.now();
    publishVersion(this.engine.store, this.engine.dataDir, this.signer(), {
      jobId: u.jobId, spec: specAtSiteRank(spec, layout, u.siteId), version: u.version, round: u.version, flat: flatten(tensors, layout), layout, contributingSites: 1, numExamples, createdMs: now, ownerSite: u.siteId,
    });
    this.engine.store.tx(() => {
      setSideTaskStatus(this.engine.store.db, u.taskId, 'done', now);
      this.engine.store.audit.append(u.siteId, 'cross_eval_adapter_stored', u.taskId, { job: u.jobId, version: u.version, sha256: createHash('sha256').update(bytes).digest('hex') }, new Date(now));
    });
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


/** A site that trains a lower rank (lora.min_site_r) keeps its local-only adapter at that rank:
 *  published with its own r and the alpha of the job's scaling, so peers load and score it as is. */
function specAtSiteRank(spec: JobSpec, layout: AdapterLayout, siteId: string): JobSpec {
  const k = rankOfLayout(layout, `local adapter of ${siteId}`) ?? spec.lora.r;
  if (k === spec.lora.r) return spec;
  const min = spec.lora.min_site_r ?? spec.lora.r;
  if (k < min || k > spec.lora.r) throw fail('FEDLORA_ERR_SHAPE', `local adapter of ${siteId} has LoRA rank ${k}; the job accepts ranks ${min}..${spec.lora.r} (lora.min_site_r..lora.r)`);
  return { ...spec, lora: { ...spec.lora, r: k, alpha: alphaAtRank({ r: spec.lora.r, alpha: spec.lora.alpha, useRslora: spec.lora.use_rslora }, k) } };
}
