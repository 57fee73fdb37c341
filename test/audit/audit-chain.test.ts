import { describe, it, expect } from 'vitest';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AuditLog } from '../../shared/audit.ts';
import { openCoordinatorDb } from '../../coordinator/store/migrations.ts';

function freshLog() {
  const dir = mkdtempSync(join(tmpdir(), 'fedlora-audit-'));
  const db = openCoordinatorDb(join(dir, 'audit.sqlite'));
  const log = new AuditLog(db);
  log.append('coordinator', 'token_issued', 'site-a', { ttl_s: 3600 });
  log.append('site-a', 'enroll', 'site-a', { serial: '01' });
  log.append('site-a', 'update_received', 'job1/r1', { sha256: 'ab'.repeat(32), norm: 1.5 });
  log.append('admin', 'revoke', 'site-b', {});
  return { db, log };
}

describe('tamper-evident audit log', () => {
  it('verifies an untouched chain', () => {
    const { log } = freshLog();
    expect(log.verify()).toEqual({ ok: true, entries: 4, pruned: 0, firstBroken: null });
  });

  it('refuses UPDATE and DELETE through SQLite', () => {
    const { db } = freshLog();
    expect(() => db.prepare("UPDATE audit_log SET actor = 'x' WHERE seq = 2").run()).toThrow(/append-only/);
    expect(() => db.prepare('DELETE FROM audit_log WHERE seq = 2').run()).toThrow(/append-only/);
  });

  it('reports the first edited entry when someone bypasses the triggers', () => {
    const { db, log } = freshLog();
    db.exec('DROP TRIGGER audit_log_no_update');
    db.prepare(`UPDATE audit_log SET details = '{"norm":0.1,"sha256":"00"}' WHERE seq = 3`).run();
    const r = log.verify();
    expect(r.ok).toBe(false);
    expect(r.firstBroken?.seq).toBe(3);
    expect(r.firstBroken?.reason).toMatch(/edited/);
  });

  it('reports a deleted entry as a break in the chain', () => {
    const { db, log } = freshLog();
    db.exec('DROP TRIGGER audit_log_no_delete');
    db.prepare('DELETE FROM audit_log WHERE seq = 2').run();
    const r = log.verify();
    expect(r.ok).toBe(false);
    expect(r.firstBroken?.seq).toBe(3);
  });

  it('detects a rewritten chain tail whose hashes were recomputed from a wrong link', () => {
    const { db, log } = freshLog();
    db.exec('DROP TRIGGER audit_log_no_update');
    db.prepare(`UPDATE audit_log SET prev_hash = ? WHERE seq = 4`).run('f'.repeat(64));
    expect(log.verify().firstBroken).toEqual({ seq: 4, reason: 'prev_hash does not match the previous entry' });
  });
});
