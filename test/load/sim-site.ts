// A lightweight simulated site for the load test: its own enrolled certificate and Federation
// client (mutual TLS), heartbeats, StreamTasks, FetchAdapter (chunk and whole-file sha256
// checked), a deterministic delta from (site id, round) instead of training, signed and sent
// with the product's `uploadFile`. Many of these share one event loop in the load driver.
import { createHash } from 'node:crypto';
import { readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { enrollSite } from '../../site-agent/enroll.ts';
import { createFederationClient, unary, type AdapterChunk, type FederationClient, type Task } from '../../shared/proto.ts';
import { createSiteChannelCredentials, sitePaths } from '../../shared/tls.ts';
import { signUpdate } from '../../shared/update-signature.ts';
import { uploadFile } from '../../shared/transfer/upload.ts';
import { encodeSafetensors } from '../../shared/safetensors.ts';
import { unflatten, type AdapterLayout } from '../../shared/tensors.ts';

/** Deterministic delta of site `siteId` for `round`: xorshift32 seeded by sha256(site:round), values in ±5e-4. */
export function siteDelta(siteId: string, round: number, total: number): Float32Array {
  let s = createHash('sha256').update(`${siteId}:${round}`).digest().readUInt32LE(0) || 1;
  const v = new Float32Array(total);
  for (let i = 0; i < total; i++) {
    s ^= s << 13; s >>>= 0;
    s ^= s >>> 17;
    s ^= s << 5; s >>>= 0;
    v[i] = ((s >>> 8) / 16777216 - 0.5) * 1e-3;
  }
  return v;
}

/** Example count of a site (varied so FedAvg's weighting matters). */
export const examplesOf = (index: number) => 10 + (index % 7) * 5;

export interface UploadRecord { round: number; siteId: string; bytes: number; startMs: number; ackMs: number }
export interface FetchRecord { version: number; bytes: number; startMs: number; endMs: number }

export interface SiteHooks {
  layout: AdapterLayout;
  workDir: string;
  /** Called with each delta before upload (the driver accumulates the expected FedAvg). */
  onDelta(siteIndex: number, round: number, delta: Float32Array, numExamples: number): void;
  /** Called with the bytes of a fetched global version (the driver checks it, once per version). */
  onFetched(version: number, data: Buffer | null): boolean;
  onUploaded(r: UploadRecord): void;
  onFetchDone(r: FetchRecord): void;
  onError(siteId: string, e: unknown): void;
}

export class SimSite {
  client!: FederationClient;
  private stream?: grpc.ClientReadableStream<Task>;
  private hb?: NodeJS.Timeout;
  private readonly siteDir: string;

  constructor(readonly id: string, readonly index: number, private readonly hooks: SiteHooks) {
    this.siteDir = join(hooks.workDir, id);
  }

  async enroll(token: string, enrollmentEndpoint: string): Promise<void> {
    await enrollSite({ token, siteDir: this.siteDir, coordinator: enrollmentEndpoint });
  }

  async connect(federationEndpoint: string): Promise<void> {
    this.client = createFederationClient(federationEndpoint, createSiteChannelCredentials(this.siteDir));
    const r = await unary(this.client.heartbeat.bind(this.client), { agentVersion: 'load', state: 'idle' });
    this.hb = setInterval(() => void unary(this.client.heartbeat.bind(this.client), { agentVersion: 'load', state: 'idle' }).catch((e) => this.hooks.onError(this.id, e)), r.heartbeatIntervalMs);
    this.hb.unref();
    this.stream = this.client.streamTasks({ agentVersion: 'load', maxParallelTasks: 1 });
    this.stream.on('data', (t: Task) => void this.handle(t).catch((e) => this.hooks.onError(this.id, e)));
    this.stream.on('error', (e: grpc.ServiceError) => {
      if (e.code !== grpc.status.CANCELLED) this.hooks.onError(this.id, e);
    });
  }

  private fetch(jobId: string, version: number, expectSha: string): Promise<Buffer | null> {
    // Keep the bytes only when the driver wants to check this version (one site per version).
    const keep = this.hooks.onFetched(version, null);
    return new Promise((resolve, reject) => {
      const s = this.client.fetchAdapter({ jobId, version, offset: 0 });
      const whole = createHash('sha256');
      const parts: Buffer[] = [];
      s.on('data', (m: AdapterChunk) => {
        if (!m.chunk) return;
        const data = Buffer.from(m.chunk.data);
        if (createHash('sha256').update(data).digest('hex') !== m.chunk.sha256) reject(new Error(`${this.id}: chunk ${m.chunk.index} of v${version} hash mismatch`));
        whole.update(data);
        if (keep) parts.push(data);
      });
      s.on('end', () => {
        const sha = whole.digest('hex');
        if (sha !== expectSha) reject(new Error(`${this.id}: v${version} sha256 ${sha} != task's ${expectSha}`));
        else resolve(keep ? Buffer.concat(parts) : null);
      });
      s.on('error', reject);
    });
  }

  /** EVALUATE tasks (sent to every participant when the job completes) received. */
  evaluateTasks = 0;

  private async handle(t: Task): Promise<void> {
    if (t.kind === 'TASK_KIND_EVALUATE') {
      this.evaluateTasks++;
      return;
    }
    if (t.kind !== 'TASK_KIND_TRAIN') return; // CANCEL: nothing is in flight that could be cancelled here
    const g = t.globalAdapter!;
    const f0 = Date.now();
    const data = await this.fetch(t.jobId, g.version, g.sha256);
    this.hooks.onFetchDone({ version: g.version, bytes: Number(g.sizeBytes), startMs: f0, endMs: Date.now() });
    if (data) this.hooks.onFetched(g.version, data);
    const delta = siteDelta(this.id, t.round, this.hooks.layout.total);
    const numExamples = examplesOf(this.index);
    this.hooks.onDelta(this.index, t.round, delta, numExamples);
    const tensors = new Map([...unflatten(delta, this.hooks.layout)].map(([k, x]) => [k, { dtype: 'F32' as const, shape: x.shape, data: x.data }]));
    const bytes = encodeSafetensors(tensors);
    const file = join(this.siteDir, `update-r${t.round}.safetensors`);
    writeFileSync(file, bytes);
    const sha256 = createHash('sha256').update(bytes).digest('hex');
    const fields = { updateId: `u-${this.id}-r${t.round}`, jobId: t.jobId, round: t.round, baseVersion: g.version, sha256, numExamples };
    const signature = signUpdate(readFileSync(sitePaths(this.siteDir).key), fields);
    const u0 = Date.now();
    const res = await uploadFile(this.client, { ...fields, taskId: t.taskId, signature }, file, { attempts: 3 });
    const ack = Date.now();
    unlinkSync(file);
    if (!res.complete) throw new Error(`${this.id}: upload of round ${t.round} not complete: ${JSON.stringify(res)}`);
    this.hooks.onUploaded({ round: t.round, siteId: this.id, bytes: bytes.length, startMs: u0, ackMs: ack });
  }

  close(): void {
    if (this.hb) clearInterval(this.hb);
    this.stream?.cancel();
    this.client?.close();
  }
}
