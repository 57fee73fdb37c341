// A job's data periods. Its first `rounds` rounds are period 0; `fedlora job continue ID --rounds
// K` (or the job's schedule, when sites have ingested new records) adds period p+1 of K more
// rounds and sets a completed job running again. Every TRAIN task names its round's period
// (TrainSpec.data_period), so a site trains each period's new records — mixed with a replay
// sample of earlier periods' — and evaluates old and new held-out cases apart. Rows record each
// period's sites' data revisions when it began, which is what a schedule compares with.
import type { Database } from 'better-sqlite3-multiple-ciphers';
import { fail } from '../../shared/errors.ts';
import type { CoordinatorStore } from '../store/store.ts';
import type { JobSpec } from './spec.ts';

export type PeriodReason = 'submitted' | 'continued' | 'scheduled';

export interface JobPeriod {
  period: number;
  firstRound: number;
  rounds: number;
  reason: PeriodReason;
  actor: string;
  /** site -> data revision when the period began (sites that had reported one). */
  siteRevisions: Record<string, number>;
  createdMs: number;
}

interface Row { period: number; first_round: number; rounds: number; reason: PeriodReason; actor: string; site_revisions_json: string; created_ms: number }

/** Every active site's latest reported data revision. */
export function siteRevisions(db: Database): Record<string, number> {
  const rows = db.prepare(`SELECT id, data_revision FROM sites WHERE status = 'active' AND data_revision IS NOT NULL ORDER BY id`).all() as { id: string; data_revision: number }[];
  return Object.fromEntries(rows.map((r) => [r.id, r.data_revision]));
}

/** From a heartbeat (HeartbeatRequest.data_revision). */
export function recordDataRevision(db: Database, siteId: string, revision: number): void {
  if (!Number.isSafeInteger(revision) || revision < 0) return;
  db.prepare('UPDATE sites SET data_revision = ? WHERE id = ?').run(revision, siteId);
}

export function insertPeriod(db: Database, jobId: string, p: JobPeriod): void {
  db.prepare('INSERT INTO job_periods (job_id, period, first_round, rounds, reason, actor, site_revisions_json, created_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
    .run(jobId, p.period, p.firstRound, p.rounds, p.reason, p.actor, JSON.stringify(p.siteRevisions), p.createdMs);
}

/** The job's periods in order (a job stored before periods existed: its rounds as period 0). */
export function periodsOf(db: Database, jobId: string, spec: Pick<JobSpec, 'rounds'>, createdMs = 0): JobPeriod[] {
  const rows = db.prepare('SELECT * FROM job_periods WHERE job_id = ? ORDER BY period').all(jobId) as Row[];
  if (rows.length === 0) return [{ period: 0, firstRound: 1, rounds: spec.rounds, reason: 'submitted', actor: 'admin', siteRevisions: {}, createdMs }];
  return rows.map((r) => ({ period: r.period, firstRound: r.first_round, rounds: r.rounds, reason: r.reason, actor: r.actor, siteRevisions: JSON.parse(r.site_revisions_json) as Record<string, number>, createdMs: r.created_ms }));
}

export const totalRounds = (periods: readonly JobPeriod[]): number => periods.reduce((n, p) => n + p.rounds, 0);

export function periodOfRound(periods: readonly JobPeriod[], round: number): number {
  let at = 0;
  for (const p of periods) if (p.firstRound <= round) at = p.period;
  return at;
}

/** Add a period of `rounds` rounds; a completed job runs again. Refused for a failed or
 *  cancelled job. In the caller's transaction; returns the new period. */
export function addPeriod(store: CoordinatorStore, jobId: string, spec: Pick<JobSpec, 'rounds'>, rounds: number, reason: Exclude<PeriodReason, 'submitted'>, actor: string, now: number): JobPeriod {
  const job = store.job(jobId);
  if (!job) throw fail('FEDLORA_ERR_NOT_FOUND', `job ${jobId} does not exist`);
  if (job.status !== 'completed' && job.status !== 'running') throw fail('FEDLORA_ERR_JOB_STATE', `job ${jobId} is ${job.status}; only a running or completed job can be continued`);
  if (!Number.isInteger(rounds) || rounds < 1 || rounds > 100_000) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `rounds: ${rounds} is not a whole number of rounds from 1 to 100000`);
  const periods = periodsOf(store.db, jobId, spec, job.created_ms);
  if (!store.db.prepare('SELECT 1 FROM job_periods WHERE job_id = ?').get(jobId)) insertPeriod(store.db, jobId, periods[0]);
  const p: JobPeriod = { period: periods.length, firstRound: totalRounds(periods) + 1, rounds, reason, actor, siteRevisions: siteRevisions(store.db), createdMs: now };
  insertPeriod(store.db, jobId, p);
  if (job.status === 'completed') store.setJobStatus(jobId, 'running', now, null);
  store.audit.append(actor, 'job_continued', jobId, { period: p.period, first_round: p.firstRound, rounds, reason, site_revisions: p.siteRevisions }, new Date(now));
  return p;
}

/** Sites whose data revision moved since the period began (or that reported data for the first time). */
export function sitesWithNewRecords(db: Database, since: JobPeriod): string[] {
  return Object.entries(siteRevisions(db)).filter(([s, rev]) => rev > (since.siteRevisions[s] ?? 0)).map(([s]) => s);
}
