// A real federation for secure-aggregation tests: initCoordinator + startCoordinator on
// 127.0.0.1 in a temp dir, sites enrolled with join tokens (real CSRs, CA-issued certificates)
// talking over mutual TLS through createGrpcWire. Wires are swappable so a test can restart the
// coordinator (new port) under running sites.
import { readFileSync } from 'node:fs';
import { initCoordinator, startCoordinator, type RunningCoordinator } from '../../coordinator/service.ts';
import { issueJoinToken } from '../../coordinator/enrollment.ts';
import { parseJobSpec } from '../../coordinator/jobs/spec.ts';
import { adapterFiles } from '../../coordinator/publish/publisher.ts';
import { enrollSite } from '../../site-agent/enroll.ts';
import { createGrpcWire } from '../../site-agent/agent/grpc-wire.ts';
import type { FederationWire } from '../../site-agent/agent/wire.ts';
import { decodeSafetensorsF32 } from '../../shared/safetensors.ts';
import { flatten } from '../../shared/tensors.ts';
import { tempDir, rmDir } from '../coordinator/helpers.ts';
import { SLOWDOWN } from '../runner/limits.ts';

export type SecAggWire = Pick<FederationWire, 'secAgg'>;

/** qwen2-shaped, 2 layers, hidden 64: with r 8 on q/v the adapter has 3584 elements. */
export const SMALL_CONFIG = {
  architectures: ['Qwen2ForCausalLM'], model_type: 'qwen2', vocab_size: 64, hidden_size: 64, intermediate_size: 128,
  num_hidden_layers: 2, num_attention_heads: 4, num_key_value_heads: 2, max_position_embeddings: 128, rms_norm_eps: 1e-6,
  rope_theta: 10000, tie_word_embeddings: true,
};

export function secAggSpec(over: Record<string, unknown> = {}, privacy: Record<string, unknown> = {}) {
  return parseJobSpec({
    name: 'secagg-e2e',
    base_model: { id: 'tiny/qwen2', manifest_sha256: 'a'.repeat(64), config: SMALL_CONFIG },
    lora: { r: 8, alpha: 16, target_modules: ['q_proj', 'v_proj'], init_seed: 3 },
    rounds: 1,
    train: { local_steps: 1, learning_rate: 0.01 },
    min_sites: 3,
    max_sites: 4,
    // stage deadlines are shares of the round's: a busier machine (test/runner/limits.ts) gets longer
    round_deadline_s: Math.round(30 * SLOWDOWN),
    round_retries: 0,
    privacy: { secure_aggregation: true, ...privacy },
    ...over,
  }, 'secagg test spec');
}

export interface Site { id: string; dir: string; grpc: FederationWire; wire: SecAggWire }

export interface Federation {
  dataDir: string;
  coord: RunningCoordinator;
  sites: Site[];
  /** Stop the coordinator and start it again on the same data dir; sites' wires follow. */
  restart(): Promise<void>;
  heartbeat(): Promise<void>;
  close(): Promise<void>;
}

export async function startFederation(siteIds: string[]): Promise<Federation> {
  const dataDir = tempDir('secagg-coord');
  const dirs = [dataDir];
  const local = { host: '127.0.0.1', port: 0 };
  const init = await initCoordinator({ dataDir, config: { federation: local, enrollment: local, http: local, rounds: { tick_ms: 50 } } });
  let coord = await startCoordinator(dataDir, { logger: false });
  const sites: Site[] = [];
  for (const id of siteIds) {
    const dir = tempDir(`secagg-${id}`);
    dirs.push(dir);
    const { token } = issueJoinToken(coord.store.db, { siteId: id, ttlMs: 600_000, enrollEndpoint: coord.enrollmentEndpoint, caSha256: init.caSha256 });
    await enrollSite({ token, siteDir: dir });
    const site: Site = { id, dir, grpc: createGrpcWire(dir, coord.federationEndpoint), wire: { secAgg: (m) => site.grpc.secAgg(m) } };
    sites.push(site);
  }
  const fed: Federation = {
    dataDir,
    get coord() { return coord; },
    sites,
    async heartbeat() {
      await Promise.all(sites.map((s) => s.grpc.heartbeat({ agentVersion: 'test', state: 'idle', currentTaskId: '', trainingTokensPerS: 0 })));
    },
    async restart() {
      await coord.stop();
      for (const s of sites) s.grpc.close();
      coord = await startCoordinator(dataDir, { logger: false });
      for (const s of sites) s.grpc = createGrpcWire(s.dir, coord.federationEndpoint);
    },
    async close() {
      for (const s of sites) s.grpc.close();
      await coord.stop();
      for (const d of dirs) rmDir(d);
    },
  };
  await fed.heartbeat();
  return fed;
}

/** Resolve when the job's current round is `round` and open. */
export async function waitOpen(coord: () => RunningCoordinator, jobId: string, round: number, timeoutMs = 10_000): Promise<void> {
  const t0 = Date.now();
  for (;;) {
    const r = coord().store.currentRound(jobId);
    if (r && r.round === round && r.state === 'open') return;
    if (Date.now() - t0 > timeoutMs) throw new Error(`round ${round} of ${jobId} did not open (now ${r?.round}/${r?.state})`);
    await new Promise((res) => setTimeout(res, 20));
  }
}

/** A published version as a flat vector in the job's full layout, read from its file. */
export function versionFlat(coord: RunningCoordinator, jobId: string, version: number): Float32Array {
  const row = coord.store.adapterVersion(jobId, version)!;
  const file = adapterFiles(row).model;
  return flatten(decodeSafetensorsF32(readFileSync(file), file).tensors, coord.engine.jobInfo(jobId).layout.full);
}

/** A deterministic pseudo-random vector in [-scale, scale). */
export function randomDelta(n: number, seed: number, scale: number): Float32Array {
  let s = seed >>> 0 || 1;
  const v = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0;
    v[i] = ((s / 4294967296) * 2 - 1) * scale;
  }
  return v;
}

export function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** Pearson correlation of two equal-length numeric sequences. */
export function correlation(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = a.length;
  let ma = 0, mb = 0;
  for (let i = 0; i < n; i++) { ma += a[i]; mb += b[i]; }
  ma /= n; mb /= n;
  let sab = 0, saa = 0, sbb = 0;
  for (let i = 0; i < n; i++) {
    const x = a[i] - ma, y = b[i] - mb;
    sab += x * y; saa += x * x; sbb += y * y;
  }
  return sab / Math.sqrt(saa * sbb);
}

/** A barrier: `arrive()` resolves once `n` parties arrived (and `release` was not withheld). */
export function barrier(n: number): { arrive(): Promise<void>; all: Promise<void> } {
  let count = 0;
  let open!: () => void;
  const all = new Promise<void>((r) => (open = r));
  return { arrive() { if (++count === n) open(); return all; }, all };
}
