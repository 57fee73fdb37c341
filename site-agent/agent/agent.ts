// The site agent's main loop: keep an outbound connection to the coordinator (hospital
// firewalls allow nothing inbound), take tasks from its stream and run them one at a time:
// a TRAIN task is the pipeline of train-round.ts, EVALUATE is evaluate-task.ts, the cross-site
// evaluation tasks are cross-eval.ts. Updates left pending by a previous run are resumed first.
// Every egress is recorded in the site's tamper-evident audit log (by the step that sends it).

import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type Database from 'better-sqlite3-multiple-ciphers';
import type { SiteConfig } from '../config.ts';
import { Backoff, sleep } from './backoff.ts';
import { createTrainer, type Trainer } from './trainers.ts';
import { AuditLog } from '../../shared/audit.ts';
import { FedloraError, isFedloraError } from '../../shared/errors.ts';
import type { FederationWire, WireTask } from './wire.ts';
import { sharePolicyToWire } from '../../shared/metrics-sharing.ts';
import { SiteWorkspace } from './workspace.ts';
import type { Evaluator } from './evaluation.ts';
import { createEvaluator } from './eval-command.ts';
import { handleUploadLocal, handleCrossEval, type CrossEvalContext } from './cross-eval.ts';
import { SiteOutbox } from './outbox.ts';
import { deliverEntry } from './outbox-delivery.ts';
import { reportTraining } from './metrics-report.ts';
import { runTrainRound } from './train-round.ts';
import { runEvaluateTask } from './evaluate-task.ts';
import { runExamTask } from './exam-task.ts';
import type { GlobalEvaluatedHook, GlobalVerifiedHook } from './global-adapter.ts';
import { dataRevision } from '../data/dataset/periods.ts';
import { taskLogFields, type AgentLogger, type AgentStatus, type TaskDeps } from './task-context.ts';
import { reviewEgress } from '../serve/review/egress.ts';

export type { AgentLogger, AgentStatus };

export interface SiteAgentDeps {
  siteDir: string;
  siteId: string;
  config: SiteConfig;
  db: Database.Database;
  wire: FederationWire;
  log: AgentLogger;
  /** Default: from config.trainer. */
  trainer?: Trainer;
  /** Default: from config.evaluator. */
  evaluator?: Evaluator;
  /** Run once for each newly verified global adapter version (global-adapter.ts). */
  onGlobalVerified?: GlobalVerifiedHook[];
  /** Called after a verified global version is evaluated here (the assistant's release gate). */
  onGlobalEvaluated?: GlobalEvaluatedHook;
  agentVersion?: string;
}

export class SiteAgent {
  readonly status: AgentStatus = { state: 'starting', connected: false, currentTaskId: '', lastError: null, rounds: [], trainingTokensPerSecond: 0 };
  readonly audit: AuditLog;
  /** Updates recorded before their first byte is sent (resumed after a crash, never redone). */
  readonly outbox: SiteOutbox;
  private readonly abort = new AbortController();
  private readonly config: SiteConfig;
  private readonly wire: FederationWire;
  private readonly log: AgentLogger;
  private readonly agentVersion: string;
  /** What every task's work is given (task-context.ts). */
  private readonly deps: TaskDeps;
  private loops: Promise<void>[] = [];
  private taskChain: Promise<void> = Promise.resolve();
  private readonly seenTasks = new Set<string>();
  /** Tasks the coordinator sent again (after a reconnect) while we were still working on them. */
  private readonly resent = new Map<string, WireTask>();
  private heartbeatFailed = false;
  private readonly db: Database.Database;
  private flushQueued = false;

  constructor(parts: SiteAgentDeps) {
    this.config = parts.config;
    this.wire = parts.wire;
    this.log = parts.log;
    this.agentVersion = parts.agentVersion ?? '0.1.0';
    this.db = parts.db;
    this.audit = new AuditLog(parts.db, 'site_audit');
    this.outbox = new SiteOutbox(parts.db, parts.siteDir);
    const workspace = new SiteWorkspace(parts.siteDir, parts.config, parts.db, parts.log, (model) => parts.evaluator ?? createEvaluator(parts.config, parts.siteDir, model, this.abort.signal));
    this.deps = {
      siteId: parts.siteId,
      config: parts.config,
      wire: parts.wire,
      log: parts.log,
      audit: this.audit,
      outbox: this.outbox,
      workspace,
      trainer: parts.trainer ?? createTrainer(parts.config.trainer),
      status: this.status,
      signal: this.abort.signal,
      siteKeyPem: () => readFileSync(join(parts.siteDir, 'site.key'), 'utf8'),
      onGlobalVerified: parts.onGlobalVerified ?? [],
      onGlobalEvaluated: parts.onGlobalEvaluated,
      reviewEgress: reviewEgress(parts.db, parts.config.evaluation.min_items),
    };
  }

  start(): void {
    // First in the task chain: updates left pending by a previous run (killed mid-upload, or
    // before it saw the acknowledgement) are resumed or settled before any task runs.
    this.taskChain = this.taskChain.then(() => this.flushOutbox()).catch((e) => this.log.error({ err: (e as Error).message }, 'outbox flush failed'));
    this.loops.push(this.heartbeatLoop(), this.taskLoop());
  }

  async stop(): Promise<void> {
    this.abort.abort();
    this.wire.close();
    await Promise.allSettled(this.loops);
    await this.taskChain.catch(() => undefined);
    this.status.state = 'stopped';
  }

  private get signal(): AbortSignal {
    return this.abort.signal;
  }

  /** One more outbox flush in the task chain (after the task running now), if anything is pending. */
  private queueOutboxFlush(): void {
    if (this.flushQueued || this.outbox.pending().length === 0) return;
    this.flushQueued = true;
    this.taskChain = this.taskChain
      .then(() => {
        this.flushQueued = false;
        return this.flushOutbox();
      })
      .catch((e) => this.log.error({ err: (e as Error).message }, 'outbox flush failed'));
  }

  /** Resume every pending update once: acknowledged ones get their training metrics reported;
   *  those the coordinator refuses for good are discarded (deliverEntry); the rest stay pending
   *  (coordinator unreachable: their task, if still open, resumes them when it is resent). */
  private async flushOutbox(): Promise<void> {
    const orphans = this.outbox.removeOrphans();
    if (orphans.length) this.log.warn({ files: orphans }, 'outbox: removed files that no pending update refers to');
    for (const e of this.outbox.pending()) {
      if (this.signal.aborted) return;
      const log = { job: e.jobId, round: e.round, task: e.taskId, update: e.updateId };
      this.log.info(log, 'outbox: resuming an update left pending by a previous run');
      try {
        this.status.state = 'uploading';
        await deliverEntry(this.deps, e);
        await reportTraining(this.deps, e).catch((err) => this.log.warn({ ...log, err: (err as Error).message }, 'training metrics of a resumed update not reported'));
      } catch (err) {
        const fe = isFedloraError(err) ? err : new FedloraError('FEDLORA_ERR_UNAVAILABLE', (err as Error).message);
        if (this.outbox.get(e.updateId)?.state === 'pending') this.log.warn({ ...log, code: fe.code, err: fe.message }, 'outbox: update kept pending; resumed later');
      } finally {
        this.status.state = 'idle';
      }
    }
  }

  private async heartbeatLoop(): Promise<void> {
    while (!this.signal.aborted) {
      try {
        const r = await this.wire.heartbeat({
          agentVersion: this.agentVersion,
          state: this.status.state,
          currentTaskId: this.status.currentTaskId,
          trainingTokensPerS: this.status.trainingTokensPerSecond,
          shareSiteMetrics: sharePolicyToWire(this.config.policy.share_site_metrics),
          dataRevision: dataRevision(this.db),
        });
        this.status.connected = true;
        if (this.heartbeatFailed) {
          // Back after an outage (or after starting while the coordinator was unreachable):
          // retry updates still pending, whether or not their task is ever sent again.
          this.heartbeatFailed = false;
          this.queueOutboxFlush();
        }
        if (r.renewCertificate) {
          const rn = await this.wire.renewCertificate();
          if (rn.renewed) {
            const notAfter = new Date(rn.notAfterUnixMs).toISOString();
            this.audit.append(this.deps.siteId, 'cert_renewed', this.deps.siteId, { not_after: notAfter });
            this.log.info({ not_after: notAfter }, 'site certificate renewed');
          }
        }
        const skew = Math.abs(Date.now() - r.serverTimeUnixMs);
        if (skew > 60_000) this.log.warn({ skew_ms: skew }, 'clock skew with the coordinator is over a minute');
      } catch (e) {
        this.status.connected = false;
        this.heartbeatFailed = true;
        if (!this.signal.aborted) this.log.warn({ err: (e as Error).message }, 'heartbeat failed');
      }
      await sleep(this.config.network.heartbeat_interval_ms, this.signal);
    }
  }

  private async taskLoop(): Promise<void> {
    const backoff = new Backoff(this.config.network.reconnect_initial_ms, this.config.network.reconnect_max_ms);
    while (!this.signal.aborted) {
      this.status.state = this.status.currentTaskId ? this.status.state : 'connecting';
      try {
        await this.wire.streamTasks((task) => {
          backoff.reset();
          this.status.connected = true;
          if (!this.status.currentTaskId) this.status.state = 'idle';
          this.enqueue(task);
        }, this.signal);
      } catch (e) {
        if (this.signal.aborted) break;
        this.status.connected = false;
        this.status.lastError = (e as Error).message;
        this.log.warn({ err: (e as Error).message }, 'task stream ended; reconnecting');
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
    const log = taskLogFields(task);
    this.status.currentTaskId = task.taskId;
    this.audit.append(this.deps.siteId, 'task_received', `${task.jobId}/${task.round}`, { task_id: task.taskId, kind: task.kind });
    try {
      if (task.kind === 'TASK_KIND_TRAIN') await runTrainRound(this.deps, task);
      else if (task.kind === 'TASK_KIND_EVALUATE') await runEvaluateTask(this.deps, task);
      else if (task.kind === 'TASK_KIND_UPLOAD_LOCAL') await handleUploadLocal(this.crossEvalContext(task), task);
      else if (task.kind === 'TASK_KIND_CROSS_EVAL') await handleCrossEval(this.crossEvalContext(task), task);
      else if (task.kind === 'TASK_KIND_EXAM') await runExamTask(this.deps, task);
      else this.log.warn({ ...log, kind: task.kind }, 'task kind not handled by this agent version; ignored');
      this.status.rounds.push({ jobId: task.jobId, round: task.round, status: 'done', at: new Date().toISOString() });
    } catch (e) {
      const fe = isFedloraError(e) ? e : new FedloraError('FEDLORA_ERR_TRAINING', (e as Error).message);
      this.status.lastError = fe.toString();
      this.status.rounds.push({ jobId: task.jobId, round: task.round, status: `failed: ${fe.code}`, at: new Date().toISOString() });
      this.log.error({ ...log, code: fe.code, err: fe.message }, 'task failed');
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
        await this.wire.declineTask(task.taskId, fe.message, fe.code).catch(() => this.seenTasks.delete(task.taskId));
      }
    } finally {
      if (this.seenTasks.has(task.taskId)) this.resent.delete(task.taskId);
      this.status.currentTaskId = '';
      this.status.state = 'idle';
    }
  }

  /** What the cross-evaluation handlers need (consent is checked there, from the site policy). */
  private crossEvalContext(task: WireTask): CrossEvalContext {
    const { siteId, config, wire, workspace, audit, log } = this.deps;
    return { siteId, config, wire, ws: workspace, audit, log, privateKeyPem: this.deps.siteKeyPem(), workDir: workspace.taskDir(task.taskId) };
  }
}
