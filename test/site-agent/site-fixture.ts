// One site in this process, with real parts: a tiny llama checkpoint (byte tokenizer), synthetic
// records ingested and de-identified into a real SQLite site store, a real P-256 site key, and the
// agent's own workspace, outbox and audit log. The coordinator is a scripted FederationWire that
// serves a PEFT global adapter (with a manifest naming its sha256), keeps every upload's bytes,
// and records metrics and declines. Used by the round-pipeline and external-contract tests.
import { generateKeyPairSync, createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type Database from 'better-sqlite3-multiple-ciphers';
import { openSiteDb } from '../../site-agent/site-db.ts';
import { initTinyModel, computeModelManifest, initLoraAdapter, type TinyModelInfo } from '../../site-agent/engine/index.ts';
import { openSiteDataStore, ingestFiles, defaultDataConfig, generateSites, loadOrCreateSiteKey } from '../../site-agent/data/index.ts';
import { writePeftAdapter } from '../../shared/lora/peft.ts';
import { AuditLog } from '../../shared/audit.ts';
import { parseSiteConfig, type SiteConfig } from '../../site-agent/config.ts';
import { SiteOutbox } from '../../site-agent/agent/outbox.ts';
import { SiteWorkspace } from '../../site-agent/agent/workspace.ts';
import { EngineEvaluator, type Evaluator } from '../../site-agent/agent/evaluation.ts';
import type { TaskDeps, AgentLogger } from '../../site-agent/agent/task-context.ts';
import type { LocalTrainRequest, LocalTrainResult, Trainer } from '../../site-agent/agent/trainers.ts';
import type { FederationWire, MetricOut, SubmitResult, UpdateHeaderOut, WireTask } from '../../site-agent/agent/wire.ts';
import type { AdapterWeights, LoraConfig } from '../../shared/lora/types.ts';
import type { GlobalEvaluatedHook, GlobalVerifiedHook } from '../../site-agent/agent/global-adapter.ts';

export const JOB = 'job-fixture';
export const LORA: LoraConfig = { r: 2, alpha: 4, targets: ['q_proj', 'v_proj'], dropout: 0, useRslora: false, freezeA: false, initSeed: 5 };

export interface RecordingLog extends AgentLogger {
  lines: { level: string; obj: Record<string, unknown>; msg: string }[];
}

export function recordingLog(): RecordingLog {
  const lines: RecordingLog['lines'] = [];
  return {
    lines,
    info: (obj, msg) => void lines.push({ level: 'info', obj, msg }),
    warn: (obj, msg) => void lines.push({ level: 'warn', obj, msg }),
    error: (obj, msg) => void lines.push({ level: 'error', obj, msg }),
  };
}

/** The coordinator side, scripted: what the site fetched, sent, reported and declined. */
export interface ScriptedCoordinator {
  wire: FederationWire;
  fetches: { jobId: string; version: number }[];
  uploads: { header: UpdateHeaderOut; bytes: Buffer }[];
  metrics: { taskId: string; round: number; phase: string; metrics: MetricOut[] }[];
  declined: { taskId: string; reason: string; code: string }[];
  /** The global adapter it serves (version 0 of the job: the PEFT init from LORA.initSeed). */
  global: AdapterWeights;
}

export interface SiteFixture {
  dir: string;
  modelDir: string;
  model: TinyModelInfo;
  db: Database.Database;
  config: SiteConfig;
  coordinator: ScriptedCoordinator;
  log: RecordingLog;
  /** TaskDeps as the SiteAgent builds them, with this fixture's parts. */
  deps(o?: { trainer?: Trainer; evaluator?: Evaluator; onGlobalVerified?: GlobalVerifiedHook[]; onGlobalEvaluated?: GlobalEvaluatedHook }): TaskDeps;
  task(over?: Partial<WireTask>): WireTask;
  cleanup(): void;
}

export async function siteFixture(configPatch: Record<string, unknown> = {}): Promise<SiteFixture> {
  const dir = mkdtempSync(join(tmpdir(), 'fedlora-site-fixture-'));
  const modelDir = join(dir, 'model');
  const model = initTinyModel({ arch: 'llama', out: modelDir, seed: 3, layers: 1, hidden: 32, heads: 2, kvHeads: 1, intermediate: 64, tokenizer: 'byte' });
  const manifest = computeModelManifest(modelDir).sha256;
  const [synth] = generateSites({ sites: 1, records: 60, lang: 'en', skew: 0.5, seed: 7, format: 'jsonl', out: join(dir, 'export') });
  const db = openSiteDb(dir);
  await ingestFiles(openSiteDataStore(db), [synth.file!], { format: 'jsonl', config: defaultDataConfig(), key: loadOrCreateSiteKey(dir) });
  const { privateKey } = generateKeyPairSync('ec', { namedCurve: 'prime256v1' });
  writeFileSync(join(dir, 'site.key'), privateKey.export({ type: 'pkcs8', format: 'pem' }), { mode: 0o600 });
  const config = parseSiteConfig({
    model: { path: modelDir },
    policy: { min_sites_per_aggregation: 1, allowed_fields: ['department', 'chiefComplaint', 'diagnosis'] },
    training: { local_baseline: false, max_seq_len: 1024, max_train_examples: 8 },
    evaluation: { min_items: 2, max_items: 4, generate_items: 2 },
    ...configPatch,
  });
  const log = recordingLog();
  const global = initLoraAdapter(model.config, LORA);
  const coordinator = scriptedCoordinator(global, dir);
  const fixture: SiteFixture = {
    dir, modelDir, model, db, config, coordinator, log,
    deps(o = {}) {
      const workspace = new SiteWorkspace(dir, config, db, log, (m) => o.evaluator ?? new EngineEvaluator(m, config.model.device, config.model.quantize));
      return {
        siteId: 'hospital-fixture', config, wire: coordinator.wire, log, audit: new AuditLog(db, 'site_audit'), outbox: new SiteOutbox(db, dir), workspace,
        trainer: o.trainer ?? { kind: 'unused', train: async () => { throw new Error('no trainer given to the fixture'); } },
        status: { state: 'idle', trainingTokensPerSecond: 0 }, signal: new AbortController().signal,
        siteKeyPem: () => readFileSync(join(dir, 'site.key'), 'utf8'), onGlobalVerified: o.onGlobalVerified ?? [], onGlobalEvaluated: o.onGlobalEvaluated,
      };
    },
    task(over = {}) {
      return {
        taskId: `task-${Math.random().toString(36).slice(2, 8)}`, jobId: JOB, round: 1, kind: 'TASK_KIND_TRAIN',
        baseModel: { id: 'fedlora/tiny-llama', manifestSha256: manifest },
        lora: { r: LORA.r, alpha: LORA.alpha, targetModules: LORA.targets, dropout: 0, useRslora: false, freezeA: false, initSeed: LORA.initSeed },
        train: { localSteps: 2, localEpochs: 0, learningRate: 5e-3, optimizer: 'adamw', batchTokens: 256, seed: 11, proxMu: 0, weightDecay: 0, warmupSteps: 0, maxGradNorm: 1 },
        globalAdapter: { jobId: JOB, version: 0, sha256: '', sizeBytes: 0, manifestSha256: manifest },
        privacy: { dpEnabled: false, clipNorm: 0, noiseMultiplier: 0, epsilonAfterRound: 0, delta: 0, secureAggregation: false, minSites: 1, adaptiveClipping: false, clippedBitNoise: 0 },
        deadlineUnixMs: Date.now() + 600_000, selectedSites: 1, aggregation: 'fedavg', payloadKind: 'delta', strategyConfig: {}, evaluateBase: false,
        ...over,
      };
    },
    cleanup() {
      db.close();
      rmSync(dir, { recursive: true, force: true });
    },
  };
  return fixture;
}

function scriptedCoordinator(global: AdapterWeights, siteDir: string): ScriptedCoordinator {
  const c: Omit<ScriptedCoordinator, 'wire'> = { fetches: [], uploads: [], metrics: [], declined: [], global };
  const wire: FederationWire = {
    heartbeat: async () => ({ serverTimeUnixMs: Date.now(), renewCertificate: false }),
    streamTasks: (_onTask, signal) => new Promise<void>((resolve) => signal.addEventListener('abort', () => resolve())),
    declineTask: async (taskId, reason, code) => void c.declined.push({ taskId, reason, code }),
    fetchAdapter: async (req, outDir) => {
      c.fetches.push({ jobId: req.jobId, version: req.version });
      mkdirSync(outDir, { recursive: true });
      writePeftAdapter(outDir, global, { r: LORA.r, alpha: LORA.alpha, targets: LORA.targets, dropout: 0, useRslora: false, baseModel: 'fedlora/tiny-llama' });
      const adapterFile = join(outDir, 'adapter_model.safetensors');
      const manifestJson = Buffer.from(JSON.stringify({ adapter_sha256: createHash('sha256').update(readFileSync(adapterFile)).digest('hex') }));
      return { adapterFile, adapterConfigJson: readFileSync(join(outDir, 'adapter_config.json')), manifestJson, signature: Buffer.alloc(0) };
    },
    submitUpdate: async (header, file): Promise<SubmitResult> => {
      const bytes = readFileSync(file);
      c.uploads.push({ header, bytes });
      return { updateId: header.updateId, receivedBytes: bytes.length, complete: true, sha256: createHash('sha256').update(bytes).digest('hex') };
    },
    reportMetrics: async (r) => void c.metrics.push({ taskId: r.taskId, round: r.round, phase: r.phase, metrics: r.metrics }),
    renewCertificate: async () => ({ renewed: false, notAfterUnixMs: 0 }),
    secAgg: async () => { throw new Error(`secure aggregation is not scripted (site ${siteDir})`); },
    close: () => undefined,
  };
  return { ...c, wire };
}

/** A stand-in trainer that adds `step` (a number, or one chosen per request) to every lora_B
 *  value of the adapter it starts from, recording each request; `report` fills the rest of
 *  the result (default: 8 examples, one step at loss 2.5, 1000 tokens/s). */
export function shiftingTrainer(step: number | ((req: LocalTrainRequest) => number), report: (req: LocalTrainRequest) => Omit<LocalTrainResult, 'adapter'> = () => ({ numExamples: 8, lossPerStep: [2.5], tokensPerSecond: 1000 })) {
  const requests: LocalTrainRequest[] = [];
  const trainer: Trainer = {
    kind: 'shift',
    async train(req) {
      requests.push(req);
      const by = typeof step === 'number' ? step : step(req);
      const adapter: AdapterWeights = new Map([...req.initAdapter!].map(([k, t]) => [k, { shape: t.shape, data: t.data.map((v) => (k.includes('.lora_B.') ? v + by : v)) }]));
      return { adapter, ...report(req) };
    },
  };
  return { trainer, requests };
}
