// Cross-evaluation requests (table cross_eval_requests, migration 3). An admin records one
// (POST /api/jobs/:id/cross-eval or `fedlora job cross-eval JOB`); the fan-out of CROSS_EVAL /
// UPLOAD_LOCAL tasks to consenting sites reads the 'pending' rows and moves them on with
// setCrossEvalStatus (dispatched_ms, migration 5, is when its UPLOAD_LOCAL tasks were made;
// coordinator/crosseval/cross-eval.ts). Results arrive as kind `cross` metrics (GET /api/jobs/:id/cross-eval).
import type { Database } from 'better-sqlite3-multiple-ciphers';
import { fail } from '../../shared/errors.ts';

export type CrossEvalStatus = 'pending' | 'dispatched' | 'done' | 'failed' | 'cancelled';
export interface CrossEvalRequestRow { id: number; job_id: string; requested_by: string; sites_json: string | null; status: CrossEvalStatus; note: string | null; created_ms: number; updated_ms: number; dispatched_ms: number | null }

export function insertCrossEvalRequest(db: Database, r: { jobId: string; requestedBy: string; sites?: string[]; now: number }): CrossEvalRequestRow {
  const info = db.prepare(`INSERT INTO cross_eval_requests (job_id, requested_by, sites_json, status, created_ms, updated_ms) VALUES (?, ?, ?, 'pending', ?, ?)`)
    .run(r.jobId, r.requestedBy, r.sites?.length ? JSON.stringify(r.sites) : null, r.now, r.now);
  return db.prepare('SELECT * FROM cross_eval_requests WHERE id = ?').get(Number(info.lastInsertRowid)) as CrossEvalRequestRow;
}

export function crossEvalRequests(db: Database, jobId: string, status?: CrossEvalStatus): CrossEvalRequestRow[] {
  return (status
    ? db.prepare('SELECT * FROM cross_eval_requests WHERE job_id = ? AND status = ? ORDER BY id').all(jobId, status)
    : db.prepare('SELECT * FROM cross_eval_requests WHERE job_id = ? ORDER BY id').all(jobId)) as CrossEvalRequestRow[];
}

/** All requests in one status, of every job (the dispatcher's pending and dispatched ones). */
export function crossEvalRequestsIn(db: Database, status: CrossEvalStatus): CrossEvalRequestRow[] {
  return db.prepare('SELECT * FROM cross_eval_requests WHERE status = ? ORDER BY id').all(status) as CrossEvalRequestRow[];
}

/** The request's UPLOAD_LOCAL tasks are made now: status dispatched, the wait starts at `now`. */
export function markCrossEvalDispatched(db: Database, id: number, now: number, note: string): void {
  const r = db.prepare(`UPDATE cross_eval_requests SET status = 'dispatched', dispatched_ms = ?, note = ?, updated_ms = ? WHERE id = ?`).run(now, note, now, id);
  if (r.changes === 0) throw fail('FEDLORA_ERR_NOT_FOUND', `cross-eval request ${id} does not exist`);
}

export function setCrossEvalStatus(db: Database, id: number, status: CrossEvalStatus, now: number, note?: string): void {
  const r = db.prepare('UPDATE cross_eval_requests SET status = ?, note = COALESCE(?, note), updated_ms = ? WHERE id = ?').run(status, note ?? null, now, id);
  if (r.changes === 0) throw fail('FEDLORA_ERR_NOT_FOUND', `cross-eval request ${id} does not exist`);
}

export function crossEvalRequestView(r: CrossEvalRequestRow) {
  return {
    id: r.id, job_id: r.job_id, requested_by: r.requested_by, sites: r.sites_json ? (JSON.parse(r.sites_json) as string[]) : null, status: r.status, note: r.note,
    created: new Date(r.created_ms).toISOString(), updated: new Date(r.updated_ms).toISOString(),
  };
}
