// A cut-off tail is still a valid hash chain; an anchor recorded outside the database
// (`fedlora audit head`, e.g. appended daily to write-once storage) catches it: `audit verify
// --anchor SEQ:HASH` / `--anchors FILE` requires that entry to be there, unchanged.
import { describe, it, expect, afterAll } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AuditLog, parseAnchor } from '../../shared/audit.ts';
import { tempDir, rmDir } from '../coordinator/helpers.ts';
import { fedlora } from './helpers.ts';
import { openSiteDb } from '../../site-agent/site-db.ts';

const dirs: string[] = [];
afterAll(() => dirs.forEach(rmDir));

function siteLog(n: number): string {
  const siteDir = tempDir('sec-audit-anchor');
  dirs.push(siteDir);
  const db = openSiteDb(siteDir);
  const log = new AuditLog(db, 'site_audit');
  for (let i = 1; i <= n; i++) log.append('site-agent', 'egress', `job-1/r${i}`, { bytes: 100 * i });
  db.close();
  return siteDir;
}

describe('audit anchors', () => {
  it('a truncated tail passes the chain walk but not the anchor; an intact log passes both', async () => {
    const siteDir = siteLog(6);
    const head = await fedlora(['audit', 'head', '--site-dir', siteDir]);
    expect(head.status).toBe(0);
    const anchor = head.stdout.trim();
    expect(anchor).toMatch(/^6:[0-9a-f]{64}$/);
    const anchorsFile = join(siteDir, 'anchors.txt');
    writeFileSync(anchorsFile, `# daily heads\n${anchor}\n`);

    const ok = await fedlora(['audit', 'verify', '--site-dir', siteDir, '--anchor', anchor]);
    expect(ok.status).toBe(0);
    expect(ok.stdout).toMatch(/audit chain OK: 6 entries .*1 anchor\(s\) matched/);

    // The attacker drops the trigger and deletes the two newest entries: the chain still verifies.
    const db = openSiteDb(siteDir);
    db.exec('DROP TRIGGER site_audit_no_delete');
    db.prepare('DELETE FROM site_audit WHERE seq > 4').run();
    db.close();
    const plain = await fedlora(['audit', 'verify', '--site-dir', siteDir]);
    expect(plain.status).toBe(0);
    expect(plain.stdout).toMatch(/4 entries .*no anchors given/);
    for (const args of [['--anchor', anchor], ['--anchors', anchorsFile]]) {
      const r = await fedlora(['audit', 'verify', '--site-dir', siteDir, ...args]);
      expect(r.status).toBe(1);
      expect(r.stdout).toMatch(/BROKEN at entry 5: truncated: anchor 6:[0-9a-f]{12}… names entry 6, but the log ends at entry 4/);
    }
  });

  it('a log rebuilt with other content under the same numbers does not match the anchor', () => {
    const siteDir = siteLog(3);
    const log0 = new AuditLog(openSiteDb(siteDir), 'site_audit');
    const anchor = log0.head()!;
    // Rebuild from scratch: a fresh, internally valid chain of 3 entries with other details.
    const db = openSiteDb(siteDir);
    db.exec('DROP TABLE site_audit');
    db.exec('CREATE TABLE site_audit (seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, subject TEXT NOT NULL, details TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL)');
    const forged = new AuditLog(db, 'site_audit');
    for (let i = 1; i <= 3; i++) forged.append('site-agent', 'egress', `job-1/r${i}`, { bytes: 1 });
    expect(forged.verify().ok).toBe(true);
    const r = forged.verify([anchor]);
    expect(r.ok).toBe(false);
    expect(r.firstBroken).toMatchObject({ seq: 3, reason: expect.stringMatching(/does not match anchor 3:/) });
    db.close();
  });

  it('bad anchors are named with where they came from', async () => {
    expect(parseAnchor('12:' + 'a'.repeat(64), 'x')).toEqual({ seq: 12, hash: 'a'.repeat(64) });
    expect(() => parseAnchor('12:abc', 'anchors.txt:3')).toThrow(/anchors\.txt:3: "12:abc" is not an audit anchor SEQ:HASH/);
    expect(() => parseAnchor('0:' + 'a'.repeat(64), '--anchor #1')).toThrow(/--anchor #1/);
    const siteDir = siteLog(1);
    const bad = join(siteDir, 'bad.txt');
    writeFileSync(bad, `1:${'f'.repeat(64)}\nnot-an-anchor\n`);
    const r = await fedlora(['audit', 'verify', '--site-dir', siteDir, '--anchors', bad]);
    expect(r.status).not.toBe(0);
    expect(r.stderr).toMatch(/FEDLORA_ERR_INVALID_ARGUMENT.*bad\.txt:2: "not-an-anchor" is not an audit anchor/);
  });
});
