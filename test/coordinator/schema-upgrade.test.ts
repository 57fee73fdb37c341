// coordinator.sqlite made by the previous schema (migrations 1-5, plus the PKI and
// secure-aggregation tables their modules created, and two site tables) opens with the one
// migration list: nothing is lost, the two site statuses become one, and the result has the
// same tables and columns as a fresh file. And the one status is what the admin API changes,
// what selection reads and what every call is checked against.
import { describe, it, expect, afterEach } from 'vitest';
import { join } from 'node:path';
import Database from 'better-sqlite3-multiple-ciphers';
import { CoordinatorStore } from '../../coordinator/store/store.ts';
import { MIGRATIONS, openCoordinatorDb } from '../../coordinator/store/migrations.ts';
import { pkiAuthDeps } from '../../coordinator/auth.ts';
import { coordinatorAudit } from '../../coordinator/store/audit.ts';
import { buildHttpApp } from '../../coordinator/http/app.ts';
import { hashToken } from '../../coordinator/config.ts';
import { revokeSite } from '../../coordinator/enrollment.ts';
import { tempDir, rmDir, harness, online } from './helpers.ts';

const dirs: string[] = [];
afterEach(() => { while (dirs.length) rmDir(dirs.pop()!); });

// What coordinator/enrollment.ts (ensurePkiSchema) and coordinator/secagg/store.ts created
// outside the migration list before the list took them over (copied from that version).
const PREVIOUS_MODULE_TABLES = `
CREATE TABLE IF NOT EXISTS pki_tokens (token_hash TEXT PRIMARY KEY, site_id TEXT NOT NULL, created_at_ms INTEGER NOT NULL, expires_at_ms INTEGER NOT NULL, used_at_ms INTEGER, used_cert_serial TEXT);
CREATE TABLE IF NOT EXISTS pki_certificates (serial TEXT PRIMARY KEY, site_id TEXT NOT NULL, not_before_ms INTEGER NOT NULL, not_after_ms INTEGER NOT NULL, issued_at_ms INTEGER NOT NULL, sha256 TEXT NOT NULL, pem TEXT NOT NULL, via TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS pki_certificates_site ON pki_certificates(site_id);
CREATE TABLE IF NOT EXISTS pki_crl (serial TEXT PRIMARY KEY, site_id TEXT NOT NULL, revoked_at_ms INTEGER NOT NULL, reason TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS pki_sites (site_id TEXT PRIMARY KEY, status TEXT NOT NULL CHECK (status IN ('active','disabled','revoked')), updated_at_ms INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS secagg_rounds (
  job_id TEXT NOT NULL, round INTEGER NOT NULL, attempt INTEGER NOT NULL,
  stage TEXT NOT NULL CHECK (stage IN ('advertise','share','masked','unmask','done','failed')),
  config_json TEXT NOT NULL, advertise_deadline_ms INTEGER NOT NULL, stage_timeout_ms INTEGER NOT NULL, stage_deadline_ms INTEGER,
  roster_json TEXT, u2_json TEXT, survivors_json TEXT, dropped_json TEXT, error TEXT, purged INTEGER NOT NULL DEFAULT 0,
  created_ms INTEGER NOT NULL, updated_ms INTEGER NOT NULL, PRIMARY KEY (job_id, round, attempt));
CREATE TABLE IF NOT EXISTS secagg_messages (job_id TEXT NOT NULL, round INTEGER NOT NULL, attempt INTEGER NOT NULL, site_id TEXT NOT NULL,
  stage TEXT NOT NULL CHECK (stage IN ('advertise','share','unmask')), payload TEXT NOT NULL, received_ms INTEGER NOT NULL,
  PRIMARY KEY (job_id, round, attempt, site_id, stage));
CREATE TABLE IF NOT EXISTS secagg_masked_chunks (job_id TEXT NOT NULL, round INTEGER NOT NULL, attempt INTEGER NOT NULL, site_id TEXT NOT NULL,
  idx INTEGER NOT NULL, data BLOB NOT NULL, received_ms INTEGER NOT NULL, PRIMARY KEY (job_id, round, attempt, site_id, idx));
`;

/** A file as the previous coordinator left it: module tables first, then migrations 1-5. */
function previousSchemaFile(file: string): void {
  const db = new Database(file);
  db.pragma('journal_mode = WAL');
  db.exec(PREVIOUS_MODULE_TABLES);
  for (let v = 0; v < 5; v++) {
    db.exec(MIGRATIONS[v]);
    db.pragma(`user_version = ${v + 1}`);
  }
  const site = db.prepare(`INSERT INTO sites (id, status, enrolled_at_ms, last_seen_ms) VALUES (?, ?, 1, 100)`);
  const pki = db.prepare(`INSERT INTO pki_sites (site_id, status, updated_at_ms) VALUES (?, ?, 7)`);
  // Both agree; the PKI disabled a site selection still saw active; a re-enrolled site the
  // federation still had disabled; a site enrolled that never connected; a revoked one.
  site.run('agree', 'active'); pki.run('agree', 'active');
  site.run('pki-disabled', 'active'); pki.run('pki-disabled', 'disabled');
  site.run('sites-disabled', 'disabled'); pki.run('sites-disabled', 'active');
  pki.run('never-connected', 'active');
  site.run('revoked', 'revoked'); pki.run('revoked', 'revoked');
  db.prepare(`INSERT INTO jobs (id, name, spec_json, status, created_ms, updated_ms) VALUES ('j1', 'job', '{}', 'running', 1, 1)`).run();
  db.prepare(`INSERT INTO pki_tokens (token_hash, site_id, created_at_ms, expires_at_ms) VALUES ('h', 'agree', 1, 2)`).run();
  db.prepare(`INSERT INTO secagg_rounds (job_id, round, attempt, stage, config_json, advertise_deadline_ms, stage_timeout_ms, created_ms, updated_ms)
    VALUES ('j1', 1, 0, 'advertise', '{}', 5, 5, 1, 1)`).run();
  coordinatorAudit(db).append('operator', 'revoke', 'revoked', { reason: 'test' });
  db.close();
}

const columnsOf = (db: Database.Database) => Object.fromEntries(
  (db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`).all() as { name: string }[])
    .map(({ name }) => [name, (db.prepare(`PRAGMA table_info(${name})`).all() as { name: string; type: string; notnull: number; pk: number }[]).map((c) => `${c.name} ${c.type} ${c.notnull} ${c.pk}`)]),
);

describe('coordinator.sqlite schema upgrade', () => {
  it('a file made by the previous schema opens with every row kept and one site table', () => {
    const d = tempDir('upgrade');
    dirs.push(d);
    const file = join(d, 'coordinator.sqlite');
    previousSchemaFile(file);

    const store = new CoordinatorStore(file);
    try {
      expect(store.db.pragma('user_version', { simple: true })).toBe(MIGRATIONS.length);
      const tables = (store.db.prepare(`SELECT name FROM sqlite_master WHERE type = 'table'`).all() as { name: string }[]).map((r) => r.name);
      expect(tables).not.toContain('pki_sites');
      const status = Object.fromEntries(store.sites().map((s) => [s.id, s.status]));
      expect(status).toEqual({ agree: 'active', 'pki-disabled': 'disabled', 'sites-disabled': 'disabled', 'never-connected': 'active', revoked: 'revoked' });
      // The site's row from before keeps its fields; the PKI-only site gets one.
      expect(store.site('agree')!.last_seen_ms).toBe(100);
      expect(store.site('never-connected')!.enrolled_at_ms).toBe(7);
      // Every call is checked against the same status that selection reads.
      const auth = pkiAuthDeps(store.db);
      for (const [id, st] of Object.entries(status)) expect(auth.siteStatus(id)).toBe(st);
      expect(auth.siteStatus('unknown')).toBeUndefined();
      expect(store.onlineSites(0)).toEqual(['agree']);
      // Rows of the other tables are all still there, and the audit chain still verifies.
      expect(store.job('j1')!.name).toBe('job');
      expect(store.db.prepare('SELECT count(*) AS n FROM pki_tokens').get()).toEqual({ n: 1 });
      expect(store.db.prepare('SELECT count(*) AS n FROM secagg_rounds').get()).toEqual({ n: 1 });
      expect(store.audit.verify()).toMatchObject({ ok: true, entries: 1 });
    } finally {
      store.close();
    }

    // Upgraded and fresh files have the same tables with the same columns.
    const fresh = openCoordinatorDb(join(d, 'fresh.sqlite'));
    const upgraded = new Database(file, { readonly: true });
    try {
      expect(columnsOf(upgraded)).toEqual(columnsOf(fresh));
    } finally {
      fresh.close();
      upgraded.close();
    }
  });
});

describe('one site status', () => {
  it('the admin API disables and enables a site for selection and for every call; a revoked site stays revoked', async () => {
    const h = harness();
    const token = 'admin-secret-token';
    const app = await buildHttpApp({ engine: h.engine, config: { admin_tokens: [{ name: 'ops', sha256: hashToken(token) }] }, manifestKeyPem: h.signer.publicKeyPem });
    const set = (id: string, status: string) => app.inject({ method: 'POST', url: `/api/sites/${id}/status`, headers: { authorization: `Bearer ${token}` }, payload: { status } });
    try {
      online(h, 's1', 's2');
      const auth = pkiAuthDeps(h.store.db);
      expect((await set('s1', 'disabled')).statusCode).toBe(200);
      expect(auth.siteStatus('s1')).toBe('disabled');
      expect(h.store.onlineSites(0)).toEqual(['s2']);
      expect((await set('s1', 'active')).statusCode).toBe(200);
      expect(auth.siteStatus('s1')).toBe('active');
      expect(h.store.onlineSites(0)).toEqual(['s1', 's2']);
      revokeSite(h.store.db, 's2', 'test');
      const r = await set('s2', 'active');
      expect(r.json().error.code).toBe('FEDLORA_ERR_CERT_REVOKED');
      expect(auth.siteStatus('s2')).toBe('revoked');
      expect((await set('nobody', 'active')).statusCode).toBe(404);
    } finally {
      await app.close();
      h.close();
      rmDir(h.dir);
    }
  });
});
