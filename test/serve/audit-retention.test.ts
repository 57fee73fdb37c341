// Retention of the site's audit log and stored answers: old entries go, `fedlora audit verify`
// still verifies (and counts what is left), an edit after pruning or a forged retention base is
// still caught, and anchors from before the cut do not fail the check.
import { describe, it, expect, afterAll } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import { mkdirSync } from 'node:fs';
import { AuditLog } from '../../shared/audit.ts';
import { openSiteDb } from '../../site-agent/site-db.ts';
import { applyRetention } from '../../site-agent/serve/retention.ts';
import { tempDir, rmDir } from './helpers.ts';

const run = promisify(execFile);
const BIN = join(import.meta.dirname, '..', '..', 'cli', 'bin.mjs');
const dir = tempDir('serve-retention');
afterAll(() => rmDir(dir));

describe('audit retention', () => {
  it('removes old entries and answers; the chain still verifies; tampering is still caught', async () => {
    const siteDir = join(dir, 'site');
    mkdirSync(siteDir);
    const db = openSiteDb(siteDir);
    const audit = new AuditLog(db, 'site_audit');
    const day = 86_400_000;
    const now = Date.UTC(2026, 10, 30);
    for (let i = 0; i < 10; i++) {
      const t = new Date(now - (40 - i * 4) * day); // 40, 36, ..., 4 days ago
      audit.append('dr.li', 'assistant_query', `q${i}`, { answer_sha256: String(i) }, t);
      db.prepare("INSERT INTO serve_answers (id, user_name, created_at, endpoint, model_version, prompt_sha256, answer_text, answer_sha256, citations, finish_reason, latency_ms) VALUES (?, 'dr.li', ?, '/v1/chat/completions', 'base', 'p', 'a', 'h', '[]', 'stop', 1)")
        .run(`q${i}`, t.toISOString());
    }
    const anchorOld = audit.list({ limit: 10 })[2]; // entry 3: will be removed
    const r = applyRetention(db, audit, 30, new Date(now));
    expect(r).toEqual({ auditRemoved: 3, answersRemoved: 3 }); // 40, 36, 32 days old
    expect(db.prepare('SELECT count(*) FROM serve_answers').pluck().get()).toBe(7);
    const v = audit.verify([{ seq: anchorOld.seq, hash: anchorOld.hash }]);
    expect(v).toMatchObject({ ok: true, entries: 8, pruned: 3 }); // 7 kept + the audit_pruned entry
    // A second pass removes nothing new and still verifies; the pruned total accumulates later.
    expect(applyRetention(db, audit, 30, new Date(now)).auditRemoved).toBe(0);
    expect(applyRetention(db, audit, 10, new Date(now))).toEqual({ auditRemoved: 5, answersRemoved: 5 });
    expect(audit.verify()).toMatchObject({ ok: true, pruned: 8 });
    db.close();

    const out = (await run(process.execPath, [BIN, 'audit', 'verify', '--site-dir', siteDir])).stdout;
    expect(out).toMatch(/audit chain OK: \d+ entries .*8 older entries removed by retention/);

    // Forge the base (pretend more was removed): no audit_pruned entry names it -> broken.
    const db2 = openSiteDb(siteDir);
    const base = db2.prepare('SELECT seq, hash FROM site_audit_base').get() as { seq: number; hash: string };
    db2.prepare('UPDATE site_audit_base SET seq = seq + 1, hash = (SELECT hash FROM site_audit WHERE seq = ?)').run(base.seq + 1);
    db2.exec('DROP TRIGGER site_audit_no_delete');
    db2.prepare('DELETE FROM site_audit WHERE seq = ?').run(base.seq + 1);
    const broken = new AuditLog(db2, 'site_audit').verify();
    expect(broken.ok).toBe(false);
    expect(broken.firstBroken!.reason).toMatch(/no audit_pruned entry records that base/);
    db2.close();
  });
});
