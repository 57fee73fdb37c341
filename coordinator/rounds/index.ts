// The coordinator's rounds, assembled from their parts with the dependencies each needs:
//   jobs      JobService (jobs/job-service.ts): submit, cancel, spec / layout / strategy per job
//   machine   RoundStateMachine (state-machine.ts): tick, open -> collect -> aggregate -> publish
//   collectors  plain uploads (plain-collector.ts) or secure aggregation (secagg/collector.ts)
//   open-round.ts, aggregate-publish.ts, task-messages.ts, declines.ts, metrics/site-reports.ts
//   schedule.ts  completed jobs with a due schedule and new records at the sites go on
// RoundEngine is the small surface the transports (gRPC, HTTP) and tests use, and the event
// bus ('job', 'round', 'tasks', 'cancel', 'published', 'update', 'error'); the parts never reach
// back into it.
import { EventEmitter } from 'node:events';
import type { MetricsReport, Task } from '../../shared/proto.ts';
import type { CoordinatorStore, JobRow, TaskRow } from '../store/store.ts';
import type { Signer } from '../publish/publisher.ts';
import type { JobSpec } from '../jobs/spec.ts';
import { JobService, type JobInfo } from '../jobs/job-service.ts';
import { storeSiteMetrics } from '../metrics/site-reports.ts';
import { SecAggCollector } from '../secagg/collector.ts';
import type { Collector } from './collector.ts';
import { createPlainCollector } from './plain-collector.ts';
import { openRound } from './open-round.ts';
import { aggregateAndPublish } from './aggregate-publish.ts';
import { finalEvaluateTasks, taskMessage } from './task-messages.ts';
import { declineTask } from './declines.ts';
import { RoundStateMachine } from './state-machine.ts';
import { resumeScheduledJobs } from './schedule.ts';

export interface EngineOptions {
  store: CoordinatorStore;
  dataDir: string;
  signer: Signer;
  now?: () => number;
  heartbeatTimeoutMs?: number;
  /** The coordinator's secret key (privacy/noise-key.ts): DP noise and DP Poisson samples are
   *  derived from it and the round, so a round redone after a crash publishes the same adapter.
   *  Absent = fresh randomness. */
  noiseKey?: Buffer;
}

export class RoundEngine extends EventEmitter {
  readonly store: CoordinatorStore;
  readonly dataDir: string;
  readonly now: () => number;
  readonly heartbeatTimeoutMs: number;
  readonly jobs: JobService;
  /** Rounds of privacy.secure_aggregation jobs collect masked inputs over the SecAgg RPC. */
  readonly secagg: SecAggCollector;
  private readonly machine: RoundStateMachine;

  constructor(o: EngineOptions) {
    super();
    const { store, dataDir, signer, noiseKey } = o;
    const now = o.now ?? Date.now;
    this.store = store;
    this.dataDir = dataDir;
    this.now = now;
    this.heartbeatTimeoutMs = o.heartbeatTimeoutMs ?? 60_000;
    const events: EventEmitter = this;
    const kick = () => void this.tick().catch((e) => this.emit('error', e));
    this.jobs = new JobService({ store, dataDir, signer, now, events, kick });
    const jobInfo = (jobId: string) => this.jobs.info(jobId);
    const plain = createPlainCollector({ store, now, events });
    this.secagg = new SecAggCollector({ store, now, events, jobInfo, kick });
    const collectorOf = (job: JobInfo): Collector => (job.spec.privacy.secure_aggregation ? this.secagg : plain);
    const messages = { store, jobInfo };
    const published = { store, dataDir, signer, now, events, noiseKey, loadVersion: (jobId: string, v: number) => this.jobs.loadVersion(jobId, v) };
    const opening = { store, now, heartbeatTimeoutMs: this.heartbeatTimeoutMs, events, noiseKey, candidates: (jobId: string, since: number) => this.jobs.candidates(jobId, since) };
    this.machine = new RoundStateMachine({
      store, now, events, jobInfo, collectorOf,
      open: (job, info, round, attempt) => openRound(opening, job, info, collectorOf(info), round, attempt),
      aggregate: (job, info, r) => aggregateAndPublish(published, job, info, collectorOf(info), r),
      finalEvaluateTasks: (jobId) => finalEvaluateTasks(messages, jobId),
      roundsTotal: (jobId) => this.jobs.roundsTotal(jobId),
      resumeScheduled: () => void resumeScheduledJobs({ store, now, events, jobInfo }),
    });
  }

  // ---- rounds ----------------------------------------------------------------------------
  /** Tick every `intervalMs` (deadlines, sites coming online). */
  start(intervalMs = 1000): void {
    this.machine.start(intervalMs);
  }
  async stop(): Promise<void> {
    await this.machine.stop();
  }
  /** Advance every running job as far as it goes now. */
  tick(): Promise<void> {
    return this.machine.tick();
  }

  // ---- jobs ------------------------------------------------------------------------------
  submitJob(spec: JobSpec, jobId?: string, actor?: string): Promise<string> {
    return this.jobs.submit(spec, jobId, actor);
  }
  cancelJob(jobId: string, actor?: string): void {
    this.jobs.cancel(jobId, actor);
  }
  /** Add `rounds` rounds (a new data period); a completed job runs again. */
  continueJob(jobId: string, rounds: number, actor?: string): void {
    this.jobs.continue(jobId, rounds, actor);
  }
  jobInfo(jobId: string): JobInfo {
    return this.jobs.info(jobId);
  }
  loadVersion(jobId: string, version: number): Float32Array {
    return this.jobs.loadVersion(jobId, version);
  }
  waitForJob(jobId: string, timeoutMs?: number): Promise<JobRow> {
    return this.jobs.waitFor(jobId, timeoutMs);
  }

  // ---- what sites send and get -----------------------------------------------------------
  taskMessage(t: TaskRow): Task {
    return taskMessage({ store: this.store, jobInfo: (id) => this.jobs.info(id) }, t);
  }
  declineTask(siteId: string, taskId: string, reason: string, code: string): void {
    if (declineTask(this.store, this.now, siteId, taskId, reason, code)) void this.tick().catch((e) => this.emit('error', e));
  }
  reportMetrics(siteId: string, m: MetricsReport): number {
    return storeSiteMetrics(this.store, this.now(), siteId, m);
  }
}
