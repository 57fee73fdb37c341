// The site agent's main loop: keep an outbound connection to the coordinator (hospital
// firewalls allow nothing inbound), take tasks from its stream, enforce the site's policy,
// train locally, and send back only adapter numbers — recording each egress in the site's
// tamper-evident audit log.

import { mkdirSync, existsSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { randomUUID, createHash } from 'node:crypto';
import type Database from 'better-sqlite3';
import type { SiteConfig } from '../config.ts';
import { checkPolicy } from './policy.ts';
import { Backoff, sleep } from './backoff.ts';
import { createTrainer, type Trainer } from './trainers.ts';
import { buildUpdateTensors, l2Norm, assertFinite, encodeUpdate } from './update-payload.ts';
import { signUpdate } from '../../shared/update-signature.ts';
import { AuditLog } from '../../shared/audit.ts';
import { FedloraError, isFedloraError, fail } from '../../shared/errors.ts';
import type { FederationWire, WireTask } from './wire.ts';
import { SiteWorkspace } from './workspace.ts';
import { runSecAggSite } from './secagg-client.ts';
import { handleUploadLocal, handleCrossEval, reportTaskDone } from './cross-eval.ts';
import { flatten } from '../../shared/tensors.ts';
import { SiteOutbox, type OutboxEntry } from './outbox.ts';
import { deliverEntry, discardEntry, type DeliveryDeps } from './outbox-delivery.ts';
import type { AdapterWeights, LoraConfig, LoraTarget } from '../engine/types.ts';

export interface AgentLogger {
  info(obj: Record<string, unknown>, msg: string): void;
  warn(obj: Record<string, unknown>, msg: string): void;
  error(obj: Record<string, unknown>, msg: string): void;
}

export interface AgentStatus {
  state: 'starting' | 'connecting' | 'idle' | 'training' | 'uploading' | 'evaluating' | 'stopped';
  connected: boolean;
  currentTaskId: string;
  lastError: string | null;
  rounds: { jobId: string; round: number; status: string; at: string }[];
  trainingTokensPerSecond: number;
}

export interface SiteAgentDeps {
  siteDir: string;
  siteId: string;
  config: SiteConfig;
  db: Database.Database;
  wire: FederationWire;
  log: AgentLogger;
  trainer?: Trainer;
  agentVersion?: string;
}

export class SiteAgent {
  readonly status: AgentStatus = { state: 'starting', connected: false, currentTaskId: '', lastError: null, rounds: [], trainingTokensPerSecond: 0 };
  readonly audit: AuditLog;
  private readonly abort = new AbortController();
  private readonly trainer: Trainer;
  private readonly ws: SiteWorkspace;
  /** Updates recorded before their first byte is sent (resumed after a crash, never redone). */
  readonly outbox: SiteOutbox;
  private loops: Promise<void>[] = [];
  private taskChain: Promise<void> = Promise.resolve();
  private readonly seenTasks = new Set<string>();
  /** Tasks the coordinator sent again (after a reconnect) while we were still working on them. */
  private readonly resent = new Map<string, WireTask>();

  constructor(private readonly d: SiteAgentDeps) {
    this.audit = new AuditLog(d.db, 'site_audit');
    this.trainer = d.trainer ?? createTrainer(d.config.trainer);
    this.ws = new SiteWorkspace(d.siteDir, d.config, d.db, d.log);
    this.outbox = new SiteOutbox(d.db, d.siteDir);
  }

  start(): void {
    // First in the task chain: updates left pending by a previous run (killed mid-upload, or
    // before it saw the acknowledgement) are resumed or settled before any task runs.
    this.taskChain = this.taskChain.then(() => this.flushOutbox()).catch((e) => this.d.log.error({ err: (e as Error).message }, 'outbox flush failed'));
    this.loops.push(this.heartbeatLoop(), this.taskLoop());
  }

  private heartbeatFailed = false;
  private flushQueued = false;

  /** One more outbox flush in the task chain (after the task running now), if anything is pending. */
  private queueOutboxFlush(): void {
    if (this.flushQueued || this.outbox.pending().length === 0) return;
    this.flushQueued = true;
    this.taskChain = this.taskChain
      .then(() => {
        this.flushQueued = false;
        return this.flushOutbox();
      })
      .catch((e) => this.d.log.error({ err: (e as Error).message }, 'outbox flush failed'));
  }

  private get delivery(): DeliveryDeps {
    return { siteId: this.d.siteId, wire: this.d.wire, outbox: this.outbox, audit: this.audit, log: this.d.log };
  }

  /** Resume every pending update once: acknowledged ones get their training metrics reported;
   *  those the coordinator refuses for good are discarded (deliverEntry); the rest stay pending
   *  (coordinator unreachable: their task, if still open, resumes them when it is resent). */
  private async flushOutbox(): Promise<void> {
    const orphans = this.outbox.removeOrphans();
    if (orphans.length) this.d.log.warn({ files: orphans }, 'outbox: removed files that no pending update refers to');
    for (const e of this.outbox.pending()) {
      if (this.signal.aborted) return;
      const log = { job: e.jobId, round: e.round, task: e.taskId, update: e.updateId };
      this.d.log.info(log, 'outbox: resuming an update left pending by a previous run');
      try {
        this.status.state = 'uploading';
        await deliverEntry(this.delivery, e);
        await this.reportTrain(e).catch((err) => this.d.log.warn({ ...log, err: (err as Error).message }, 'training metrics of a resumed update not reported'));
      } catch (err) {
        const fe = isFedloraError(err) ? err : new FedloraError('FEDLORA_ERR_UNAVAILABLE', (err as Error).message);
        if (this.outbox.get(e.updateId)?.state === 'pending') this.d.log.warn({ ...log, code: fe.code, err: fe.message }, 'outbox: update kept pending; resumed later');
      } finally {
        this.status.state = 'idle';
      }
    }
  }

  /** The training summary of a round (kept with an outbox entry, so a resumed upload reports it too). */
  private async reportTrain(e: Pick<OutboxEntry, 'taskId' | 'jobId' | 'round'> & { info: Pick<OutboxEntry['info'], 'trainLoss' | 'tokensPerSecond' | 'numExamples'> }): Promise<void> {
    await this.report({ taskId: e.taskId, jobId: e.jobId, round: e.round }, 'train', [
      { kind: 'global', name: 'train_loss', value: e.info.trainLoss ?? NaN, count: e.info.numExamples },
      { kind: 'global', name: 'train_tokens_per_s', value: e.info.tokensPerSecond, count: 1 },
    ]);
  }

  async stop(): Promise<void> {
    this.abort.abort();
    this.d.wire.close();
    await Promise.allSettled(this.loops);
    await this.taskChain.catch(() => undefined);
    this.status.state = 'stopped';
  }

  private get signal(): AbortSignal {
    return this.abort.signal;
  }

  private async heartbeatLoop(): Promise<void> {
    while (!this.signal.aborted) {
      try {
        const r = await this.d.wire.heartbeat({
          agentVersion: this.d.agentVersion ?? '0.1.0',
          state: this.status.state,
          currentTaskId: this.status.currentTaskId,
          trainingTokensPerS: this.status.trainingTokensPerSecond,
        });
        this.status.connected = true;
        if (this.heartbeatFailed) {
          // Back after an outage (or after starting while the coordinator was unreachable):
          // retry updates still pending, whether or not their task is ever sent again.
          this.heartbeatFailed = false;
          this.queueOutboxFlush();
        }
        if (r.renewCertificate) {
          const rn = await this.d.wire.renewCertificate();
          if (rn.renewed) {
            this.audit.append(this.d.siteId, 'cert_renewed', this.d.siteId, { not_after: new Date(rn.notAfterUnixMs).toISOString() });
            this.d.log.info({ not_after: new Date(rn.notAfterUnixMs).toISOString() }, 'site certificate renewed');
          }
        }
        const skew = Math.abs(Date.now() - r.serverTimeUnixMs);
        if (skew > 60_000) this.d.log.warn({ skew_ms: skew }, 'clock skew with the coordinator is over a minute');
      } catch (e) {
        this.status.connected = false;
        this.heartbeatFailed = true;
        if (!this.signal.aborted) this.d.log.warn({ err: (e as Error).message }, 'heartbeat failed');
      }
      await sleep(this.d.config.network.heartbeat_interval_ms, this.signal);
    }
  }

  private async taskLoop(): Promise<void> {
    const backoff = new Backoff(this.d.config.network.reconnect_initial_ms, this.d.config.network.reconnect_max_ms);
    while (!this.signal.aborted) {
      this.status.state = this.status.currentTaskId ? this.status.state : 'connecting';
      try {
        await this.d.wire.streamTasks((task) => {
          backoff.reset();
          this.status.connected = true;
          if (!this.status.currentTaskId) this.status.state = 'idle';
          this.enqueue(task);
        }, this.signal);
      } catch (e) {
        if (this.signal.aborted) break;
        this.status.connected = false;
        this.status.lastError = (e as Error).message;
        this.d.log.warn({ err: (e as Error).message }, 'task stream ended; reconnecting');
      }
      if (this.signal.aborted) break;
      await sleep(backoff.next(), this.signal);
    }
  }

  /** Tasks run one at a time, in arrival order; a task seen again after a reconnect is not redone. */
  private enqueue(task: WireTask): void {
    if (task.kind === 'TASK_KIND_CANCEL') return;
    if (this.seenTasks.has(task.taskId)) {
      this.resent.set(task.taskId, task);
      return;
    }
    this.seenTasks.add(task.taskId);
    this.taskChain = this.taskChain.then(() => this.runTask(task)).catch(() => undefined);
  }

  private async runTask(task: WireTask): Promise<void> {
    if (this.signal.aborted) return;
    const log = { job: task.jobId, round: task.round, task: task.taskId };
    this.status.currentTaskId = task.taskId;
    this.audit.append(this.d.siteId, 'task_received', `${task.jobId}/${task.round}`, { task_id: task.taskId, kind: task.kind });
    try {
      if (task.kind === 'TASK_KIND_TRAIN') await this.trainTask(task);
      else if (task.kind === 'TASK_KIND_EVALUATE') await this.evaluateTask(task);
      else if (task.kind === 'TASK_KIND_UPLOAD_LOCAL') await handleUploadLocal(this.crossCtx(task), task);
      else if (task.kind === 'TASK_KIND_CROSS_EVAL') await handleCrossEval(this.crossCtx(task), task);
      else this.d.log.warn({ ...log, kind: task.kind }, 'task kind not handled by this agent version; ignored');
      this.status.rounds.push({ jobId: task.jobId, round: task.round, status: 'done', at: new Date().toISOString() });
    } catch (e) {
      const fe = isFedloraError(e) ? e : new FedloraError('FEDLORA_ERR_TRAINING', (e as Error).message);
      this.status.lastError = fe.toString();
      this.status.rounds.push({ jobId: task.jobId, round: task.round, status: `failed: ${fe.code}`, at: new Date().toISOString() });
      this.d.log.error({ ...log, code: fe.code, err: fe.message }, 'task failed');
      if (fe.code === 'FEDLORA_ERR_UNAVAILABLE' || this.signal.aborted) {
        // The connection broke (or we are stopping), not the task: forget it, so that when the
        // coordinator sends it again after the reconnect it is done then.
        this.seenTasks.delete(task.taskId);
        const again = this.resent.get(task.taskId);
        this.resent.delete(task.taskId);
        if (again && !this.signal.aborted) this.enqueue(again);
      } else {
        // A task that failed on this side is declined, so the coordinator does not wait for it
        // (nor re-send an EVALUATE / cross-eval task each time the site reconnects).
        await this.d.wire.declineTask(task.taskId, fe.message, fe.code).catch(() => this.seenTasks.delete(task.taskId));
      }
    } finally {
      if (this.seenTasks.has(task.taskId)) this.resent.delete(task.taskId);
      this.status.currentTaskId = '';
      this.status.state = 'idle';
    }
  }

  /** What the cross-evaluation handlers need (consent is checked there, from the site policy). */
  private crossCtx(task: WireTask) {
    return {
      siteId: this.d.siteId,
      config: this.d.config,
      wire: this.d.wire,
      ws: this.ws,
      audit: this.audit,
      log: this.d.log,
      privateKeyPem: readFileSync(join(this.d.siteDir, 'site.key'), 'utf8'),
      workDir: this.ws.taskDir(task.taskId),
    };
  }

  private loraOf(task: WireTask): LoraConfig {
    return {
      r: task.lora.r,
      alpha: task.lora.alpha,
      targets: task.lora.targetModules as LoraTarget[],
      dropout: task.lora.dropout,
      useRslora: task.lora.useRslora,
      freezeA: task.lora.freezeA,
      initSeed: Number(task.lora.initSeed),
    };
  }

  private async trainTask(task: WireTask): Promise<void> {
    const log = { job: task.jobId, round: task.round, task: task.taskId };
    // 0. A task sent again (after a restart or reconnect) whose update is already recorded:
    //    never trained twice. Pending -> resume the same update; acknowledged -> nothing to do.
    const prior = this.outbox.forTask(task.taskId);
    if (prior?.state === 'acknowledged') {
      this.d.log.info({ ...log, update: prior.updateId }, 'task already submitted (update acknowledged); skipped');
      rmSync(this.ws.taskDir(task.taskId), { recursive: true, force: true });
      return;
    }
    if (prior?.state === 'pending' && existsSync(prior.file)) {
      this.d.log.info({ ...log, update: prior.updateId }, 'task resent with its update pending: resuming the upload, not retraining');
      this.status.state = 'uploading';
      await deliverEntry(this.delivery, prior);
      await this.reportTrain(prior);
      rmSync(this.ws.taskDir(task.taskId), { recursive: true, force: true });
      return;
    }
    if (prior?.state === 'pending') discardEntry(this.delivery, prior, 'FEDLORA_ERR_IO', `${prior.file} is missing; the task is trained again`);
    // 1. The site's own policy first: nothing is computed for a task it would refuse.
    const decision = checkPolicy(this.d.config.policy, {
      dpEnabled: task.privacy.dpEnabled,
      epsilonAfterRound: task.privacy.epsilonAfterRound,
      secureAggregation: task.privacy.secureAggregation,
      minSites: task.privacy.minSites,
      selectedSites: task.selectedSites,
    });
    if (!decision.ok) {
      this.d.log.warn({ ...log, reason: decision.reason }, 'task declined by site policy');
      this.audit.append(this.d.siteId, 'task_declined', `${task.jobId}/${task.round}`, { task_id: task.taskId, code: decision.code, reason: decision.reason });
      await this.d.wire.declineTask(task.taskId, decision.reason, decision.code);
      return;
    }
    // 2. The base model must be the job's, byte for byte.
    const manifest = await this.ws.modelManifestSha256();
    if (task.baseModel.manifestSha256 && manifest !== task.baseModel.manifestSha256) {
      throw fail('FEDLORA_ERR_MODEL_MISMATCH', `the job's base model ${task.baseModel.id} has manifest ${task.baseModel.manifestSha256.slice(0, 12)}…; the local copy at ${this.d.config.model.path} has ${manifest.slice(0, 12)}…`);
    }
    const lora = this.loraOf(task);
    this.status.state = 'training';
    // 3. The global adapter, verified (hash + coordinator signature) before use.
    const global = await this.ws.fetchGlobal(this.d.wire, task.jobId, task.globalAdapter.version, task.globalAdapter.sha256);
    // 4. Evaluate the global adapter this round starts from (= the result of round version).
    await this.evaluateAndReport(task, 'global', global, lora, task.globalAdapter.version);
    // 5. Train from the global adapter on local data.
    const data = await this.ws.trainingData();
    const work = this.ws.taskDir(task.taskId);
    const trainSpec = {
      steps: task.train.localSteps,
      epochs: task.train.localEpochs,
      learningRate: task.train.learningRate,
      optimizer: (task.train.optimizer || 'adamw') as 'adamw' | 'sgd',
      batchTokens: task.train.batchTokens,
      seed: Number(task.train.seed) + task.round,
      proxMu: task.train.proxMu,
      weightDecay: task.train.weightDecay,
      warmupSteps: task.train.warmupSteps,
      maxGradNorm: task.train.maxGradNorm,
    };
    const common = {
      modelDir: this.d.config.model.path,
      baseModelId: task.baseModel.id,
      device: this.d.config.model.device,
      lora,
      train: trainSpec,
      trainFile: data.trainFile,
      maxSeqLen: this.d.config.training.max_seq_len,
      signal: this.signal,
      onProgress: (ev: { tokensPerSecond: number }) => {
        this.status.trainingTokensPerSecond = ev.tokensPerSecond;
      },
    };
    const result = await this.trainer.train({ ...common, workDir: join(work, 'global'), initAdapter: global });
    assertFinite(result.adapter, `local training of round ${task.round}`);
    // 6. The update: a delta (or weights), only B with a frozen A.
    const payloadKind = task.payloadKind === 'weights' ? 'weights' : 'delta';
    const tensors = buildUpdateTensors(global, result.adapter, payloadKind, lora.freezeA);
    const norm = l2Norm(tensors);
    if (task.privacy.secureAggregation) {
      // Secure aggregation: only a masked vector leaves the site; the coordinator unmasks the sum.
      this.status.state = 'uploading';
      const r = await runSecAggSite(this.d.wire, {
        jobId: task.jobId,
        round: task.round,
        siteId: this.d.siteId,
        update: flatten(tensors),
        numExamples: result.numExamples,
        deadlineUnixMs: Number(task.deadlineUnixMs),
        signal: this.signal,
      });
      this.audit.append(this.d.siteId, 'egress', `${task.jobId}/${task.round}`, {
        what: 'masked adapter update (secure aggregation)',
        bytes: r.maskedBytes,
        sha256: r.maskedSha256,
        l2_norm: r.l2Norm,
        l2_norm_clipped: r.l2Clipped,
        num_examples: result.numExamples,
        to: 'coordinator',
      });
      this.d.log.info({ ...log, bytes: r.maskedBytes, survivors: r.survivors.length }, 'masked update sent (secure aggregation)');
    } else {
      //    Recorded in the outbox (bytes + signed header) before the first byte is sent, so an
      //    interrupted upload resumes under the same update id instead of retraining.
      const updateId = randomUUID();
      const bytes = encodeUpdate(tensors, { job_id: task.jobId, round: String(task.round), payload_kind: payloadKind });
      const sha256 = createHash('sha256').update(bytes).digest('hex');
      const signed = { updateId, jobId: task.jobId, round: task.round, baseVersion: task.globalAdapter.version, sha256, numExamples: result.numExamples };
      // read at each use: a renewed certificate comes with a new key
      const signature = signUpdate(readFileSync(join(this.d.siteDir, 'site.key'), 'utf8'), signed);
      const entry = this.outbox.put(
        {
          updateId,
          taskId: task.taskId,
          jobId: task.jobId,
          round: task.round,
          baseVersion: task.globalAdapter.version,
          totalBytes: bytes.length,
          sha256,
          chunkSize: this.d.config.network.chunk_size,
          numExamples: result.numExamples,
          payloadKind,
          signature,
          updateNorm: norm,
          clipped: false,
          metadataJson: Buffer.from(JSON.stringify({ final_loss: result.lossPerStep.at(-1) ?? null, tokens_per_s: result.tokensPerSecond })),
        },
        bytes,
        { trainLoss: result.lossPerStep.at(-1) ?? null, tokensPerSecond: result.tokensPerSecond, numExamples: result.numExamples, payloadKind, tensors: tensors.size, l2Norm: norm },
      );
      this.status.state = 'uploading';
      await deliverEntry(this.delivery, entry);
    }
    await this.reportTrain({ ...task, info: { trainLoss: result.lossPerStep.at(-1) ?? null, tokensPerSecond: result.tokensPerSecond, numExamples: result.numExamples } });
    // 7. The local-only baseline: the same training on this site's data alone, kept current.
    if (this.d.config.training.local_baseline) {
      this.status.state = 'training';
      const prev = this.ws.loadLocalBaseline(task.jobId);
      const local = await this.trainer.train({ ...common, workDir: join(work, 'local'), initAdapter: prev ?? this.ws.initialAdapterLike(global, lora) });
      assertFinite(local.adapter, 'local-only baseline');
      this.ws.saveLocalBaseline(task.jobId, local.adapter, lora, task.baseModel.id);
      await this.evaluateAndReport(task, 'local', local.adapter, lora, task.round);
    }
    rmSync(work, { recursive: true, force: true });
  }

  private async evaluateTask(task: WireTask): Promise<void> {
    const lora = this.loraOf(task);
    this.status.state = 'evaluating';
    const global = await this.ws.fetchGlobal(this.d.wire, task.jobId, task.globalAdapter.version, task.globalAdapter.sha256);
    await this.evaluateAndReport(task, 'global', global, lora, task.globalAdapter.version);
    if (task.evaluateBase) await this.evaluateAndReport(task, 'base', null, lora, task.globalAdapter.version);
    await reportTaskDone(this.d.wire, task);
  }

  /** Evaluate on the held-out set; only aggregate numbers leave the site (withheld if too few items). */
  private async evaluateAndReport(task: WireTask, kind: 'global' | 'local' | 'base', adapter: AdapterWeights | null, lora: LoraConfig, version: number): Promise<void> {
    this.status.state = 'evaluating';
    const m = await this.ws.evaluate(adapter, lora);
    const metrics = m.map((x) => ({ kind, name: x.name, value: x.value, count: x.count, adapterVersion: version }));
    await this.report({ ...task, round: kind === 'global' ? version : task.round }, 'eval', metrics);
  }

  private async report(task: Pick<WireTask, 'taskId' | 'jobId' | 'round'>, phase: string, metrics: { kind: string; name: string; value: number; count: number; adapterVersion?: number }[]): Promise<void> {
    const clean = metrics.filter((m) => Number.isFinite(m.value));
    if (clean.length === 0) return;
    await this.d.wire.reportMetrics({
      taskId: task.taskId,
      jobId: task.jobId,
      round: task.round,
      phase,
      metrics: clean.map((m) => ({ kind: m.kind, name: m.name, value: m.value, count: m.count, modelOwner: '', adapterVersion: m.adapterVersion ?? task.round })),
    });
    this.audit.append(this.d.siteId, 'egress', `${task.jobId}/${task.round}`, { what: 'aggregate metrics', phase, metrics: clean.map((m) => `${m.kind}.${m.name}`), to: 'coordinator' });
  }
}

export function readJsonIfExists<T>(file: string): T | null {
  return existsSync(file) ? (JSON.parse(readFileSync(file, 'utf8')) as T) : null;
}

export function ensureDir(d: string): string {
  mkdirSync(d, { recursive: true });
  return d;
}
