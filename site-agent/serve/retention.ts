// Retention (serve.audit.retention_days): site audit entries and stored answers older than the
// period are removed. The audit chain keeps verifying (AuditLog.prune records where it now
// starts); the doctors' confirmations are kept (they are labels, with their own copy of the
// question and answer).
import type Database from 'better-sqlite3-multiple-ciphers';
import type { AuditLog } from '../../shared/audit.ts';

export function applyRetention(db: Database.Database, audit: AuditLog, days: number, now = new Date()): { auditRemoved: number; answersRemoved: number } {
  const before = new Date(now.getTime() - days * 86_400_000);
  const pruned = audit.prune(before);
  const answers = db.prepare('DELETE FROM serve_answers WHERE created_at < ?').run(before.toISOString()).changes;
  return { auditRemoved: pruned?.removed ?? 0, answersRemoved: answers };
}
