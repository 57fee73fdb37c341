// Side tasks (table side_tasks, migration 5): tasks outside the round state machine — the
// EVALUATE of a completed job's final version, and cross-evaluation's UPLOAD_LOCAL and
// CROSS_EVAL. They are rows, not messages written once to whoever is connected: the TaskHub
// sends a site its open ones whenever it attaches (and when they are made), so a site offline
// at that moment still gets them, and a coordinator restart loses nothing.
//   pending --written to a stream--> delivered --site's "task_done" report--> done
//   pending|delivered --DeclineTask--> declined;  --older than side_tasks.expire_ms--> expired
// (UPLOAD_LOCAL is done when its local adapter is stored; cross-eval expires unanswered uploads
// when it moves on to CROSS_EVAL.)
import type { Database } from 'better-sqlite3-multiple-ciphers';
import type { Task } from '../../shared/proto.ts';

export type SideTaskStatus = 'pending' | 'delivered' | 'done' | 'declined' | 'expired';
export type SideTaskKind = 'TASK_KIND_EVALUATE' | 'TASK_KIND_UPLOAD_LOCAL' | 'TASK_KIND_CROSS_EVAL' | 'TASK_KIND_EXAM';
export interface SideTaskRow {
  task_id: string; job_id: string; site_id: string; kind: SideTaskKind; payload_json: string; status: SideTaskStatus; request_id: number | null;
  decline_reason: string | null; decline_code: string | null; created_ms: number; updated_ms: number;
}

/** Default life of an unanswered side task (config side_tasks.expire_ms). */
export const SIDE_TASK_EXPIRE_MS = 7 * 24 * 3600_000;

/** Insert side tasks for the Task messages given (one per site); an existing task_id is kept
 *  as it is (a job completion or a dispatch redone after a crash makes the same ids). */
export function insertSideTasks(db: Database, tasks: { siteId: string; task: Task; requestId?: number }[], now: number): void {
  const ins = db.prepare(`INSERT OR IGNORE INTO side_tasks (task_id, job_id, site_id, kind, payload_json, status, request_id, created_ms, updated_ms)
    VALUES (?, ?, ?, ?, ?, 'pending', ?, ?, ?)`);
  for (const { siteId, task, requestId } of tasks) ins.run(task.taskId, task.jobId, siteId, task.kind, JSON.stringify(task), requestId ?? null, now, now);
}

export function sideTask(db: Database, taskId: string): SideTaskRow | undefined {
  return db.prepare('SELECT * FROM side_tasks WHERE task_id = ?').get(taskId) as SideTaskRow | undefined;
}

/** A site's side tasks still to do (pending or delivered), oldest first. */
export function openSideTasksFor(db: Database, siteId: string): SideTaskRow[] {
  return db.prepare(`SELECT * FROM side_tasks WHERE site_id = ? AND status IN ('pending','delivered') ORDER BY created_ms, task_id`).all(siteId) as SideTaskRow[];
}

/** The side tasks of one cross-eval request (of one kind), by site. */
export function requestSideTasks(db: Database, requestId: number, kind: SideTaskKind): SideTaskRow[] {
  return db.prepare('SELECT * FROM side_tasks WHERE request_id = ? AND kind = ? ORDER BY site_id').all(requestId, kind) as SideTaskRow[];
}

export function isOpen(row: Pick<SideTaskRow, 'status'>): boolean {
  return row.status === 'pending' || row.status === 'delivered';
}

/** Move a side task on; only an open one moves (done/declined/expired are final). True if it moved. */
export function setSideTaskStatus(db: Database, taskId: string, status: SideTaskStatus, now: number, decline?: { reason: string; code: string }): boolean {
  return db.prepare(`UPDATE side_tasks SET status = ?, decline_reason = COALESCE(?, decline_reason), decline_code = COALESCE(?, decline_code), updated_ms = ?
    WHERE task_id = ? AND status IN ('pending','delivered')`).run(status, decline?.reason ?? null, decline?.code ?? null, now, taskId).changes > 0;
}

/** Expire open side tasks made before `now - maxAgeMs`; returns how many. */
export function expireSideTasks(db: Database, now: number, maxAgeMs: number): number {
  return db.prepare(`UPDATE side_tasks SET status = 'expired', updated_ms = ? WHERE status IN ('pending','delivered') AND created_ms < ?`).run(now, now - maxAgeMs).changes;
}

export function sideTaskMessage(row: SideTaskRow): Task {
  return JSON.parse(row.payload_json) as Task;
}
