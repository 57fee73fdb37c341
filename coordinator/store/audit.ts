// The coordinator's one tamper-evident audit log (shared/audit.ts) on the `audit_log` table of
// coordinator.sqlite. Every audit point calls `coordinatorAudit(db).append(...)` INSIDE the
// transaction of the state change it records, so an entry exists exactly when the change does
// (AuditLog.append nests as a savepoint). Secrets never go in: join tokens appear only as a
// short prefix of their sha256, admin tokens only by their configured name.
import type { Database } from 'better-sqlite3';
import { AuditLog } from '../../shared/audit.ts';

export const COORDINATOR_AUDIT_TABLE = 'audit_log';

const logs = new WeakMap<Database, AuditLog>();

/** The AuditLog of this connection (created once per connection; the table comes from
 *  migration 4, or from AuditLog itself on a data dir that has not been migrated yet). */
export function coordinatorAudit(db: Database): AuditLog {
  let l = logs.get(db);
  if (!l) logs.set(db, (l = new AuditLog(db, COORDINATOR_AUDIT_TABLE)));
  return l;
}

/** L2 norm with float64 accumulation (what the coordinator measures on an update). */
export function l2norm(v: Float32Array): number {
  let s = 0;
  for (let i = 0; i < v.length; i++) s += v[i] * v[i];
  return Math.sqrt(s);
}
