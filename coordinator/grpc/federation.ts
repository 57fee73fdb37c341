// The Federation service (mutual TLS). Every handler first derives the caller's site id from
// its client certificate (coordinator/auth.ts's authenticateCall); nothing in a message body names the caller.
// Errors go out through toGrpcError (status + "FEDLORA_ERR_...: message" details).
import { X509Certificate } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import type { Database } from 'better-sqlite3-multiple-ciphers';
import { fail, isFedloraError, toGrpcError } from '../../shared/errors.ts';
import { recordDataRevision } from '../jobs/periods.ts';
import type { FederationHandlers, AdapterChunk, FetchAdapterRequest, MetricsReport } from '../../shared/proto.ts';
import { verifyUpdateSignature } from '../../shared/update-signature.ts';
import { authenticateCall, type AuthDeps, type CallerIdentity, type CallWithAuth } from '../auth.ts';
import { renewSiteCertificate } from '../enrollment.ts';
import type { LoadedCa } from '../../certs/ca.ts';
import type { RoundEngine } from '../rounds/index.ts';
import type { HeaderVerifier } from '../rounds/intake.ts';
import { submitUpdateHandler } from './submit-update.ts';
import { appendNow } from '../store/audit.ts';
import { adapterFiles, readAdapterConfig } from '../publish/publisher.ts';
import type { SecAggCollector } from '../secagg/collector.ts';
import type { SurvivedErrors } from '../metrics/survived-errors.ts';
import { TaskHub } from './task-hub.ts';
import { CrossEvalDispatcher } from '../crosseval/cross-eval.ts';
import { createHash } from 'node:crypto';
import { sharePolicyFromWire } from '../../shared/metrics-sharing.ts';

export interface FederationDeps {
  engine: RoundEngine;
  /** Answers the SecAgg RPC of secure-aggregation rounds. */
  secagg: Pick<SecAggCollector, 'handle'>;
  db: Database;
  ca: LoadedCa;
  auth: AuthDeps;
  chunkSize: number;
  maxUpdateBytes: number;
  heartbeatIntervalMs: number;
  requireUpdateSignature: boolean;
  /** Group commit of upload progress (config transfer.commit_group_bytes). */
  commitGroupBytes?: number;
  siteCertDays?: number;
  /** The manifest-signing certificate (CA-issued), sent with every adapter so sites can verify. */
  signerCertPem?: string;
  /** How long a cross-eval request waits for UPLOAD_LOCAL answers (default 10 minutes). */
  crossEvalUploadTimeoutMs?: number;
  /** Failed audit writes and engine ticks: logged and counted (they do not fail the call). */
  errors: SurvivedErrors;
}

const RENEW_BEFORE_MS = 14 * 24 * 3600_000;
const MAX_METRICS_PER_REPORT = 1024;
const MAX_METRIC_TEXT = 256;

function peerPem(call: CallWithAuth): string | undefined {
  const raw = call.getAuthContext()?.sslPeerCertificate?.raw;
  return raw ? new X509Certificate(raw).toString() : undefined;
}

/** End a server stream with the error's status. (grpc-js sends the status of an 'error' event;
 *  `call.destroy(err)` would tear the stream down without one, and the site would wait for its
 *  deadline instead of reading FEDLORA_ERR_NOT_FOUND / _PERMISSION / ...) */
function failStream(call: grpc.ServerWritableStream<unknown, unknown>, e: unknown): void {
  if (call.cancelled || call.destroyed) return;
  call.emit('error', toGrpcError(e));
}

export function createFederationHandlers(d: FederationDeps): { handlers: FederationHandlers; hub: TaskHub; crossEval: CrossEvalDispatcher } {
  const { engine } = d;
  const store = engine.store;
  const hub = new TaskHub(engine);
  const crossEval = new CrossEvalDispatcher(engine, hub, { maxBytes: d.maxUpdateBytes, uploadTimeoutMs: d.crossEvalUploadTimeoutMs });

  // Refused calls go in the audit log, once per (certificate, code, method) per minute: a revoked
  // site's agent retrying every few seconds must not flood it.
  const refusedSeen = new Map<string, number>();
  const auditRefused = (call: CallWithAuth, e: unknown, method: string) => {
    if (!isFedloraError(e)) return;
    let cert: { subject?: string; serial?: string } = {};
    try {
      const raw = call.getAuthContext()?.sslPeerCertificate?.raw;
      if (raw) {
        const x = new X509Certificate(raw);
        cert = { subject: x.subject.replace(/\n/g, ','), serial: x.serialNumber.toLowerCase().replace(/^0+/, '') };
      }
    } catch {
      /* unparsable certificate: the code says so */
    }
    const key = `${cert.serial}:${e.code}:${method}`;
    const now = engine.now();
    if ((refusedSeen.get(key) ?? -Infinity) > now - 60_000) return;
    if (refusedSeen.size > 4096) refusedSeen.clear();
    refusedSeen.set(key, now);
    try {
      appendNow(store.db, 'unauthenticated', 'call_refused', cert.subject ?? 'no certificate', { method, code: e.code, reason: e.message.slice(0, 500), serial: cert.serial ?? null }, new Date(now));
    } catch (err) {
      d.errors.record('audit_write', err, { action: 'call_refused', method, serial: cert.serial ?? null }); // the refusal itself still goes out
    }
  };
  /** The caller's identity from its certificate (CRL and site status checked); refusals audited. */
  const authenticate = (call: CallWithAuth, method: string): CallerIdentity => {
    try {
      return authenticateCall(call, { ...d.auth, now: engine.now });
    } catch (e) {
      auditRefused(call, e, method);
      throw e;
    }
  };
  const who = (call: CallWithAuth, method = 'unknown'): CallerIdentity => {
    const id = authenticate(call, method);
    store.upsertSite(id.siteId, engine.now(), { serial: id.certSerial, notAfter: id.notAfter });
    return id;
  };
  // An update header's signature must verify with the caller's certificate over (update id,
  // job, round, base version, sha256, examples) before any byte is stored (shared/update-signature.ts).
  const headerVerifier = (call: CallWithAuth): HeaderVerifier => (h) => {
    if (!h.signature || h.signature.length === 0) {
      if (d.requireUpdateSignature) throw fail('FEDLORA_ERR_SIGNATURE', `update ${h.updateId}: UpdateHeader.signature is empty; this coordinator requires every update to be signed with the site key`);
      return;
    }
    const pem = peerPem(call);
    const f = { updateId: h.updateId, jobId: h.jobId, round: h.round, baseVersion: h.baseVersion, sha256: h.sha256, numExamples: h.numExamples };
    if (!pem || !verifyUpdateSignature(pem, f, h.signature)) {
      throw fail('FEDLORA_ERR_SIGNATURE', `update ${h.updateId}: UpdateHeader.signature does not verify with the caller's certificate over (update id, job ${h.jobId}, round ${h.round}, base version ${h.baseVersion}, sha256, num_examples)`);
    }
  };
  const auditAdmissionRefused = (siteId: string, h: { updateId: string; jobId: string; round: number; sha256: string; totalBytes: number }, e: unknown) => {
    if (!isFedloraError(e)) return;
    try {
      appendNow(store.db, siteId, 'update_rejected', h.updateId, { stage: 'admission', code: e.code, reason: e.message.slice(0, 2000), job: h.jobId, round: h.round, sha256: h.sha256, size: h.totalBytes }, new Date(engine.now()));
    } catch (err) {
      d.errors.record('audit_write', err, { action: 'update_rejected', site: siteId, update: h.updateId, job: h.jobId, round: h.round }); // the refusal itself still goes out
    }
  };
  // A MetricsReport carries a handful of aggregate numbers for a job the site works on: bound
  // its size (a report is stored row by row) and refuse reports about other jobs.
  const siteHasTaskIn = d.db.prepare('SELECT 1 FROM tasks WHERE job_id = ? AND site_id = ? LIMIT 1');
  const checkMetricsReport = (siteId: string, m: MetricsReport) => {
    if (m.metrics.length > MAX_METRICS_PER_REPORT) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `MetricsReport.metrics: ${m.metrics.length} entries, at most ${MAX_METRICS_PER_REPORT} per report`);
    const text = (v: string, field: string) => {
      if (v.length > MAX_METRIC_TEXT) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `MetricsReport.${field}: ${v.length} characters, at most ${MAX_METRIC_TEXT}`);
    };
    text(m.jobId, 'job_id');
    text(m.taskId, 'task_id');
    text(m.phase, 'phase');
    m.metrics.forEach((x, i) => {
      text(x.name, `metrics[${i}].name`);
      text(x.kind, `metrics[${i}].kind`);
      text(x.modelOwner, `metrics[${i}].model_owner`);
      if (!x.name) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `MetricsReport.metrics[${i}].name is empty`);
    });
    if (store.job(m.jobId) && !siteHasTaskIn.get(m.jobId, siteId)) throw fail('FEDLORA_ERR_NOT_SELECTED', `MetricsReport.job_id: site ${siteId} has no task in job ${m.jobId}`);
  };
  const unary = <Req, Res>(fn: (call: grpc.ServerUnaryCall<Req, Res>, id: CallerIdentity) => Promise<Res> | Res): grpc.handleUnaryCall<Req, Res> =>
    (call, cb) => {
      Promise.resolve()
        .then(() => fn(call, who(call, (call as { getPath?: () => string }).getPath?.() ?? 'unary')))
        .then((res) => cb(null, res))
        .catch((e) => cb(toGrpcError(e) as grpc.ServiceError));
    };

  const handlers: FederationHandlers = {
    heartbeat: unary((call, id) => {
      const now = engine.now();
      const shareSiteMetrics = sharePolicyFromWire(call.request.shareSiteMetrics);
      // what the heartbeat says of the site, in one transaction (one commit per heartbeat)
      store.tx(() => {
        store.touchSite(id.siteId, now, { agentVersion: call.request.agentVersion, state: call.request.state, shareSiteMetrics });
        if (call.request.trainingTokensPerS > 0) store.setSiteThroughput(id.siteId, call.request.trainingTokensPerS, now);
        if (call.request.dataRevision) recordDataRevision(store.db, id.siteId, call.request.dataRevision);
      });
      hub.push(id.siteId);
      // A site coming online may open a waiting round.
      void engine.tick().catch((e) => d.errors.record('engine_tick', e, { after: 'Heartbeat', site: id.siteId }));
      return { serverTimeUnixMs: now, renewCertificate: id.notAfter - now < RENEW_BEFORE_MS, heartbeatIntervalMs: d.heartbeatIntervalMs };
    }),

    renewCertificate: unary(async (call, id) => {
      const r = await renewSiteCertificate(d.db, d.ca, { siteId: id.siteId, csrPem: Buffer.from(call.request.csrPem ?? []), validityDays: d.siteCertDays, now: engine.now() });
      return { certificatePem: r.certificatePem, notAfterUnixMs: r.notAfterUnixMs };
    }),

    streamTasks: (call) => {
      let id: CallerIdentity;
      try {
        id = who(call, 'StreamTasks');
      } catch (e) {
        failStream(call, e);
        return;
      }
      store.touchSite(id.siteId, engine.now(), { agentVersion: call.request.agentVersion });
      hub.attach(id.siteId, call);
      void engine.tick().catch((e) => d.errors.record('engine_tick', e, { after: 'StreamTasks', site: id.siteId }));
    },

    declineTask: unary((call, id) => {
      // Round tasks and side tasks (EVALUATE, cross-eval) alike; a declined UPLOAD_LOCAL may let
      // a cross-eval request move on to CROSS_EVAL now.
      engine.declineTask(id.siteId, call.request.taskId, call.request.reason, call.request.code);
      crossEval.tick();
      return { ok: true, message: `task ${call.request.taskId} declined` };
    }),

    fetchAdapter: (call) => {
      void (async () => {
        try {
          who(call, 'FetchAdapter');
          await sendAdapter(call, call.request);
        } catch (e) {
          failStream(call, e);
        }
      })();
    },

    submitUpdate: submitUpdateHandler({
      engine, maxUpdateBytes: d.maxUpdateBytes, requireUpdateSignature: d.requireUpdateSignature, commitGroupBytes: d.commitGroupBytes,
      who, authenticate, headerVerifier, peerPem, auditAdmissionRefused, errors: d.errors,
      beginLocalUpload: (siteId, h, pem) => crossEval.beginUpload(siteId, h, pem),
    }),

    getUploadStatus: unary((call, id) => {
      const row = store.update(call.request.updateId);
      if (!row || row.site_id !== id.siteId) return { known: false, receivedChunks: 0, receivedBytes: 0, complete: false };
      if (row.status === 'rejected' || row.status === 'discarded') throw fail(row.status === 'rejected' ? 'FEDLORA_ERR_UPDATE_INVALID' : 'FEDLORA_ERR_ROUND_CLOSED', `update ${row.update_id} is ${row.status}: ${row.reason ?? ''}`);
      return { known: true, receivedChunks: row.received_chunks, receivedBytes: row.received_bytes, complete: row.status === 'accepted' };
    }),

    reportMetrics: unary((call, id) => {
      checkMetricsReport(id.siteId, call.request);
      const n = engine.reportMetrics(id.siteId, call.request);
      return { ok: true, message: `${n} metric(s) stored` };
    }),

    secAgg: unary(async (call, id) => {
      const r = await d.secagg.handle({ siteId: id.siteId, jobId: call.request.jobId, round: call.request.round, stage: call.request.stage, payload: Buffer.from(call.request.payload ?? []) });
      return { stage: call.request.stage, payload: r.payload, ready: r.ready };
    }),
  };

  async function sendAdapter(call: grpc.ServerWritableStream<FetchAdapterRequest, AdapterChunk>, req: FetchAdapterRequest): Promise<void> {
    const row = req.ownerSite ? store.adapterVersion(req.jobId, req.version, req.ownerSite) : store.adapterVersion(req.jobId, req.version);
    if (!row) throw fail('FEDLORA_ERR_NOT_FOUND', `FetchAdapterRequest: job ${req.jobId} has no ${req.ownerSite ? `adapter of site ${req.ownerSite}` : 'published'} version ${req.version}`);
    const file = adapterFiles(row).model;
    const cs = d.chunkSize;
    // Any byte offset may be resumed from (the site keeps whatever it had written); chunks
    // then run from there, numbered by their position in whole chunk_size units.
    if (!(req.offset >= 0 && req.offset <= row.size)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `FetchAdapterRequest.offset ${req.offset} is outside the ${row.size}-byte adapter`);
    const write = (m: AdapterChunk) => new Promise<void>((resolve) => (call.write(m) ? resolve() : call.once('drain', resolve)));
    await write({
      part: 'header',
      header: {
        ref: { jobId: row.job_id, version: row.version, sha256: row.sha256, sizeBytes: row.size, manifestSha256: row.manifest_sha256 },
        adapterConfigJson: readAdapterConfig(row), manifestJson: Buffer.from(row.manifest_json, 'utf8'), signature: Buffer.from(row.signature, 'base64'),
        chunkSize: cs, totalBytes: row.size, signerCertificatePem: Buffer.from(d.signerCertPem ?? ''),
      },
    });
    const fd = openSync(file, 'r');
    try {
      for (let off = req.offset; off < row.size; off += cs) {
        if (call.cancelled) return;
        const buf = Buffer.alloc(Math.min(cs, row.size - off));
        readSync(fd, buf, 0, buf.length, off);
        await write({ part: 'chunk', chunk: { index: Math.floor(off / cs), offset: off, data: buf, sha256: createHash('sha256').update(buf).digest('hex') } });
      }
    } finally {
      closeSync(fd);
    }
    call.end();
  }

  return { handlers, hub, crossEval };
}
