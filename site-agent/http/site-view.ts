// What the site's local page and /api/status show, read from the running agent's status and
// the site's SQLite file (data_* tables of the data pipeline, the site_audit log). Counts and
// audit entries only: no record content is ever read here.
import type { Database } from 'better-sqlite3-multiple-ciphers';

export interface EgressEntry { seq: number; ts: string; subject: string; what: string; to: string; bytes: number | null; sha256: string | null; details: Record<string, unknown> }
export interface SiteView {
  site_id: string | null;
  enrollment: Record<string, unknown> | null;
  agent: { state: string; connected: boolean; current_task: string; last_error: string | null; training_tokens_per_s: number };
  dataset: { available: boolean; records: number; splits: Record<string, number>; quarantined: number; quarantine_by_reason: Record<string, number>; languages: Record<string, number>; last_ingest: string | null };
  policy: Record<string, unknown> | null;
  egress: EgressEntry[];
  egress_totals: { updates: number; update_bytes: number; metric_reports: number; other: number };
  recent_rounds: { job: string; round: number; status: string; at: string }[];
  recent_tasks: { ts: string; action: string; subject: string }[];
}

function hasTable(db: Database, name: string): boolean {
  return !!db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(name);
}

function countBy(db: Database, sql: string): Record<string, number> {
  return Object.fromEntries((db.prepare(sql).all() as { k: string | null; n: number }[]).map((r) => [r.k ?? '(none)', r.n]));
}

export interface EgressTotals { updates: number; update_bytes: number; metric_reports: number; other: number }

/** Totals over every `egress` entry of the audit log (what the agent recorded as sent). */
export function egressTotals(db: Database): EgressTotals {
  const t = { updates: 0, update_bytes: 0, metric_reports: 0, other: 0 };
  if (!hasTable(db, 'site_audit')) return t;
  for (const r of db.prepare("SELECT details FROM site_audit WHERE action = 'egress'").iterate() as Iterable<{ details: string }>) {
    let d: Record<string, unknown>;
    try {
      d = JSON.parse(r.details) as Record<string, unknown>;
    } catch {
      continue;
    }
    if (d.what === 'adapter update') {
      t.updates++;
      t.update_bytes += Number(d.bytes) || 0;
    } else if (d.what === 'aggregate metrics') t.metric_reports++;
    else t.other++;
  }
  return t;
}

export function readSiteView(status: Record<string, unknown>, db: Database, config: object, egressLimit = 50): SiteView {
  const ds: SiteView['dataset'] = { available: false, records: 0, splits: {}, quarantined: 0, quarantine_by_reason: {}, languages: {}, last_ingest: null };
  if (hasTable(db, 'data_records')) {
    ds.available = true;
    ds.records = (db.prepare('SELECT COUNT(*) AS n FROM data_records').get() as { n: number }).n;
    ds.languages = countBy(db, 'SELECT lang AS k, COUNT(*) AS n FROM data_records GROUP BY lang ORDER BY lang');
    if (hasTable(db, 'data_splits')) ds.splits = countBy(db, 'SELECT split AS k, COUNT(*) AS n FROM data_splits GROUP BY split ORDER BY split');
    if (hasTable(db, 'data_quarantine')) {
      ds.quarantine_by_reason = countBy(db, 'SELECT reason AS k, COUNT(*) AS n FROM data_quarantine GROUP BY reason ORDER BY reason');
      ds.quarantined = Object.values(ds.quarantine_by_reason).reduce((a, b) => a + b, 0);
    }
    if (hasTable(db, 'data_ingest_runs')) ds.last_ingest = (db.prepare('SELECT started_at FROM data_ingest_runs ORDER BY id DESC LIMIT 1').get() as { started_at: string } | undefined)?.started_at ?? null;
  }
  const egress: EgressEntry[] = [];
  let recentTasks: SiteView['recent_tasks'] = [];
  if (hasTable(db, 'site_audit')) {
    for (const r of db.prepare("SELECT seq, ts, subject, details FROM site_audit WHERE action = 'egress' ORDER BY seq DESC LIMIT ?").all(egressLimit) as { seq: number; ts: string; subject: string; details: string }[]) {
      let d: Record<string, unknown> = {};
      try {
        d = JSON.parse(r.details) as Record<string, unknown>;
      } catch { /* shown as-is below */ }
      egress.push({ seq: r.seq, ts: r.ts, subject: r.subject, what: String(d.what ?? ''), to: String(d.to ?? ''), bytes: typeof d.bytes === 'number' ? d.bytes : null, sha256: typeof d.sha256 === 'string' ? d.sha256 : null, details: d });
    }
    recentTasks = db.prepare("SELECT ts, action, subject FROM site_audit WHERE action LIKE 'task_%' ORDER BY seq DESC LIMIT 20").all() as SiteView['recent_tasks'];
  }
  const rounds = Array.isArray(status.rounds) ? (status.rounds as { jobId: string; round: number; status: string; at: string }[]) : [];
  const cfg = config as { policy?: Record<string, unknown> };
  return {
    site_id: typeof status.siteId === 'string' ? status.siteId : null,
    enrollment: (status.enrollment as Record<string, unknown> | undefined) ?? null,
    agent: {
      state: String(status.state ?? 'unknown'), connected: status.connected === true, current_task: String(status.currentTaskId ?? ''),
      last_error: typeof status.lastError === 'string' ? status.lastError : null, training_tokens_per_s: Number(status.trainingTokensPerSecond ?? 0) || 0,
    },
    dataset: ds,
    policy: cfg.policy ?? null,
    egress,
    egress_totals: egressTotals(db),
    recent_rounds: rounds.slice(-20).reverse().map((r) => ({ job: r.jobId, round: r.round, status: r.status, at: r.at })),
    recent_tasks: recentTasks,
  };
}
