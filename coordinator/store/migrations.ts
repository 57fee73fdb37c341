// The coordinator's SQLite file (<dataDir>/coordinator.sqlite): every table of it is created by
// this one migration list — the federation's, the PKI's (coordinator/enrollment.ts), secure
// aggregation's (coordinator/secagg/store.ts) and the audit log. Each entry runs once, in order,
// inside a transaction; PRAGMA user_version records how many have run
// (shared/sqlite-migrations.ts). Never edit a shipped entry: append a new one. Open the file
// with openCoordinatorDb, which runs what is missing. The file is plain SQLite unless
// coordinator.yaml beside it says `database: { encryption: sqlcipher }` (SQLCipher with the key
// of its key_file / key_env / key_command, shared/sqlite-cipher.ts).
import type Database from 'better-sqlite3-multiple-ciphers';
import { dirname, join, resolve } from 'node:path';
import { auditBaseTableSql, auditTableSql } from '../../shared/audit.ts';
import { openMigratedDb, runMigrations } from '../../shared/sqlite-migrations.ts';
import type { CipherDbSpec } from '../../shared/sqlite-cipher.ts';
import { keySourceOf, readDatabaseSection } from '../../shared/db-key.ts';
import { CoordinatorDatabaseSchema } from '../config.ts';

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
  // 4: security. The tamper-evident audit log (shared/audit.ts: its schema and append-only
  //    triggers, the same for site.sqlite's site_audit), and
  //    an index to find an update by its signature (a reused signature = a replayed update).
  `
  ${auditTableSql('audit_log')}
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
  // 6: one list for the whole file. The PKI and secure-aggregation tables were created by their
  //    modules (IF NOT EXISTS: files made before this entry have them already). And one site
  //    table: the status pki_sites kept (checked on every call) moves into sites (what selection
  //    reads); where the two disagreed the stricter wins (revoked > disabled > active), and a
  //    site the PKI knew that never connected gets its row. pki_sites goes.
  `
  CREATE TABLE IF NOT EXISTS pki_tokens (
    token_hash TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    created_at_ms INTEGER NOT NULL,
    expires_at_ms INTEGER NOT NULL,
    used_at_ms INTEGER,
    used_cert_serial TEXT
  );
  CREATE TABLE IF NOT EXISTS pki_certificates (
    serial TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    not_before_ms INTEGER NOT NULL,
    not_after_ms INTEGER NOT NULL,
    issued_at_ms INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    pem TEXT NOT NULL,
    via TEXT NOT NULL
  );
  CREATE INDEX IF NOT EXISTS pki_certificates_site ON pki_certificates(site_id);
  CREATE TABLE IF NOT EXISTS pki_crl (
    serial TEXT PRIMARY KEY,
    site_id TEXT NOT NULL,
    revoked_at_ms INTEGER NOT NULL,
    reason TEXT NOT NULL
  );
  CREATE TABLE IF NOT EXISTS secagg_rounds (
    job_id TEXT NOT NULL, round INTEGER NOT NULL, attempt INTEGER NOT NULL,
    stage TEXT NOT NULL CHECK (stage IN ('advertise','share','masked','unmask','done','failed')),
    config_json TEXT NOT NULL,
    advertise_deadline_ms INTEGER NOT NULL,
    stage_timeout_ms INTEGER NOT NULL,
    stage_deadline_ms INTEGER,
    roster_json TEXT, u2_json TEXT, survivors_json TEXT, dropped_json TEXT,
    error TEXT,
    purged INTEGER NOT NULL DEFAULT 0,
    created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL,
    PRIMARY KEY (job_id, round, attempt)
  );
  CREATE TABLE IF NOT EXISTS secagg_messages (
    job_id TEXT NOT NULL, round INTEGER NOT NULL, attempt INTEGER NOT NULL, site_id TEXT NOT NULL,
    stage TEXT NOT NULL CHECK (stage IN ('advertise','share','unmask')),
    payload TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (job_id, round, attempt, site_id, stage)
  );
  CREATE TABLE IF NOT EXISTS secagg_masked_chunks (
    job_id TEXT NOT NULL, round INTEGER NOT NULL, attempt INTEGER NOT NULL, site_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    data BLOB NOT NULL,
    received_ms INTEGER NOT NULL,
    PRIMARY KEY (job_id, round, attempt, site_id, idx)
  );
  CREATE TABLE IF NOT EXISTS pki_sites (
    site_id TEXT PRIMARY KEY,
    status TEXT NOT NULL CHECK (status IN ('active','disabled','revoked')),
    updated_at_ms INTEGER NOT NULL
  );
  INSERT INTO sites (id, status, enrolled_at_ms) SELECT site_id, status, updated_at_ms FROM pki_sites WHERE true
    ON CONFLICT(id) DO UPDATE SET status = CASE
      WHEN 'revoked' IN (sites.status, excluded.status) THEN 'revoked'
      WHEN 'disabled' IN (sites.status, excluded.status) THEN 'disabled'
      ELSE 'active' END;
  DROP TABLE pki_sites;
  `,
  // 7: the eligible sites of a DP job with Poisson sampling (privacy.dp.sample_rate < 1), fixed
  //    at submission (coordinator/jobs/population.ts): N of the fixed denominator q x N, and the
  //    only sites its rounds sample (a site enrolled later never changes N).
  `
  CREATE TABLE job_population (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    site_id TEXT NOT NULL,
    PRIMARY KEY (job_id, site_id)
  );
  `,
  // 8: where the audit chain starts after retention (shared/audit.ts's AuditLog.prune), as
  //    site.sqlite has it for site_audit.
  `
  ${auditBaseTableSql('audit_log')}
  `,
  // 9: access control of the HTTP API. Bearer tokens with a role, stored as sha256 only, with
  //    expiry and revocation (coordinator/http/api-tokens.ts; `fedlora coordinator token`); an
  //    active name is unique. And each site's share_site_metrics policy as its heartbeat last
  //    reported it (NULL = never reported: treated as 'consortium').
  `
  CREATE TABLE api_tokens (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    role TEXT NOT NULL CHECK (role IN ('admin','researcher','observer')),
    sha256 TEXT NOT NULL UNIQUE,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER,
    revoked_ms INTEGER,
    last_used_ms INTEGER
  );
  CREATE UNIQUE INDEX api_tokens_active_name ON api_tokens(name) WHERE revoked_ms IS NULL;
  ALTER TABLE sites ADD COLUMN share_site_metrics TEXT CHECK (share_site_metrics IN ('consortium','researchers','none'));
  `,
  // 10: evaluation figures a clinician reads. Each metric row may be about a subset of the items
  //     (subset: '' whole set, 'diagnosis=X', 'sex=F', 'diagnosis=X;predicted=Y', ...), about an
  //     exam file instead of the held-out set (eval_set 'exam:<name>'), and carry its site's 95%
  //     bootstrap interval; metric_bootstrap keeps the site's bootstrap replicates (float32 LE) of
  //     the figures pooled across sites, from which the consortium interval is computed
  //     (coordinator/metrics/consortium.ts).
  `
  ALTER TABLE metrics ADD COLUMN subset TEXT NOT NULL DEFAULT '';
  ALTER TABLE metrics ADD COLUMN eval_set TEXT NOT NULL DEFAULT '';
  ALTER TABLE metrics ADD COLUMN ci_low REAL;
  ALTER TABLE metrics ADD COLUMN ci_high REAL;
  ALTER TABLE metrics ADD COLUMN ci_resamples INTEGER;
  CREATE TABLE metric_bootstrap (
    metric_id INTEGER PRIMARY KEY REFERENCES metrics(id),
    replicates BLOB NOT NULL
  );
  `,
  // 11: data periods. A job's first rounds are period 0; `fedlora job continue` or its schedule
  //     adds the next (coordinator/jobs/periods.ts), recording each site's data revision (the
  //     latest ingest run that stored records, from its heartbeats) when the period began.
  `
  CREATE TABLE job_periods (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    period INTEGER NOT NULL,
    first_round INTEGER NOT NULL,
    rounds INTEGER NOT NULL,
    reason TEXT NOT NULL CHECK (reason IN ('submitted', 'continued', 'scheduled')),
    actor TEXT NOT NULL,
    site_revisions_json TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (job_id, period)
  );
  ALTER TABLE sites ADD COLUMN data_revision INTEGER;
  `,
  // 12: the LoRA rank of an accepted update whose site trained below the job's rank (job
  //     lora.min_site_r, site policy.max_lora_rank); NULL: the job's rank.
  `
  ALTER TABLE updates ADD COLUMN lora_r INTEGER;
  `,
];

/** What opening and rekeying <dataDir>/coordinator.sqlite need: its `database:` section comes
 *  from coordinator.yaml in the same folder (plain SQLite without one). */
export function coordinatorDbSpec(file: string): CipherDbSpec {
  const dir = dirname(resolve(file));
  const configName = join(dir, 'coordinator.yaml');
  const section = readDatabaseSection(configName, CoordinatorDatabaseSchema, configName);
  return {
    file: resolve(file), section, configName,
    source: section.encryption === 'none' ? null : keySourceOf(section, dir, configName),
    rekeyCommand: `fedlora coordinator rekey --data-dir ${dir}`,
  };
}

/** Open (creating if needed) coordinator.sqlite and bring its schema up to date. WAL, and
 *  synchronous=FULL so a commit that acknowledged something survives a power cut. `readonly`:
 *  an existing file as it is (no migrations), for checks. */
export function openCoordinatorDb(file: string, o: { readonly?: boolean } = {}): Database.Database {
  return openMigratedDb(coordinatorDbSpec(file), MIGRATIONS, { readonly: o.readonly, what: 'the coordinator database', foreignKeys: true });
}

/** Bring the schema up to date; returns the version before and after. */
export function migrate(db: Database.Database): { from: number; to: number } {
  return runMigrations(db, MIGRATIONS);
}
