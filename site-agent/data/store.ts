// The data pipeline's tables in the site's SQLite file (<siteDir>/site.sqlite, WAL), all
// prefixed data_ (created by site.sqlite's migration list, site-agent/site-db.ts).
//
// Records are stored only after cleaning and de-identification; raw PHI never lands here.
// Splits are stored too, so a record keeps its train/validation/test assignment forever.

import type Database from 'better-sqlite3-multiple-ciphers';
import { basename, dirname } from 'node:path';
import type { CaseRecord } from './types.ts';
import { fail } from '../../shared/errors.ts';
import { migrateSiteDb, openSiteDb } from '../site-db.ts';

export type Split = 'train' | 'validation' | 'test';
export type DB = Database.Database;

export interface QuarantineEntry {
  reason: string;
  source: string;
  detail: string;
  runId?: number;
}

export class SiteDataStore {
  readonly db: DB;
  private readonly ownsDb: boolean;
  private readonly stmts;

  constructor(db: DB, ownsDb: boolean) {
    this.db = db;
    this.ownsDb = ownsDb;
    this.stmts = {
      insertRecord: db.prepare(
        'INSERT OR IGNORE INTO data_records (id, patient_key, lang, department, diagnosis, json, source, run_id) VALUES (?,?,?,?,?,?,?,?)',
      ),
      hasRecord: db.prepare('SELECT 1 FROM data_records WHERE id = ?').pluck(),
      quarantine: db.prepare('INSERT OR IGNORE INTO data_quarantine (run_id, qkey, reason, source, detail) VALUES (?,?,?,?,?)'),
      event: db.prepare('INSERT INTO data_events (kind, detail) VALUES (?,?)'),
    };
  }

  /** Returns false when a record with this content hash is already stored (a duplicate). */
  insertRecord(rec: CaseRecord, source: string, runId?: number): boolean {
    const r = this.stmts.insertRecord.run(
      rec.id, rec.patientKey, rec.lang, rec.department ?? null, rec.diagnosis ?? null, JSON.stringify(rec), source, runId ?? null,
    );
    return r.changes === 1;
  }

  hasRecord(id: string): boolean {
    return this.stmts.hasRecord.get(id) === 1;
  }

  /** `key` identifies the bad input (file hash + position): re-ingesting the same file does
   *  not quarantine the same record twice. Returns false when it was already quarantined. */
  addQuarantine(q: QuarantineEntry, key?: string): boolean {
    // The detail may quote input; cap it so a 10 MB bad record does not land in the table.
    return this.stmts.quarantine.run(q.runId ?? null, key ?? null, q.reason, q.source, q.detail.slice(0, 500)).changes === 1;
  }

  recordEvent(kind: string, detail: unknown): void {
    this.stmts.event.run(kind, JSON.stringify(detail));
  }

  events(kind?: string): { kind: string; detail: unknown; createdAt: string }[] {
    const rows = (kind
      ? this.db.prepare('SELECT kind, detail, created_at FROM data_events WHERE kind = ? ORDER BY id').all(kind)
      : this.db.prepare('SELECT kind, detail, created_at FROM data_events ORDER BY id').all()) as { kind: string; detail: string; created_at: string }[];
    return rows.map((r) => ({ kind: r.kind, detail: JSON.parse(r.detail), createdAt: r.created_at }));
  }

  countRecords(): number {
    return this.db.prepare('SELECT count(*) FROM data_records').pluck().get() as number;
  }

  /** All records in a stable order (by id). */
  allRecords(): CaseRecord[] {
    return (this.db.prepare('SELECT json FROM data_records ORDER BY id').pluck().all() as string[]).map((j) => JSON.parse(j) as CaseRecord);
  }

  *iterateRecords(): Generator<CaseRecord> {
    for (const j of this.db.prepare('SELECT json FROM data_records ORDER BY id').pluck().iterate() as IterableIterator<string>) {
      yield JSON.parse(j) as CaseRecord;
    }
  }

  quarantineByReason(): Record<string, number> {
    const rows = this.db.prepare('SELECT reason, count(*) AS n FROM data_quarantine GROUP BY reason ORDER BY reason').all() as { reason: string; n: number }[];
    return Object.fromEntries(rows.map((r) => [r.reason, r.n]));
  }

  quarantined(runId?: number): QuarantineEntry[] {
    const rows = (runId === undefined
      ? this.db.prepare('SELECT run_id, reason, source, detail FROM data_quarantine ORDER BY id').all()
      : this.db.prepare('SELECT run_id, reason, source, detail FROM data_quarantine WHERE run_id = ? ORDER BY id').all(runId)) as {
      run_id: number | null; reason: string; source: string; detail: string;
    }[];
    return rows.map((r) => ({ runId: r.run_id ?? undefined, reason: r.reason, source: r.source, detail: r.detail }));
  }

  startRun(format: string, deidEnabled: boolean): number {
    return Number(this.db.prepare('INSERT INTO data_ingest_runs (format, deid_enabled) VALUES (?,?)').run(format, deidEnabled ? 1 : 0).lastInsertRowid);
  }

  finishRun(runId: number, summary: unknown): void {
    this.db.prepare('UPDATE data_ingest_runs SET summary = ? WHERE id = ?').run(JSON.stringify(summary), runId);
  }

  recordFile(f: { sha256: string; path: string; size: number; runId: number; accepted: number; duplicates: number; quarantined: number }): void {
    this.db
      .prepare('INSERT OR REPLACE INTO data_ingested_files (sha256, path, size, run_id, accepted, duplicates, quarantined) VALUES (?,?,?,?,?,?,?)')
      .run(f.sha256, f.path, f.size, f.runId, f.accepted, f.duplicates, f.quarantined);
  }

  /** Stored split of every record that has one. */
  splits(): Map<string, Split> {
    const rows = this.db.prepare('SELECT record_id, split FROM data_splits').all() as { record_id: string; split: Split }[];
    return new Map(rows.map((r) => [r.record_id, r.split]));
  }

  /** Run fn in one transaction (many inserts → one fsync). */
  tx<T>(fn: () => T): T {
    return this.db.transaction(fn)();
  }

  close(): void {
    if (this.ownsDb && this.db.open) this.db.close();
  }
}

/** Open (creating if needed) the site's data tables. Pass the path <siteDir>/site.sqlite (opened
 *  through openSiteDb: encrypted per the site config) or an open handle shared with other modules
 *  (then close() leaves the handle open). Either way the file's schema is brought up to date first. */
export function openSiteDataStore(dbPathOrHandle: string | DB): SiteDataStore {
  if (typeof dbPathOrHandle !== 'string') {
    migrateSiteDb(dbPathOrHandle);
    return new SiteDataStore(dbPathOrHandle, false);
  }
  if (basename(dbPathOrHandle) !== 'site.sqlite') {
    throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `${dbPathOrHandle}: the site database is <siteDir>/site.sqlite`);
  }
  const db = openSiteDb(dirname(dbPathOrHandle));
  db.pragma('foreign_keys = ON');
  return new SiteDataStore(db, true);
}

export const siteDbPath = (siteDir: string): string => `${siteDir.replace(/\/+$/, '')}/site.sqlite`;
