// Schema migrations for the coordinator's SQLite file (<dataDir>/coordinator.sqlite, shared
// with the pki_* tables of coordinator/enrollment.ts). Each entry runs once, in order, inside
// a transaction; PRAGMA user_version records how many have run. Never edit a shipped entry:
// append a new one.
import type { Database } from 'better-sqlite3';

export const MIGRATIONS: string[] = [
  // 1: the federation tables
  `
  CREATE TABLE sites (
    id TEXT PRIMARY KEY,
    status TEXT NOT NULL DEFAULT 'active' CHECK (status IN ('active','disabled','revoked')),
    last_seen_ms INTEGER,
    cert_serial TEXT,
    cert_not_after_ms INTEGER,
    agent_version TEXT,
    state TEXT,
    enrolled_at_ms INTEGER NOT NULL
  );
  CREATE TABLE jobs (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    spec_json TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('running','completed','failed','cancelled')),
    current_version INTEGER NOT NULL DEFAULT 0,
    error TEXT,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
  );
  CREATE TABLE rounds (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    round INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    state TEXT NOT NULL CHECK (state IN ('open','aggregating','published','failed')),
    base_version INTEGER NOT NULL,
    selected_json TEXT NOT NULL,
    seed INTEGER NOT NULL,
    deadline_ms INTEGER NOT NULL,
    started_ms INTEGER NOT NULL,
    aggregating_ms INTEGER,
    published_ms INTEGER,
    error TEXT,
    strategy_state TEXT,
    metrics_json TEXT,
    PRIMARY KEY (job_id, round, attempt)
  );
  CREATE TABLE tasks (
    task_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    site_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending','delivered','declined','submitted','cancelled')),
    decline_reason TEXT,
    decline_code TEXT,
    created_ms INTEGER NOT NULL
  );
  CREATE INDEX tasks_site ON tasks(site_id, status);
  CREATE TABLE updates (
    update_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    attempt INTEGER NOT NULL,
    site_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    base_version INTEGER NOT NULL,
    path TEXT NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    chunk_size INTEGER NOT NULL,
    received_chunks INTEGER NOT NULL DEFAULT 0,
    received_bytes INTEGER NOT NULL DEFAULT 0,
    examples INTEGER NOT NULL,
    norm REAL,
    clipped INTEGER,
    status TEXT NOT NULL CHECK (status IN ('receiving','received','accepted','rejected','discarded')),
    reason TEXT,
    signature BLOB,
    metadata_json TEXT,
    received_ms INTEGER NOT NULL
  );
  CREATE INDEX updates_round ON updates(job_id, round, attempt, status);
  CREATE TABLE adapter_versions (
    job_id TEXT NOT NULL,
    version INTEGER NOT NULL,
    owner_site TEXT NOT NULL DEFAULT '',
    round INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    size INTEGER NOT NULL,
    manifest_json TEXT NOT NULL,
    manifest_sha256 TEXT NOT NULL,
    signature TEXT NOT NULL,
    path TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (job_id, version, owner_site)
  );
  CREATE TABLE metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    site_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    metric TEXT NOT NULL,
    value REAL NOT NULL,
    count INTEGER NOT NULL DEFAULT 0,
    model_owner TEXT NOT NULL DEFAULT '',
    adapter_version INTEGER,
    phase TEXT,
    task_id TEXT,
    created_ms INTEGER NOT NULL
  );
  CREATE INDEX metrics_job ON metrics(job_id, round);
  CREATE TABLE privacy_ledger (
    job_id TEXT NOT NULL,
    round INTEGER NOT NULL,
    epsilon REAL NOT NULL,
    delta REAL NOT NULL,
    noise_multiplier REAL NOT NULL,
    sample_rate REAL NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (job_id, round)
  );
  `,
  // 2: what the round's tasks tell sites, fixed when the round opens (strategy payload kind and
  //    configureRound() settings), so a task re-sent after a restart is the same task.
  `
  ALTER TABLE rounds ADD COLUMN task_config TEXT;
  `,
  // 3: researchers' view. Cross-evaluation requests (an admin asks; the round engine's fan-out
  //    of CROSS_EVAL tasks picks up 'pending' rows), and the training throughput a site last
  //    reported in its heartbeat (for the Prometheus gauge).
  `
  CREATE TABLE cross_eval_requests (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT NOT NULL,
    requested_by TEXT NOT NULL,
    sites_json TEXT,
    status TEXT NOT NULL DEFAULT 'pending' CHECK (status IN ('pending','dispatched','done','failed','cancelled')),
    note TEXT,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
  );
  CREATE INDEX cross_eval_requests_job ON cross_eval_requests(job_id, status);
  ALTER TABLE sites ADD COLUMN training_tokens_per_s REAL;
  ALTER TABLE sites ADD COLUMN training_tokens_at_ms INTEGER;
  `,
  // 4: security. The tamper-evident audit log (same schema and append-only triggers as
  //    shared/audit.ts's AuditLog, which also creates it IF NOT EXISTS on unmigrated files), and
  //    an index to find an update by its signature (a reused signature = a replayed update).
  `
  CREATE TABLE IF NOT EXISTS audit_log (
    seq INTEGER PRIMARY KEY,
    ts TEXT NOT NULL,
    actor TEXT NOT NULL,
    action TEXT NOT NULL,
    subject TEXT NOT NULL,
    details TEXT NOT NULL,
    prev_hash TEXT NOT NULL,
    hash TEXT NOT NULL
  );
  CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
  CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
    BEGIN SELECT RAISE(ABORT, 'audit log is append-only'); END;
  CREATE INDEX IF NOT EXISTS audit_log_action ON audit_log(action, seq);
  CREATE INDEX IF NOT EXISTS updates_signature ON updates(signature);
  `,
  // 5: side tasks: EVALUATE of a completed job's final version and the cross-evaluation tasks
  //    (UPLOAD_LOCAL, CROSS_EVAL). Not round tasks (no round row, nothing waits on them), but
  //    persisted so a site offline when they are made gets them when it connects, and a
  //    cross-eval request in flight survives a coordinator restart (coordinator/store/side-tasks.ts).
  //    payload_json is the Task message as sent; request_id links a cross_eval_requests row.
  `
  CREATE TABLE side_tasks (
    task_id TEXT PRIMARY KEY,
    job_id TEXT NOT NULL,
    site_id TEXT NOT NULL,
    kind TEXT NOT NULL,
    payload_json TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('pending','delivered','done','declined','expired')),
    request_id INTEGER,
    decline_reason TEXT,
    decline_code TEXT,
    created_ms INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
  );
  CREATE INDEX side_tasks_site ON side_tasks(site_id, status);
  CREATE INDEX side_tasks_request ON side_tasks(request_id, kind);
  CREATE INDEX metrics_task ON metrics(task_id);
  ALTER TABLE cross_eval_requests ADD COLUMN dispatched_ms INTEGER;
  `,
];

/** Bring the schema up to date; returns the version before and after. */
export function migrate(db: Database): { from: number; to: number } {
  const from = db.pragma('user_version', { simple: true }) as number;
  for (let v = from; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]);
      db.pragma(`user_version = ${v + 1}`);
    }).immediate();
  }
  return { from, to: MIGRATIONS.length };
}
