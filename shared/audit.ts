// Tamper-evident audit log, used by the coordinator and by each site agent.
//
// An append-only SQLite table where every entry carries the sha256 of the previous entry:
// hash_i = sha256(hash_{i-1} || canonical JSON of entry i). Editing, deleting or reordering a
// row breaks the chain from that row on, and `verify()` reports the first broken entry.
// Triggers refuse UPDATE and DELETE through SQLite itself, so an accidental write by the
// product fails loudly; a deliberate edit of the file is caught by the chain.
// The tables (<table>, its two triggers, <table>_base) are created by the database's migration
// list: audit_log by coordinator/store/migrations.ts, site_audit by site-agent/site-db.ts.

import type Database from 'better-sqlite3-multiple-ciphers';
import { createHash } from 'node:crypto';
import { fail } from './errors.ts';

export interface AuditEntry {
  seq: number;
  ts: string; // ISO time
  actor: string; // 'coordinator', 'admin', a site id, 'site-agent'
  action: string; // enroll, token_issued, task, update_received, aggregate, publish, privacy_spend, revoke, egress, ...
  subject: string; // what it is about: job/round/site/update id
  details: Record<string, unknown>;
  prevHash: string;
  hash: string;
}

export interface VerifyResult {
  ok: boolean;
  entries: number;
  /** Entries removed by retention before the first one kept (0 when none were). */
  pruned: number;
  /** First entry whose hash or link does not match (null when ok). */
  firstBroken: { seq: number; reason: string } | null;
}

/** A (seq, hash) pair recorded OUTSIDE the database (`fedlora audit head`, e.g. by a daily job
 *  into write-once storage). The chain alone cannot show that its newest entries were cut off:
 *  a shorter chain is still a valid chain. An anchor can: the entry it names must still be
 *  there with the same hash. */
export interface AuditAnchor {
  seq: number;
  hash: string;
}

/** Parse "SEQ:HASH" (as `fedlora audit head` prints it); `where` names the source in errors. */
export function parseAnchor(text: string, where: string): AuditAnchor {
  const m = /^\s*(\d+):([0-9a-f]{64})\s*$/.exec(text);
  if (!m || Number(m[1]) < 1) throw new Error(`${where}: "${text.trim().slice(0, 80)}" is not an audit anchor SEQ:HASH (a positive entry number and 64 lowercase hex characters, as printed by \`fedlora audit head\`)`);
  return { seq: Number(m[1]), hash: m[2] };
}

const GENESIS = '0'.repeat(64);

/** Canonical JSON: keys sorted at every level, so the hash does not depend on insertion order. */
/** The audit table `table` with its append-only triggers, for a database's migration list
 *  (coordinator.sqlite: audit_log, site.sqlite: site_audit). */
export function auditTableSql(table: string): string {
  return `
CREATE TABLE IF NOT EXISTS ${table} (
  seq INTEGER PRIMARY KEY,
  ts TEXT NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  subject TEXT NOT NULL,
  details TEXT NOT NULL,
  prev_hash TEXT NOT NULL,
  hash TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS ${table}_no_update BEFORE UPDATE ON ${table}
  BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
CREATE TRIGGER IF NOT EXISTS ${table}_no_delete BEFORE DELETE ON ${table}
  BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
`;
}

/** <table>_base: where the chain of `table` starts after retention removed its oldest entries (prune). */
export function auditBaseTableSql(table: string): string {
  return `CREATE TABLE IF NOT EXISTS ${table}_base (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL, removed INTEGER NOT NULL, pruned_at TEXT NOT NULL);`;
}

export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v ?? null);
  if (Array.isArray(v)) return '[' + v.map(canonicalJson).join(',') + ']';
  const o = v as Record<string, unknown>;
  return '{' + Object.keys(o).filter((k) => o[k] !== undefined).sort().map((k) => JSON.stringify(k) + ':' + canonicalJson(o[k])).join(',') + '}';
}

function entryHash(prevHash: string, e: Omit<AuditEntry, 'hash' | 'prevHash'>): string {
  const body = canonicalJson({ seq: e.seq, ts: e.ts, actor: e.actor, action: e.action, subject: e.subject, details: e.details });
  return createHash('sha256').update(prevHash).update(body).digest('hex');
}

export class AuditLog {
  private readonly db: Database.Database;
  private readonly table: string;

  constructor(db: Database.Database, table = 'audit_log') {
    if (!/^[a-z_]+$/.test(table)) throw new Error(`audit table name "${table}" must be [a-z_]+`);
    this.db = db;
    this.table = table;
    if (!db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(table)) {
      throw fail('FEDLORA_ERR_NOT_FOUND', `${db.name}: no audit table ${table} (open the database with its migration list: openCoordinatorDb or openSiteDb)`);
    }
  }

  /** Append one entry (inside the caller's transaction if there is one). The write lock is taken
   *  first (BEGIN IMMEDIATE): the site agent and the site's assistant append from two processes. */
  append(actor: string, action: string, subject: string, details: Record<string, unknown> = {}, now = new Date()): AuditEntry {
    const run = this.db.transaction(() => {
      const last = this.db.prepare(`SELECT seq, hash FROM ${this.table} ORDER BY seq DESC LIMIT 1`).get() as { seq: number; hash: string } | undefined;
      const seq = (last?.seq ?? 0) + 1;
      const prevHash = last?.hash ?? GENESIS;
      const base = { seq, ts: now.toISOString(), actor, action, subject, details };
      const hash = entryHash(prevHash, base);
      this.db
        .prepare(`INSERT INTO ${this.table} (seq, ts, actor, action, subject, details, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`)
        .run(seq, base.ts, actor, action, subject, canonicalJson(details), prevHash, hash);
      return { ...base, prevHash, hash };
    });
    return run.immediate();
  }

  /** Retention: remove the entries older than `before` (always a prefix of the chain) without
   *  breaking verification. The (seq, hash) of the last removed entry is kept in <table>_base and
   *  an `audit_pruned` entry naming it is appended; verify() starts from that hash and requires
   *  that entry, so a forged base is caught like any edit. Returns null when nothing is old enough. */
  prune(before: Date, actor = 'retention'): { removed: number; upToSeq: number } | null {
    const run = this.db.transaction(() => {
      const last = this.db.prepare(`SELECT seq, hash FROM ${this.table} WHERE ts < ? ORDER BY seq DESC LIMIT 1`).get(before.toISOString()) as { seq: number; hash: string } | undefined;
      if (!last) return null;
      const prior = this.base();
      // The append-only trigger is lifted for this one statement, inside this transaction.
      this.db.exec(`DROP TRIGGER IF EXISTS ${this.table}_no_delete`);
      const removed = this.db.prepare(`DELETE FROM ${this.table} WHERE seq <= ?`).run(last.seq).changes;
      this.db.exec(`CREATE TRIGGER ${this.table}_no_delete BEFORE DELETE ON ${this.table} BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;`);
      const total = (prior?.removed ?? 0) + removed;
      this.db.prepare(`INSERT INTO ${this.table}_base (id, seq, hash, removed, pruned_at) VALUES (1, ?, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash, removed = excluded.removed, pruned_at = excluded.pruned_at`)
        .run(last.seq, last.hash, total, new Date().toISOString());
      this.append(actor, 'audit_pruned', `${this.table}:${last.seq}`, { up_to_seq: last.seq, up_to_hash: last.hash, removed, before: before.toISOString() });
      return { removed, upToSeq: last.seq };
    });
    return run.immediate();
  }

  /** Where the kept chain starts after retention (null when nothing was ever removed). */
  private base(): { seq: number; hash: string; removed: number } | null {
    const has = this.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(`${this.table}_base`);
    if (!has) return null;
    return (this.db.prepare(`SELECT seq, hash, removed FROM ${this.table}_base WHERE id = 1`).get() as { seq: number; hash: string; removed: number } | undefined) ?? null;
  }

  list(opts: { action?: string; limit?: number; afterSeq?: number } = {}): AuditEntry[] {
    const where: string[] = [];
    const args: unknown[] = [];
    if (opts.action) {
      where.push('action = ?');
      args.push(opts.action);
    }
    if (opts.afterSeq !== undefined) {
      where.push('seq > ?');
      args.push(opts.afterSeq);
    }
    const sql = `SELECT * FROM ${this.table} ${where.length ? 'WHERE ' + where.join(' AND ') : ''} ORDER BY seq ${opts.limit ? 'DESC LIMIT ' + Number(opts.limit) : 'ASC'}`;
    const rows = this.db.prepare(sql).all(...args) as Record<string, unknown>[];
    const out = rows.map(rowToEntry);
    return opts.limit ? out.reverse() : out;
  }

  /** The newest entry's (seq, hash): record it outside the database as an anchor. */
  head(): AuditAnchor | null {
    const r = this.db.prepare(`SELECT seq, hash FROM ${this.table} ORDER BY seq DESC LIMIT 1`).get() as { seq: number; hash: string } | undefined;
    return r ? { seq: Number(r.seq), hash: String(r.hash) } : null;
  }

  /** Walk the whole chain; report the first entry whose link or hash does not match, then
   *  check each anchor: its entry must exist (else the log was truncated) with that hash. */
  verify(anchors: AuditAnchor[] = []): VerifyResult {
    const r = this.verifyChain();
    if (!r.ok) return r;
    const hashOf = this.db.prepare(`SELECT hash FROM ${this.table} WHERE seq = ?`);
    const base = this.base();
    for (const a of [...anchors].sort((x, y) => x.seq - y.seq)) {
      if (base && a.seq <= base.seq) {
        // Removed by retention: only the entry the kept chain starts from can still be checked.
        if (a.seq === base.seq && a.hash !== base.hash) return { ...r, ok: false, firstBroken: { seq: a.seq, reason: `the retention base ${base.seq} does not match anchor ${a.seq}:${a.hash.slice(0, 12)}…` } };
        continue;
      }
      const row = hashOf.get(a.seq) as { hash: string } | undefined;
      if (!row) return { ok: false, entries: r.entries, pruned: r.pruned, firstBroken: { seq: r.entries + 1, reason: `truncated: anchor ${a.seq}:${a.hash.slice(0, 12)}… names entry ${a.seq}, but the log ends at entry ${r.entries}` } };
      if (row.hash !== a.hash) return { ok: false, entries: r.entries, pruned: r.pruned, firstBroken: { seq: a.seq, reason: `entry ${a.seq} does not match anchor ${a.seq}:${a.hash.slice(0, 12)}… (the log was rewritten from here or before)` } };
    }
    return r;
  }

  private verifyChain(): VerifyResult {
    const base = this.base();
    const pruned = base?.removed ?? 0;
    let prev = base?.hash ?? GENESIS;
    let n = 0;
    let expectedSeq = (base?.seq ?? 0) + 1;
    let baseRecorded = base === null;
    for (const row of this.db.prepare(`SELECT * FROM ${this.table} ORDER BY seq ASC`).iterate() as Iterable<Record<string, unknown>>) {
      n++;
      let e: AuditEntry;
      try {
        e = rowToEntry(row);
      } catch {
        return { ok: false, entries: n, pruned, firstBroken: { seq: Number(row.seq), reason: 'details are not valid JSON' } };
      }
      if (e.seq !== expectedSeq) return { ok: false, entries: n, pruned, firstBroken: { seq: e.seq, reason: `sequence gap: expected ${expectedSeq}` } };
      if (e.prevHash !== prev) return { ok: false, entries: n, pruned, firstBroken: { seq: e.seq, reason: 'prev_hash does not match the previous entry' } };
      const h = entryHash(prev, e);
      if (h !== e.hash) return { ok: false, entries: n, pruned, firstBroken: { seq: e.seq, reason: 'entry content does not match its hash (edited)' } };
      if (!baseRecorded && e.action === 'audit_pruned' && e.details.up_to_seq === base!.seq && e.details.up_to_hash === base!.hash) baseRecorded = true;
      prev = e.hash;
      expectedSeq++;
    }
    if (!baseRecorded) return { ok: false, entries: n, pruned, firstBroken: { seq: base!.seq + 1, reason: `the chain starts after entry ${base!.seq} (retention), but no audit_pruned entry records that base` } };
    return { ok: true, entries: n, pruned, firstBroken: null };
  }
}

function rowToEntry(r: Record<string, unknown>): AuditEntry {
  return {
    seq: Number(r.seq),
    ts: String(r.ts),
    actor: String(r.actor),
    action: String(r.action),
    subject: String(r.subject),
    details: JSON.parse(String(r.details)),
    prevHash: String(r.prev_hash),
    hash: String(r.hash),
  };
}
