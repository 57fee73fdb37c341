// site.sqlite, the site's one database (<siteDir>/site.sqlite, WAL): every table of it is
// created by this one migration list — the data pipeline's data_* (site-agent/data/store.ts),
// the federation client's outbox (site-agent/agent/outbox.ts), the tamper-evident site_audit
// (shared/audit.ts) and the assistant's serve_, kb_, gate_ and safety_ tables
// (site-agent/serve/). Each entry runs once, in order, inside a transaction; PRAGMA
// user_version records how many have run (shared/sqlite-migrations.ts). Never edit a shipped entry: append a new one.
// Open the file with openSiteDb (or openSiteDataStore), which runs what is missing; nothing else
// opens site.sqlite, because the file is encrypted at rest (SQLCipher, shared/sqlite-cipher.ts)
// with the key the site config's `database:` section names (default: secrets/db.key, made 0600
// with the database).
import type Database from 'better-sqlite3-multiple-ciphers';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { auditBaseTableSql, auditTableSql } from '../shared/audit.ts';
import { openMigratedDb, runMigrations } from '../shared/sqlite-migrations.ts';
import type { CipherDbSpec } from '../shared/sqlite-cipher.ts';
import { keySourceOf, readDatabaseSection } from '../shared/db-key.ts';
import { SITE_CONFIG_NAMES, SiteDatabaseSchema } from './config.ts';

export const SITE_MIGRATIONS: string[] = [
  // 1: the tables as their modules created them before this list (IF NOT EXISTS: files made
  //    before it have some of them already).
  //    Data pipeline: records are stored only after cleaning and de-identification; splits are
  //    stored too, so a record keeps its train/validation/test assignment forever.
  //    Outbox: an update is recorded (exact signed header) before its first byte is sent.
  //    Audit: append-only (triggers) and hash-chained; site_audit_base keeps where the chain
  //    starts after retention (AuditLog.prune).
  //    Assistant: users and API keys, answers and the doctors' confirmations, the knowledge
  //    base, the release gate and the safety-suite results.
  // serve_confirmations is the doctors' verdict on an answer; later work turns it into labels for
  // training and evaluation, so its shape is a contract (documented in deploy/README.md):
  //   answer_id      the answer confirmed (serve_answers.id, also the API's completion id)
  //   verdict        'accept' (answer right as given) | 'edit' (right after the doctor's edit) | 'reject'
  //   final_text     the answer as the doctor accepts it (accept: the model's answer; edit: the edited
  //                  text; reject: NULL)
  //   final_diagnosis the doctor's own diagnosis (free text, may be NULL)
  //   question_deid, answer_text, model_version, adapter_sha256: copied from the answer, so a label
  //                  stands on its own after the answer's retention period
  //   user_name, created_at, comment
  `
CREATE TABLE IF NOT EXISTS data_records (
  id TEXT PRIMARY KEY,
  patient_key TEXT NOT NULL,
  lang TEXT NOT NULL,
  department TEXT,
  diagnosis TEXT,
  json TEXT NOT NULL,
  source TEXT NOT NULL,
  run_id INTEGER,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
);
CREATE INDEX IF NOT EXISTS data_records_dx ON data_records(diagnosis);
CREATE TABLE IF NOT EXISTS data_quarantine (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  run_id INTEGER,
  qkey TEXT UNIQUE,
  reason TEXT NOT NULL,
  source TEXT NOT NULL,
  detail TEXT NOT NULL,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
);
CREATE INDEX IF NOT EXISTS data_quarantine_reason ON data_quarantine(reason);
CREATE TABLE IF NOT EXISTS data_ingest_runs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  started_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  format TEXT NOT NULL,
  deid_enabled INTEGER NOT NULL,
  summary TEXT
);
CREATE TABLE IF NOT EXISTS data_ingested_files (
  sha256 TEXT NOT NULL,
  path TEXT NOT NULL,
  size INTEGER NOT NULL,
  run_id INTEGER NOT NULL,
  accepted INTEGER NOT NULL,
  duplicates INTEGER NOT NULL,
  quarantined INTEGER NOT NULL,
  PRIMARY KEY (sha256, run_id)
);
CREATE TABLE IF NOT EXISTS data_splits (
  record_id TEXT PRIMARY KEY REFERENCES data_records(id),
  split TEXT NOT NULL CHECK (split IN ('train','validation','test')),
  stratum TEXT NOT NULL,
  seed INTEGER NOT NULL,
  assigned_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
);
CREATE INDEX IF NOT EXISTS data_splits_stratum ON data_splits(stratum, split);
CREATE TABLE IF NOT EXISTS data_events (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  kind TEXT NOT NULL,
  detail TEXT NOT NULL,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
);
CREATE TABLE IF NOT EXISTS data_fhir_stage (
  run_id INTEGER NOT NULL,
  type TEXT NOT NULL,
  rid TEXT,
  alias TEXT,
  patient_ref TEXT,
  encounter_ref TEXT,
  source TEXT NOT NULL,
  json TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS data_fhir_stage_enc ON data_fhir_stage(run_id, encounter_ref);
CREATE INDEX IF NOT EXISTS data_fhir_stage_id ON data_fhir_stage(run_id, type, rid);
CREATE INDEX IF NOT EXISTS data_fhir_stage_alias ON data_fhir_stage(run_id, type, alias);
CREATE TABLE IF NOT EXISTS site_outbox (
  update_id TEXT PRIMARY KEY,
  task_id TEXT NOT NULL,
  job_id TEXT NOT NULL,
  round INTEGER NOT NULL,
  header_json TEXT NOT NULL,
  info_json TEXT NOT NULL,
  file TEXT NOT NULL,
  state TEXT NOT NULL CHECK (state IN ('pending', 'acknowledged', 'discarded')),
  reason TEXT,
  created_ms INTEGER NOT NULL,
  updated_ms INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS site_outbox_task ON site_outbox (task_id);
CREATE INDEX IF NOT EXISTS site_outbox_state ON site_outbox (state);
${auditTableSql('site_audit')}
${auditBaseTableSql('site_audit')}
CREATE TABLE IF NOT EXISTS serve_users (
  name TEXT PRIMARY KEY,
  role TEXT NOT NULL CHECK (role IN ('clinician','admin')),
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS serve_api_keys (
  id TEXT PRIMARY KEY,
  user_name TEXT NOT NULL REFERENCES serve_users(name),
  key_sha256 TEXT NOT NULL UNIQUE,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  revoked_at TEXT
);
CREATE TABLE IF NOT EXISTS serve_answers (
  id TEXT PRIMARY KEY,
  user_name TEXT NOT NULL,
  created_at TEXT NOT NULL,
  endpoint TEXT NOT NULL,
  model_version TEXT NOT NULL,
  adapter_sha256 TEXT,
  prompt_sha256 TEXT NOT NULL,
  question_deid TEXT,
  answer_text TEXT NOT NULL,
  answer_sha256 TEXT NOT NULL,
  citations TEXT NOT NULL,
  finish_reason TEXT NOT NULL,
  latency_ms REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS serve_answers_created ON serve_answers(created_at);
CREATE TABLE IF NOT EXISTS serve_confirmations (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  answer_id TEXT NOT NULL,
  user_name TEXT NOT NULL,
  verdict TEXT NOT NULL CHECK (verdict IN ('accept','edit','reject')),
  final_text TEXT,
  final_diagnosis TEXT,
  comment TEXT,
  question_deid TEXT,
  answer_text TEXT NOT NULL,
  model_version TEXT NOT NULL,
  adapter_sha256 TEXT,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
);
CREATE INDEX IF NOT EXISTS serve_confirmations_answer ON serve_confirmations(answer_id);
CREATE TABLE IF NOT EXISTS kb_documents (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  name TEXT NOT NULL UNIQUE,
  source_path TEXT NOT NULL,
  sha256 TEXT NOT NULL,
  format TEXT NOT NULL,
  title TEXT,
  passages INTEGER NOT NULL,
  added_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
);
CREATE TABLE IF NOT EXISTS kb_passages (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  doc_id INTEGER NOT NULL REFERENCES kb_documents(id) ON DELETE CASCADE,
  ord INTEGER NOT NULL,
  heading TEXT,
  text TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS kb_passages_doc ON kb_passages(doc_id, ord);
CREATE VIRTUAL TABLE IF NOT EXISTS kb_fts USING fts5(terms, tokenize = 'unicode61 remove_diacritics 2');
CREATE TABLE IF NOT EXISTS gate_candidates (
  job_id TEXT NOT NULL,
  version INTEGER NOT NULL,
  sha256 TEXT NOT NULL,
  dir TEXT NOT NULL,
  metrics TEXT NOT NULL,
  received_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  status TEXT NOT NULL DEFAULT 'candidate' CHECK (status IN ('candidate','held','passed','approved','rejected')),
  checks TEXT,
  decided_at TEXT,
  decided_by TEXT,
  PRIMARY KEY (job_id, version)
);
CREATE TABLE IF NOT EXISTS gate_serving (
  seq INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id TEXT,
  version INTEGER,
  sha256 TEXT,
  dir TEXT,
  action TEXT NOT NULL CHECK (action IN ('promote','approve','rollback')),
  by TEXT NOT NULL,
  at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
);
CREATE TABLE IF NOT EXISTS safety_runs (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  adapter_label TEXT NOT NULL,
  adapter_sha256 TEXT,
  job_id TEXT,
  version INTEGER,
  suite_sha256 TEXT NOT NULL,
  prompts INTEGER NOT NULL,
  passed INTEGER NOT NULL,
  pass_rate REAL NOT NULL,
  ci_low REAL NOT NULL,
  ci_high REAL NOT NULL,
  categories TEXT NOT NULL,
  started_at TEXT NOT NULL,
  finished_at TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS safety_runs_adapter ON safety_runs(adapter_sha256);
CREATE TABLE IF NOT EXISTS safety_results (
  run_id INTEGER NOT NULL REFERENCES safety_runs(id) ON DELETE CASCADE,
  prompt_id TEXT NOT NULL,
  category TEXT NOT NULL,
  lang TEXT NOT NULL,
  passed INTEGER NOT NULL,
  reasons TEXT NOT NULL,
  answer_sha256 TEXT NOT NULL,
  PRIMARY KEY (run_id, prompt_id)
);
`,
  // 2: doctors' labels (site-agent/data/labels/, the annotation workbench in site-agent/serve/workbench/).
  //    label_entries is append-only: every label keeps who, when, the record's label before it
  //    (previous_*), the queue it came from, whether the model's suggestions were shown, which
  //    suggestion row (the model's ranking, kept also when hidden), and the serving version.
  //    kind: 'annotation' (a doctor's read), 'adjudication' (resolves a dispute), 'assistant'
  //    (the chat page's confirmation with a final diagnosis, serve_confirmations.id in confirmation_id).
  //    dx_key: what two labels must share to agree (the ICD-10 code, else the normalised text).
  //    label_records: one row per labelled record: how many doctors it needs (1, or 2 for the
  //    double-read fraction), its status and the label it has now (final_label_id; NULL while
  //    waiting for the second doctor or in dispute).
  //    label_training_sets(+_items): which label each record of a round's training set used
  //    (label_id NULL = the export's diagnosis); only counts leave the site.
  `
CREATE TABLE label_suggestions (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  record_id TEXT NOT NULL REFERENCES data_records(id),
  model_version TEXT NOT NULL,
  adapter_sha256 TEXT,
  top_diagnosis TEXT NOT NULL,
  top_key TEXT NOT NULL,
  items TEXT NOT NULL,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  UNIQUE (record_id, model_version)
);
CREATE TABLE label_entries (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  record_id TEXT NOT NULL REFERENCES data_records(id),
  kind TEXT NOT NULL CHECK (kind IN ('annotation','adjudication','assistant')),
  user_name TEXT NOT NULL,
  diagnosis TEXT NOT NULL,
  icd10 TEXT,
  dx_key TEXT NOT NULL,
  previous_label_id INTEGER REFERENCES label_entries(id),
  previous_diagnosis TEXT,
  previous_source TEXT CHECK (previous_source IN ('export','label')),
  queue TEXT NOT NULL,
  suggestion_shown INTEGER NOT NULL CHECK (suggestion_shown IN (0,1)),
  suggestion_id INTEGER REFERENCES label_suggestions(id),
  model_version TEXT NOT NULL,
  confirmation_id INTEGER UNIQUE,
  comment TEXT,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
);
CREATE INDEX label_entries_record ON label_entries(record_id, user_name);
CREATE INDEX label_entries_user ON label_entries(user_name, id);
CREATE TRIGGER label_entries_no_update BEFORE UPDATE ON label_entries
  BEGIN SELECT RAISE(ABORT, 'label_entries is append-only: add a new label'); END;
CREATE TRIGGER label_entries_no_delete BEFORE DELETE ON label_entries
  BEGIN SELECT RAISE(ABORT, 'label_entries is append-only: add a new label'); END;
CREATE TABLE label_records (
  record_id TEXT PRIMARY KEY REFERENCES data_records(id),
  needed INTEGER NOT NULL CHECK (needed IN (1,2)),
  status TEXT NOT NULL CHECK (status IN ('pending_second','single','agreed','disputed','adjudicated')),
  final_label_id INTEGER REFERENCES label_entries(id),
  updated_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
);
CREATE INDEX label_records_status ON label_records(status);
CREATE TABLE label_training_sets (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  job_id TEXT,
  round INTEGER,
  task_id TEXT,
  policy TEXT NOT NULL,
  counts TEXT NOT NULL,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now'))
);
CREATE TABLE label_training_set_items (
  set_id INTEGER NOT NULL REFERENCES label_training_sets(id),
  record_id TEXT NOT NULL,
  split TEXT NOT NULL CHECK (split IN ('train','validation','test')),
  label_id INTEGER REFERENCES label_entries(id),
  source TEXT NOT NULL,
  PRIMARY KEY (set_id, record_id)
);
`,
  // 3: structured fields read from the free text at ingest (site-agent/data/extract/): one typed
  //    column per vital sign / lab, in the canonical unit its name ends with (catalog.ts lists
  //    units and conversions); imputed: JSON list of the fields the missing-value policy filled
  //    (never measured); implausible: fields mentioned with a value outside the plausible range.
  //    data_medications: one row per drug of a record (generic name, dose in mg/U/mL, frequency
  //    code, administrations a day, route). data_minhash(+_bands): each record's MinHash
  //    signature and LSH band keys; data_near_duplicates: pairs above the site's threshold (the
  //    later record, merged = 1 when it was not stored because data.fields.near_duplicates.merge).
  `
CREATE TABLE data_record_fields (
  record_id TEXT PRIMARY KEY REFERENCES data_records(id),
  sbp_mmhg REAL, dbp_mmhg REAL, hr_per_min REAL, rr_per_min REAL, temp_c REAL, spo2_pct REAL,
  hba1c_pct REAL, glucose_mmol_l REAL, troponin_ng_ml REAL, wbc_10e9_l REAL, creatinine_umol_l REAL,
  hemoglobin_g_l REAL, potassium_mmol_l REAL, sodium_mmol_l REAL, crp_mg_l REAL, bnp_pg_ml REAL,
  imputed TEXT NOT NULL DEFAULT '[]',
  implausible TEXT NOT NULL DEFAULT '[]'
);
CREATE TABLE data_medications (
  record_id TEXT NOT NULL REFERENCES data_records(id),
  ord INTEGER NOT NULL,
  name TEXT NOT NULL,
  dose REAL,
  dose_unit TEXT CHECK (dose_unit IN ('mg','U','mL')),
  frequency TEXT,
  per_day REAL,
  route TEXT,
  PRIMARY KEY (record_id, ord)
);
CREATE INDEX data_medications_name ON data_medications(name);
CREATE TABLE data_minhash (
  record_id TEXT PRIMARY KEY REFERENCES data_records(id),
  patient_key TEXT NOT NULL,
  signature BLOB NOT NULL
);
CREATE TABLE data_minhash_bands (
  band INTEGER NOT NULL,
  key INTEGER NOT NULL,
  record_id TEXT NOT NULL REFERENCES data_records(id)
);
CREATE INDEX data_minhash_bands_key ON data_minhash_bands(band, key);
CREATE TABLE data_near_duplicates (
  record_id TEXT NOT NULL,
  duplicate_of TEXT NOT NULL REFERENCES data_records(id),
  similarity REAL NOT NULL,
  same_patient INTEGER NOT NULL CHECK (same_patient IN (0,1)),
  merged INTEGER NOT NULL CHECK (merged IN (0,1)),
  source TEXT NOT NULL,
  run_id INTEGER,
  PRIMARY KEY (record_id, duplicate_of)
);
`,
  // 4: doctors' review of a candidate adapter (site-agent/eval/review/, the /review page in
  //    site-agent/serve/review/). review_cases: one sampled held-out record answered by one adapter
  //    version (prompt as sent, de-identified; the answer as served), needing 1 or 2 doctors
  //    (the double-review fraction). review_ratings: one rating per doctor per case, append-only
  //    (who, when, correctness, safety, 1-5, comment, the reads the case had before: 0 = first,
  //    1 = the blind second). review_reports: which aggregates were last sent to the coordinator
  //    (only counts and proportions leave the site, never a case or an answer).
  `
CREATE TABLE review_cases (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  record_id TEXT NOT NULL REFERENCES data_records(id),
  adapter_label TEXT NOT NULL,
  job_id TEXT,
  version INTEGER,
  adapter_sha256 TEXT,
  lang TEXT NOT NULL,
  prompt TEXT NOT NULL,
  answer TEXT NOT NULL,
  needed INTEGER NOT NULL CHECK (needed IN (1,2)),
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  UNIQUE (adapter_label, record_id)
);
CREATE TABLE review_ratings (
  id INTEGER PRIMARY KEY AUTOINCREMENT,
  case_id INTEGER NOT NULL REFERENCES review_cases(id),
  user_name TEXT NOT NULL,
  correctness TEXT NOT NULL CHECK (correctness IN ('correct','partly','wrong')),
  safety TEXT NOT NULL CHECK (safety IN ('safe','unsafe')),
  score INTEGER NOT NULL CHECK (score BETWEEN 1 AND 5),
  comment TEXT,
  reads_before INTEGER NOT NULL,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  UNIQUE (case_id, user_name)
);
CREATE TRIGGER review_ratings_no_update BEFORE UPDATE ON review_ratings
  BEGIN SELECT RAISE(ABORT, 'review_ratings is append-only'); END;
CREATE TRIGGER review_ratings_no_delete BEFORE DELETE ON review_ratings
  BEGIN SELECT RAISE(ABORT, 'review_ratings is append-only'); END;
CREATE TABLE review_reports (
  job_id TEXT NOT NULL,
  version INTEGER NOT NULL,
  signature TEXT NOT NULL,
  sent_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  PRIMARY KEY (job_id, version)
);
`,
  // 5: data periods of a job (data/dataset/periods.ts): the latest ingest run each period trained with.
  `
CREATE TABLE data_periods (
  job_id TEXT NOT NULL,
  period INTEGER NOT NULL,
  upto_run INTEGER NOT NULL,
  created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ','now')),
  PRIMARY KEY (job_id, period)
);
`,
];

/** Bring site.sqlite's schema up to date; returns the version before and after. */
export function migrateSiteDb(db: Database.Database): { from: number; to: number } {
  return runMigrations(db, SITE_MIGRATIONS);
}

/** What opening, rekeying and backing up <siteDir>/site.sqlite need: the file, its key source, where to point the operator. */
export function siteDbSpec(siteDir: string): CipherDbSpec {
  const dir = resolve(siteDir);
  const configName = SITE_CONFIG_NAMES.map((n) => join(dir, n)).find((p) => existsSync(p)) ?? join(dir, 'site.yaml');
  const section = readDatabaseSection(configName, SiteDatabaseSchema, configName);
  return {
    file: join(dir, 'site.sqlite'),
    section,
    source: section.encryption === 'none' ? null : keySourceOf(section, dir, configName),
    configName,
    rekeyCommand: `fedlora site rekey --site-dir ${dir}`,
  };
}

/** Open (creating if needed, encrypted unless the config says otherwise) <siteDir>/site.sqlite
 *  with its schema up to date. synchronous=FULL: the agent acknowledges nothing it has not
 *  committed. `readonly`: an existing file as it is (no migrations), for status and checks. */
export function openSiteDb(siteDir: string, o: { readonly?: boolean } = {}): Database.Database {
  return openMigratedDb(siteDbSpec(siteDir), SITE_MIGRATIONS, { readonly: o.readonly, what: 'site database' });
}
