// The round state machine of every running job. `tick()` is idempotent: it looks at SQLite
// (the only source of truth) and moves each job one step at a time:
//
//   (no round | last published) --enough online sites--> open(round r, attempt 1)
//   open --the job's collector closes it with enough contributions--> aggregating
//   open --deadline (or all answered) with too few--> failed
//   failed --attempt <= round_retries--> open(round r, attempt+1, fresh selection)
//   failed --retries exhausted--> job failed
//   aggregating --strategy + publish version r--> published --r == rounds--> job completed
//   completed --fedlora job continue, or its schedule with new records--> running (next period)
//
// Restart: nothing lives only in memory. An open round keeps its selection, plan, deadline and
// accepted contributions; an aggregating round is redone from them with the persisted seed,
// strategy state and aggregation start time, so the result is identical. Time is injected
// (tests drive `tick()` with a fake clock).
import type { EventEmitter } from 'node:events';
import type { Task } from '../../shared/proto.ts';
import type { CoordinatorStore, JobRow } from '../store/store.ts';
import { insertSideTasks } from '../store/side-tasks.ts';
import type { JobInfo } from '../jobs/job-service.ts';
import { createPrivacyLedger } from '../privacy/ledger.ts';
import type { Collector } from './collector.ts';

export interface RoundStateMachineDeps {
  store: CoordinatorStore;
  now: () => number;
  events: EventEmitter;
  jobInfo(jobId: string): JobInfo;
  collectorOf(job: JobInfo): Collector;
  /** Open a round attempt; false while it must wait for sites. */
  open(job: JobRow, info: JobInfo, round: number, attempt: number): boolean;
  aggregate(job: JobRow, info: JobInfo, round: NonNullable<ReturnType<CoordinatorStore['currentRound']>>): Promise<void>;
  /** The EVALUATE side tasks made when a job completes. */
  finalEvaluateTasks(jobId: string): { siteId: string; task: Task }[];
  /** The job's rounds in all its data periods (its spec's, plus each continuation's). */
  roundsTotal(jobId: string): number;
  /** Completed jobs whose schedule is due with new records at the sites go on (schedule.ts). */
  resumeScheduled(): void;
}

export class RoundStateMachine {
  private ticking: Promise<void> | null = null;
  private again = false;
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly d: RoundStateMachineDeps) {}

  /** Tick every `intervalMs` (deadlines, sites coming online). */
  start(intervalMs = 1000): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.tick().catch((e) => this.d.events.emit('error', e)), intervalMs);
    this.timer.unref();
  }

  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.ticking?.catch(() => undefined);
  }

  /** Advance every running job as far as it goes now. Serialised: concurrent calls coalesce. */
  tick(): Promise<void> {
    if (this.ticking) {
      this.again = true;
      return this.ticking;
    }
    this.ticking = (async () => {
      // Yield first: if the body finished synchronously, `finally` would clear `ticking`
      // before the assignment below and a stale resolved promise would stick forever.
      await null;
      try {
        do {
          this.again = false;
          this.d.resumeScheduled();
          for (const job of this.d.store.jobs('running')) await this.advance(job);
        } while (this.again);
      } finally {
        this.ticking = null;
      }
    })();
    return this.ticking;
  }

  private async advance(job: JobRow): Promise<void> {
    const { store, events } = this.d;
    // Loop: one job may take several steps in one tick (e.g. aggregate then open the next round).
    for (let step = 0; step < 8; step++) {
      const j = store.job(job.id)!;
      if (j.status !== 'running') return;
      const cur = store.currentRound(job.id);
      let moved = false;
      try {
        const info = this.d.jobInfo(job.id);
        const { spec } = info;
        if (!cur || cur.state === 'published') {
          const next = cur ? cur.round + 1 : 1;
          if (next > this.d.roundsTotal(job.id)) return this.endJob(job.id, 'completed');
          if (spec.privacy.dp && createPrivacyLedger(spec.privacy.dp).wouldExceedBudget(next)) {
            // The budget is spent: stop with what is published (not a failure of the job).
            const e = createPrivacyLedger(spec.privacy.dp).epsilonAfter(next).epsilon;
            return this.endJob(job.id, 'completed', `FEDLORA_ERR_PRIVACY_BUDGET: round ${next} would raise epsilon to ${e.toFixed(4)} > budget ${spec.privacy.dp.epsilon_budget}; stopped after round ${next - 1}`);
          }
          moved = this.d.open(j, info, next, 1);
        } else if (cur.state === 'failed') {
          if (cur.attempt > spec.round_retries) return this.endJob(job.id, 'failed', `round ${cur.round} failed ${cur.attempt} times: ${cur.error ?? ''}`);
          moved = this.d.open(j, info, cur.round, cur.attempt + 1);
        } else if (cur.state === 'open') moved = await this.d.collectorOf(info).check(cur, info);
        else if (cur.state === 'aggregating') {
          await this.d.aggregate(j, info, cur);
          moved = true;
        }
      } catch (e) {
        // An aggregation/publication error fails the job (with the error) rather than looping.
        this.endJob(job.id, 'failed', (e as Error).message);
        events.emit('error', e);
        return;
      }
      if (!moved) return;
    }
  }

  /** A job leaves 'running' (completed / failed): the row and its audit entry together, and for
   *  a completed job the final EVALUATE side tasks (so no crash can lose them). */
  private endJob(jobId: string, status: 'completed' | 'failed', error: string | null = null): void {
    const { store } = this.d;
    const now = this.d.now();
    store.tx(() => {
      store.setJobStatus(jobId, status, now, error);
      store.audit.append('coordinator', `job_${status}`, jobId, { version: store.job(jobId)?.current_version ?? null, error }, new Date(now));
      if (status === 'completed') insertSideTasks(store.db, this.d.finalEvaluateTasks(jobId), now);
    });
    this.d.events.emit('job', jobId);
  }
}
