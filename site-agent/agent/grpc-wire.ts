// The gRPC binding of FederationWire: mutual TLS 1.3 with the site's enrolled certificate,
// every call outbound. Adapter downloads are verified (per-chunk and whole sha256, then the
// coordinator's manifest signature with a signing certificate that must chain to the pinned CA).

import * as grpc from '@grpc/grpc-js';
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { X509Certificate, createHash } from 'node:crypto';
import { createFederationClient, unary, type FederationClient, type Task } from '../../shared/proto.ts';
import { createSiteChannelCredentials, sitePaths } from '../../shared/tls.ts';
import { downloadAdapter } from '../../shared/transfer/download.ts';
import { uploadFile } from '../../shared/transfer/upload.ts';
import { fail, fromGrpcError } from '../../shared/errors.ts';
import { renewIfNeeded } from '../enroll.ts';
import { verifyManifest } from '../../shared/publication-manifest.ts';
import type { FederationWire, WireTask, FetchedAdapter, UpdateHeaderOut, SubmitResult, MetricOut } from './wire.ts';

export interface GrpcWireOptions {
  /** The channel's own reconnect backoff (grpc-js defaults: 1 s growing to 120 s). Bounded by the
   *  site's network.reconnect_*_ms so that after a coordinator restart the agent is back within
   *  reconnect_max_ms, as its config says, not minutes later. */
  reconnectInitialMs?: number;
  reconnectMaxMs?: number;
}

export function createGrpcWire(siteDir: string, endpoint: string, agentVersion = '0.1.0', o: GrpcWireOptions = {}): FederationWire {
  const channelOptions = {
    ...(o.reconnectInitialMs ? { 'grpc.initial_reconnect_backoff_ms': o.reconnectInitialMs } : {}),
    ...(o.reconnectMaxMs ? { 'grpc.max_reconnect_backoff_ms': o.reconnectMaxMs } : {}),
  };
  const connect = () => createFederationClient(endpoint, createSiteChannelCredentials(siteDir), channelOptions);
  let client: FederationClient = connect();
  const caPem = readFileSync(sitePaths(siteDir).ca, 'utf8');
  const ca = new X509Certificate(caPem);
  const call = async <Req, Res>(m: Parameters<typeof unary<Req, Res>>[0], req: Partial<Req>, deadlineMs = 30_000): Promise<Res> => {
    try {
      return await unary<Req, Res>(m, req, { deadline: Date.now() + deadlineMs });
    } catch (e) {
      throw fromGrpcError(e as grpc.ServiceError);
    }
  };

  return {
    async heartbeat(req) {
      const r = await call(client.heartbeat.bind(client), req, 10_000);
      return { serverTimeUnixMs: r.serverTimeUnixMs, renewCertificate: r.renewCertificate };
    },

    streamTasks(onTask, signal) {
      return new Promise<void>((resolve, reject) => {
        const stream = client.streamTasks({ agentVersion, maxParallelTasks: 1 });
        const onAbort = () => stream.cancel();
        signal.addEventListener('abort', onAbort);
        stream.on('data', (t: Task) => onTask(toWireTask(t)));
        stream.on('error', (e: grpc.ServiceError) => {
          signal.removeEventListener('abort', onAbort);
          if (signal.aborted || e.code === grpc.status.CANCELLED) resolve();
          else reject(fromGrpcError(e));
        });
        stream.on('end', () => {
          signal.removeEventListener('abort', onAbort);
          resolve();
        });
      });
    },

    async declineTask(taskId, reason, code) {
      await call(client.declineTask.bind(client), { taskId, reason, code });
    },

    async fetchAdapter(req, outDir): Promise<FetchedAdapter> {
      mkdirSync(outDir, { recursive: true });
      const file = join(outDir, 'adapter_model.safetensors');
      let r;
      try {
        r = await downloadAdapter(client, { jobId: req.jobId, version: req.version, ownerSite: req.ownerSite ?? '' }, file);
      } catch (e) {
        throw (e as { code?: unknown }).code && typeof (e as { code: unknown }).code === 'number' ? fromGrpcError(e as grpc.ServiceError) : e;
      }
      const h = r.header;
      const signerPem = Buffer.from(h.signerCertificatePem ?? []).toString('utf8');
      if (!signerPem.includes('BEGIN CERTIFICATE')) throw fail('FEDLORA_ERR_SIGNATURE', `adapter ${req.jobId} v${req.version}: the coordinator sent no manifest-signing certificate`);
      const signer = new X509Certificate(signerPem);
      if (!signer.verify(ca.publicKey) || signer.issuer !== ca.subject) {
        throw fail('FEDLORA_ERR_SIGNATURE', `adapter ${req.jobId} v${req.version}: the manifest-signing certificate is not issued by the consortium CA pinned at enrollment`);
      }
      const manifestJson = Buffer.from(h.manifestJson);
      if (!verifyManifest(manifestJson, Buffer.from(h.signature), signerPem)) {
        throw fail('FEDLORA_ERR_SIGNATURE', `adapter ${req.jobId} v${req.version}: manifest signature does not verify`);
      }
      const manifest = JSON.parse(manifestJson.toString('utf8')) as { adapter_sha256: string; job_id: string; version: number; adapter_config_sha256?: string };
      if (manifest.adapter_sha256 !== r.sha256 || manifest.job_id !== req.jobId || manifest.version !== req.version) {
        throw fail('FEDLORA_ERR_SIGNATURE', `adapter ${req.jobId} v${req.version}: signed manifest names ${manifest.job_id} v${manifest.version} sha256 ${manifest.adapter_sha256}, received ${r.sha256}`);
      }
      const cfg = Buffer.from(h.adapterConfigJson);
      if (manifest.adapter_config_sha256 && createHash('sha256').update(cfg).digest('hex') !== manifest.adapter_config_sha256) {
        throw fail('FEDLORA_ERR_SIGNATURE', `adapter ${req.jobId} v${req.version}: adapter_config.json does not match the signed manifest`);
      }
      writeFileSync(join(outDir, 'adapter_config.json'), cfg);
      writeFileSync(join(outDir, 'manifest.json'), manifestJson);
      return { adapterFile: file, adapterConfigJson: cfg, manifestJson, signature: Buffer.from(h.signature) };
    },

    async submitUpdate(header: UpdateHeaderOut, file: string): Promise<SubmitResult> {
      try {
        const r = await uploadFile(client, { ...header }, file, { chunkSize: header.chunkSize, resume: true, attempts: 5 });
        return { updateId: r.updateId, receivedBytes: r.receivedBytes, complete: r.complete, sha256: r.sha256, resumedFromChunk: r.resumedFromChunk };
      } catch (e) {
        throw typeof (e as { code?: unknown }).code === 'number' ? fromGrpcError(e as grpc.ServiceError) : e;
      }
    },

    async reportMetrics(r: { taskId: string; jobId: string; round: number; phase: string; metrics: MetricOut[] }) {
      await call(client.reportMetrics.bind(client), r);
    },

    async renewCertificate() {
      const r = await renewIfNeeded(siteDir, client);
      if (r.renewed) {
        // New key and certificate on disk: reconnect with them (open streams reconnect with backoff).
        const old = client;
        client = connect();
        old.close();
      }
      return r;
    },

    async secAgg(m) {
      const r = await call(client.secAgg.bind(client), m, 60_000);
      return { stage: r.stage, payload: Buffer.from(r.payload), ready: r.ready };
    },

    close() {
      client.close();
    },
  };
}

function toWireTask(t: Task): WireTask {
  const z = <T>(v: T | null | undefined, d: T): T => v ?? d;
  return {
    taskId: t.taskId,
    jobId: t.jobId,
    round: t.round,
    kind: t.kind,
    baseModel: z(t.baseModel, { id: '', manifestSha256: '' }),
    lora: z(t.lora, { r: 8, alpha: 16, targetModules: ['q_proj', 'v_proj'], dropout: 0, useRslora: false, freezeA: false, initSeed: 0 }),
    train: z(t.train, { localSteps: 0, localEpochs: 1, learningRate: 1e-4, optimizer: 'adamw', batchTokens: 1024, seed: 0, proxMu: 0, weightDecay: 0, warmupSteps: 0, maxGradNorm: 0, replayFraction: 0, dataPeriod: 0 }),
    globalAdapter: z(t.globalAdapter, { jobId: t.jobId, version: 0, sha256: '', sizeBytes: 0, manifestSha256: '' }),
    privacy: z(t.privacy, { dpEnabled: false, clipNorm: 0, noiseMultiplier: 0, epsilonAfterRound: 0, delta: 0, secureAggregation: false, minSites: 1, adaptiveClipping: false, clippedBitNoise: 0 }),
    deadlineUnixMs: t.deadlineUnixMs,
    selectedSites: t.selectedSites,
    aggregation: t.aggregation,
    payloadKind: t.payloadKind,
    strategyConfig: t.strategyConfig ?? {},
    evaluateBase: t.evaluateBase,
    parentJob: t.parentJob ?? '',
    peerAdapters: t.peerAdapters ?? [],
    peerSites: t.peerSites ?? [],
    exam: t.exam ?? '',
    examMode: t.examMode ?? '',
  };
}
