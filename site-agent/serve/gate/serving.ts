// Which adapter version the assistant serves: the newest row of gate_serving (promote, approve
// or rollback). No row, or a row without a version, means the base model. The server checks
// the newest row before each answer, so a promotion takes effect without a restart.
import type Database from 'better-sqlite3-multiple-ciphers';

export interface ServingVersion {
  /** 'base' or '<job>/v<N>'. */
  label: string;
  jobId: string | null;
  version: number | null;
  sha256: string | null;
  dir: string | null;
  /** gate_serving.seq of the decision (0 = never decided). */
  seq: number;
}

export const BASE_VERSION: ServingVersion = { label: 'base', jobId: null, version: null, sha256: null, dir: null, seq: 0 };

export const versionLabel = (jobId: string | null, version: number | null): string => (jobId === null || version === null ? 'base' : `${jobId}/v${version}`);

export function currentServing(db: Database.Database): ServingVersion {
  const r = db.prepare('SELECT seq, job_id, version, sha256, dir FROM gate_serving ORDER BY seq DESC LIMIT 1').get() as
    | { seq: number; job_id: string | null; version: number | null; sha256: string | null; dir: string | null }
    | undefined;
  if (!r) return BASE_VERSION;
  return { label: versionLabel(r.job_id, r.version), jobId: r.job_id, version: r.version, sha256: r.sha256, dir: r.dir, seq: r.seq };
}

/** A function that brings a backend to the version serving now (read from `db`) before it is
 *  used: `useVersion` runs once per change, and callers arriving during a switch wait for it. */
export function servingFollower(db: Database.Database, useVersion: (v: ServingVersion) => Promise<void>): () => Promise<ServingVersion> {
  let applied = -1;
  let switching: Promise<ServingVersion> | null = null;
  return async () => {
    const v = currentServing(db);
    if (v.seq === applied) return v;
    switching ??= useVersion(v).then(() => {
      applied = v.seq;
      return v;
    }).finally(() => (switching = null));
    return switching;
  };
}

export function servingHistory(db: Database.Database): (ServingVersion & { action: string; by: string; at: string })[] {
  const rows = db.prepare('SELECT seq, job_id, version, sha256, dir, action, by, at FROM gate_serving ORDER BY seq').all() as {
    seq: number; job_id: string | null; version: number | null; sha256: string | null; dir: string | null; action: string; by: string; at: string;
  }[];
  return rows.map((r) => ({ label: versionLabel(r.job_id, r.version), jobId: r.job_id, version: r.version, sha256: r.sha256, dir: r.dir, seq: r.seq, action: r.action, by: r.by, at: r.at }));
}

export function setServing(db: Database.Database, v: Omit<ServingVersion, 'label' | 'seq'>, action: 'promote' | 'approve' | 'rollback', by: string): ServingVersion {
  const seq = Number(db.prepare('INSERT INTO gate_serving (job_id, version, sha256, dir, action, by) VALUES (?,?,?,?,?,?)').run(v.jobId, v.version, v.sha256, v.dir, action, by).lastInsertRowid);
  return { ...v, label: versionLabel(v.jobId, v.version), seq };
}
