// A job's data periods as the site sees them. The coordinator numbers them (TrainSpec.data_period:
// the job's first rounds are period 0, each `fedlora job continue` or scheduled continuation the
// next); the site records, per job and period, the latest ingest run it trained with
// (data_periods.upto_run). A period's records are then split in two: "earlier" — stored by the
// runs an earlier period trained with (a continued job: its parent's) — and "new", everything
// ingested since. Training mixes the new records with a replay sample of earlier ones
// (train.replay_fraction); the held-out sets keep both, tagged, so forgetting shows as the
// earlier cases' figures across rounds.
import type Database from 'better-sqlite3-multiple-ciphers';
import { hashOrderedSample } from '../../../shared/hash.ts';

export type DataAge = 'earlier' | 'new';

/** What one round's datasets are built for. */
export interface DataPeriod {
  /** Records of ingest runs up to this one are earlier; later ones are new (null: all new, no replay). */
  earlierUpTo: number | null;
  /** The share of the training set drawn from earlier records (0 <= f < 1). */
  replayFraction: number;
  /** Fixes the replay sample (job and period): the same records for every round of the period. */
  sampleKey: string;
}

/** The site's data revision: the latest ingest run that stored records (0: none). Heartbeats
 *  carry it, so a job's schedule knows when a site has new records. */
export function dataRevision(db: Database.Database): number {
  return (db.prepare('SELECT max(run_id) FROM data_records').pluck().get() as number | null) ?? 0;
}

/** Which ingest run stored each record (records stored without one count as run 0). */
export function runsOfRecords(db: Database.Database): Map<string, number> {
  const rows = db.prepare('SELECT id, run_id FROM data_records').all() as { id: string; run_id: number | null }[];
  return new Map(rows.map((r) => [r.id, r.run_id ?? 0]));
}

/** The period a task of `jobId` trains in, recorded at the site: its earlier records are those the
 *  latest earlier period of this job trained with (for period 0 of a job continuing `parentJob`,
 *  those of the parent's last period). The period's own mark moves up to the current revision. */
export function enterDataPeriod(db: Database.Database, t: { jobId: string; period: number; parentJob: string; replayFraction: number }, o: { record: boolean }): DataPeriod {
  const upTo = (job: string, below: number) =>
    (db.prepare('SELECT upto_run FROM data_periods WHERE job_id = ? AND period < ? ORDER BY period DESC LIMIT 1').pluck().get(job, below) as number | undefined) ?? null;
  const earlierUpTo = t.period > 0 ? upTo(t.jobId, t.period) : t.parentJob ? upTo(t.parentJob, Number.MAX_SAFE_INTEGER) : null;
  if (o.record) db.prepare(`INSERT INTO data_periods (job_id, period, upto_run) VALUES (?, ?, ?)
    ON CONFLICT (job_id, period) DO UPDATE SET upto_run = max(upto_run, excluded.upto_run)`).run(t.jobId, t.period, dataRevision(db));
  return { earlierUpTo, replayFraction: t.replayFraction, sampleKey: `${t.jobId}:${t.period}` };
}

export function ageOf(period: DataPeriod | undefined, run: number): DataAge {
  return period?.earlierUpTo != null && run <= period.earlierUpTo ? 'earlier' : 'new';
}

/** How many earlier records join `fresh` new ones so that they are `f` of the training set. */
export function replayCount(fresh: number, earlier: number, f: number): number {
  if (earlier === 0) return 0;
  if (fresh === 0) return earlier; // nothing new here: the period trains on what it had
  if (f <= 0) return 0;
  return Math.min(earlier, Math.round((f * fresh) / (1 - f)));
}

/** A fixed sample of `n` ids: ordered by a hash of the period's key and the id. */
export function replaySample(ids: readonly string[], n: number, key: string): Set<string> {
  return new Set(hashOrderedSample(ids, n, key));
}
