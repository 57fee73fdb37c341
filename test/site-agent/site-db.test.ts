// site.sqlite has one schema (site-agent/site-db.ts): a file made before the list existed (each
// module created its own tables, user_version 0, plain SQLite) is refused until `fedlora site
// rekey` encrypts it, then opens with every row kept and ends up with the same tables and columns
// as a fresh file; opening again runs nothing.
import { describe, it, expect, afterAll } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3-multiple-ciphers';
import { SITE_MIGRATIONS, migrateSiteDb, openSiteDb, siteDbSpec } from '../../site-agent/site-db.ts';
import { rekeyCipherDb } from '../../shared/sqlite-cipher.ts';
import { openSiteDataStore } from '../../site-agent/data/index.ts';
import { AuditLog } from '../../shared/audit.ts';

const root = mkdtempSync(join(tmpdir(), 'fedlora-site-db-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

// Tables as the data pipeline, the outbox and the audit log created them before the list
// (a subset: a site that ingested, trained once and never ran the assistant).
const PREVIOUS_MODULE_TABLES = `
CREATE TABLE data_records (id TEXT PRIMARY KEY, patient_key TEXT NOT NULL, lang TEXT NOT NULL, department TEXT, diagnosis TEXT, json TEXT NOT NULL,
  source TEXT NOT NULL, run_id INTEGER, created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')));
CREATE INDEX data_records_dx ON data_records(diagnosis);
CREATE TABLE site_outbox (update_id TEXT PRIMARY KEY, task_id TEXT NOT NULL, job_id TEXT NOT NULL, round INTEGER NOT NULL, header_json TEXT NOT NULL,
  info_json TEXT NOT NULL, file TEXT NOT NULL, state TEXT NOT NULL CHECK (state IN ('pending', 'acknowledged', 'discarded')), reason TEXT,
  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL);
CREATE TABLE site_audit (seq INTEGER PRIMARY KEY, ts TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL, subject TEXT NOT NULL,
  details TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
CREATE TRIGGER site_audit_no_update BEFORE UPDATE ON site_audit BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER site_audit_no_delete BEFORE DELETE ON site_audit BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
`;

const columnsOf = (db: Database.Database) => Object.fromEntries(
  (db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' AND name NOT LIKE 'kb_fts_%' ORDER BY name`).all() as { name: string }[])
    .map(({ name }) => [name, (db.prepare(`PRAGMA table_info(${name})`).all() as { name: string; type: string; notnull: number; pk: number }[]).map((c) => `${c.name} ${c.type} ${c.notnull} ${c.pk}`)]),
);

describe('site.sqlite schema', () => {
  it('a file made before the migration list upgrades with its rows, like a fresh file', () => {
    const siteDir = mkdtempSync(join(root, 'site-'));
    const raw = new Database(join(siteDir, 'site.sqlite'));
    raw.exec(PREVIOUS_MODULE_TABLES);
    raw.prepare(`INSERT INTO data_records (id, patient_key, lang, diagnosis, json, source) VALUES ('r1', 'p1', 'en', 'angina', '{}', 'a.csv')`).run();
    raw.prepare(`INSERT INTO site_outbox (update_id, task_id, job_id, round, header_json, info_json, file, state, created_ms, updated_ms)
      VALUES ('u1', 't1', 'j1', 1, '{}', '{}', 'f', 'pending', 1, 1)`).run();
    raw.close();
    // The audit log appended through the previous code path's table.
    const before = openAuditRaw(siteDir);
    expect(before.pragma('user_version', { simple: true })).toBe(0);
    before.close();

    // Made before encryption at rest: refused, naming the command that encrypts it in place.
    expect(() => openSiteDb(siteDir)).toThrow(expect.objectContaining({
      code: 'FEDLORA_ERR_DB_PLAINTEXT', message: expect.stringContaining(`fedlora site rekey --site-dir ${siteDir}`),
    }));
    expect(rekeyCipherDb(siteDbSpec(siteDir))).toMatchObject({ from: 'plain', keyAt: `key file ${join(siteDir, 'secrets', 'db.key')}` });

    const db = openSiteDb(siteDir);
    try {
      expect(db.pragma('user_version', { simple: true })).toBe(SITE_MIGRATIONS.length);
      expect(db.prepare('SELECT id, diagnosis FROM data_records').all()).toEqual([{ id: 'r1', diagnosis: 'angina' }]);
      expect(db.prepare('SELECT update_id, state FROM site_outbox').all()).toEqual([{ update_id: 'u1', state: 'pending' }]);
      const audit = new AuditLog(db, 'site_audit');
      expect(audit.verify()).toMatchObject({ ok: true, entries: 1 });
      // Tables the old file lacked are there now (the data pipeline's, the assistant's, the audit base).
      const store = openSiteDataStore(db);
      expect(store.countRecords()).toBe(1);
      expect(migrateSiteDb(db)).toEqual({ from: SITE_MIGRATIONS.length, to: SITE_MIGRATIONS.length });
      const freshDir = mkdtempSync(join(root, 'fresh-'));
      const fresh = openSiteDb(freshDir);
      try {
        expect(columnsOf(db)).toEqual(columnsOf(fresh));
        expect(Object.keys(columnsOf(fresh))).toEqual(expect.arrayContaining(['data_records', 'site_outbox', 'site_audit', 'site_audit_base', 'serve_answers', 'kb_passages']));
      } finally {
        fresh.close();
      }
    } finally {
      db.close();
    }
  });
});

/** The previous code appended to site_audit on a file without any migration bookkeeping. */
function openAuditRaw(siteDir: string): Database.Database {
  const db = new Database(join(siteDir, 'site.sqlite'));
  new AuditLog(db, 'site_audit').append('site-agent', 'egress', 'job-1/r1', { bytes: 10 });
  return db;
}
