// Recurring rounds: a completed job with `schedule: { every, rounds }` goes on with a new data
// period once `every` has passed since its last period began AND at least one site has ingested
// records since then (its heartbeat's data revision moved). Checked at every tick, so a site
// that ingests later starts the period when it reports.
import type { EventEmitter } from 'node:events';
import type { CoordinatorStore } from '../store/store.ts';
import type { JobInfo } from '../jobs/job-service.ts';
import { addPeriod, periodsOf, sitesWithNewRecords } from '../jobs/periods.ts';
import { durationMs } from '../jobs/schedule.ts';

export interface ScheduleDeps {
  store: CoordinatorStore;
  now: () => number;
  events: EventEmitter;
  jobInfo(jobId: string): JobInfo;
}

/** The job's last period and when its schedule next allows one (null: no schedule). */
function scheduleOf(d: Pick<ScheduleDeps, 'store'>, jobId: string, spec: JobInfo['spec']) {
  if (!spec.schedule) return null;
  const job = d.store.job(jobId)!;
  const last = periodsOf(d.store.db, jobId, spec, job.created_ms).at(-1)!;
  return { last, due: last.createdMs + durationMs(spec.schedule.every) };
}

/** When the job's schedule next allows a period (null: no schedule). */
export function nextDueMs(d: Pick<ScheduleDeps, 'store'>, jobId: string, info: Pick<JobInfo, 'spec'>): number | null {
  return scheduleOf(d, jobId, info.spec)?.due ?? null;
}

/** Start the next period of every completed job that is due and has new records; returns them. */
export function resumeScheduledJobs(d: ScheduleDeps): string[] {
  const { store } = d;
  const now = d.now();
  const resumed: string[] = [];
  for (const job of store.jobs('completed')) {
    const info = d.jobInfo(job.id);
    const s = scheduleOf(d, job.id, info.spec);
    if (s === null || now < s.due) continue;
    if (sitesWithNewRecords(store.db, s.last).length === 0) continue;
    store.tx(() => addPeriod(store, job.id, info.spec, info.spec.schedule!.rounds ?? info.spec.rounds, 'scheduled', 'coordinator', now));
    resumed.push(job.id);
    d.events.emit('job', job.id);
  }
  return resumed;
}
