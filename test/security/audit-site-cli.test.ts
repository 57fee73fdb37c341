// `fedlora audit verify --site-dir`: the site agent's own log (table site_audit in
// <siteDir>/site.sqlite) is checked by the same chain walk; an attacker who drops the delete
// trigger and removes an entry (say, an egress record) is caught at the gap.
import { describe, it, expect, afterAll } from 'vitest';
import { join } from 'node:path';
import { AuditLog } from '../../shared/audit.ts';
import { openAuditLog } from '../../cli/commands/audit.ts';
import { tempDir, rmDir } from '../coordinator/helpers.ts';
import { sha256Hex, fedlora } from './helpers.ts';
import { openSiteDb } from '../../site-agent/site-db.ts';

const dirs: string[] = [];
afterAll(() => dirs.forEach(rmDir));

describe('site audit log via the CLI', () => {
  it("checks a site's site_audit table (--site-dir): a deleted row is reported", async () => {
    const siteDir = tempDir('sec-site-audit');
    dirs.push(siteDir);
    const db = openSiteDb(siteDir);
    const log = new AuditLog(db, 'site_audit');
    for (let i = 1; i <= 4; i++) log.append('site-agent', 'egress', `job-1/r${i}`, { bytes: 1000 * i, sha256: sha256Hex(Buffer.from(String(i))) });
    db.close();
    const ok = await fedlora(['audit', 'verify', '--site-dir', siteDir]);
    expect(ok.status).toBe(0);
    expect(ok.stdout).toMatch(/audit chain OK: 4 entries .*site_audit/);
    const db2 = openSiteDb(siteDir);
    db2.exec('DROP TRIGGER site_audit_no_delete');
    db2.prepare('DELETE FROM site_audit WHERE seq = 2').run(); // hide one egress
    db2.close();
    const r = await fedlora(['audit', 'verify', '--site-dir', siteDir]);
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(/BROKEN at entry 3: sequence gap: expected 2/);
    // both at once is a usage error; a missing dir or table is named (what the CLI prints as error FEDLORA_ERR_...)
    expect(() => openAuditLog({ siteDir, dataDir: siteDir })).toThrow(/give --data-dir \(coordinator\) or --site-dir/);
    expect(() => openAuditLog({ siteDir: join(siteDir, 'nope') })).toThrow(expect.objectContaining({ code: 'FEDLORA_ERR_NOT_FOUND' }));
    expect(() => openAuditLog({ dataDir: siteDir })).toThrow(/coordinator\.sqlite does not exist/);
  });
});
