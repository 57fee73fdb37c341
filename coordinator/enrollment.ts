// Coordinator side of enrollment: join tokens, certificate issue/renewal, revocation.
//
// Coordinator data dir layout:
//   <dataDir>/coordinator.sqlite         SQLite (WAL); the pki_* tables below live here
//   <dataDir>/pki/ca.crt, ca.key         consortium CA (0644 / 0600)
//   <dataDir>/pki/server.crt, server.key coordinator TLS server certificate (both listeners)
//   <dataDir>/pki/manifest-signing.crt/.key  key that signs publication manifests
//
// Tables (created by coordinator/store/migrations.ts): pki_tokens (only sha256 of the secret is
// stored), pki_certificates (every certificate issued to a site), pki_crl (revoked serials,
// checked on every call), and the status column of sites (active | disabled | revoked: checked
// on every call, and what selection reads). Callers pass a handle from openCoordinatorDb.
import type { Database } from 'better-sqlite3-multiple-ciphers';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { fail, toGrpcError } from '../shared/errors.ts';
import type { EnrollmentHandlers, EnrollResponse } from '../shared/proto.ts';
import { initCa, loadCa, issueServerCertificate, issueManifestSigningKey, signCsr, type LoadedCa } from '../certs/ca.ts';
import type { KeyAlgorithm } from '../certs/x509.ts';
import { assertSiteId, normalizeSerial } from '../certs/x509.ts';
import { encodeJoinToken, hashSecret, newSecret } from '../certs/tokens.ts';
import { coordinatorAudit } from './store/audit.ts';

export const pkiDirOf = (dataDir: string) => join(dataDir, 'pki');
export const sqlitePathOf = (dataDir: string) => join(dataDir, 'coordinator.sqlite');

const DEFAULT_SITE_CERT_DAYS = 90;

export interface SetupPkiOptions {
  dataDir: string;
  algorithm?: KeyAlgorithm;
  validityDays?: number;
  commonName?: string;
  /** Extra DNS names / IPs for the coordinator server certificate (localhost, 127.0.0.1 always). */
  sans?: string[];
  force?: boolean;
}

/** `fedlora ca init`: CA + coordinator server certificate + manifest signing key. */
export async function setupCoordinatorPki(o: SetupPkiOptions): Promise<LoadedCa> {
  const ca = await initCa({ dir: pkiDirOf(o.dataDir), commonName: o.commonName, algorithm: o.algorithm, validityDays: o.validityDays, force: o.force });
  await issueServerCertificate(ca, { sans: o.sans });
  await issueManifestSigningKey(ca);
  return ca;
}

export function loadCoordinatorCa(dataDir: string): Promise<LoadedCa> {
  return loadCa(pkiDirOf(dataDir));
}

export interface IssueTokenOptions {
  siteId: string;
  ttlMs: number;
  enrollEndpoint: string; // host:port the site dials for Enrollment
  caSha256: string;
  now?: number;
}

/** Issue a one-time join token; only sha256(secret) is stored. Returns the printable token. */
export function issueJoinToken(db: Database, o: IssueTokenOptions): { token: string; expiresAtMs: number } {
  assertSiteId(o.siteId, 'site invite');
  if (!(o.ttlMs > 0)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `token ttl must be > 0 ms, got ${o.ttlMs}`);
  if (!/^.+:\d+$/.test(o.enrollEndpoint)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `enroll endpoint ${JSON.stringify(o.enrollEndpoint)} must be host:port`);
  const now = o.now ?? Date.now();
  const secret = newSecret();
  const expiresAtMs = now + o.ttlMs;
  const tokenHash = hashSecret(secret);
  db.transaction(() => {
    db.prepare('INSERT INTO pki_tokens (token_hash, site_id, created_at_ms, expires_at_ms) VALUES (?, ?, ?, ?)').run(tokenHash, o.siteId, now, expiresAtMs);
    // Never the token: a 16-hex prefix of its sha256 identifies it against pki_tokens.
    coordinatorAudit(db).append('coordinator', 'token_issued', o.siteId, { token_ref: tokenHash.slice(0, 16), expires_at: new Date(expiresAtMs).toISOString(), enroll_endpoint: o.enrollEndpoint }, new Date(now));
  }).immediate();
  return { token: encodeJoinToken({ v: 1, site: o.siteId, secret, enroll: o.enrollEndpoint, caSha256: o.caSha256, exp: expiresAtMs }), expiresAtMs };
}

interface TokenRow { token_hash: string; site_id: string; expires_at_ms: number; used_at_ms: number | null }

function checkToken(db: Database, secret: string, now: number): TokenRow {
  const row = db.prepare('SELECT token_hash, site_id, expires_at_ms, used_at_ms FROM pki_tokens WHERE token_hash = ?').get(hashSecret(secret)) as TokenRow | undefined;
  if (!row) throw fail('FEDLORA_ERR_TOKEN_INVALID', 'EnrollRequest.token: unknown join token (ask the consortium operator for a new `fedlora site invite`)');
  if (row.used_at_ms !== null) throw fail('FEDLORA_ERR_TOKEN_USED', `EnrollRequest.token: the join token for site ${row.site_id} was already used at ${new Date(row.used_at_ms).toISOString()}`);
  if (row.expires_at_ms <= now) throw fail('FEDLORA_ERR_TOKEN_EXPIRED', `EnrollRequest.token: the join token for site ${row.site_id} expired at ${new Date(row.expires_at_ms).toISOString()}`);
  return row;
}

function recordCertificate(db: Database, siteId: string, c: { serial: string; notBefore: number; notAfter: number; sha256: string; pem: string }, via: string, now: number): void {
  db.prepare('INSERT INTO pki_certificates (serial, site_id, not_before_ms, not_after_ms, issued_at_ms, sha256, pem, via) VALUES (?, ?, ?, ?, ?, ?, ?, ?)')
    .run(normalizeSerial(c.serial), siteId, c.notBefore, c.notAfter, now, c.sha256, c.pem, via);
}

export interface EnrollOptions {
  token: string; // the secret part (EnrollRequest.token)
  csrPem: string | Buffer;
  federationEndpoint: string;
  validityDays?: number;
  now?: number;
}

/**
 * Consume a join token and issue the site certificate. The certificate is signed first
 * (async), then one SQLite transaction marks the token used (conditional UPDATE, so a token
 * cannot be used twice even by concurrent calls) and records the certificate; a losing
 * concurrent call discards its unrecorded, never-returned certificate.
 */
export async function enrollSite(db: Database, ca: LoadedCa, o: EnrollOptions): Promise<EnrollResponse & { serial: string }> {
  const now = o.now ?? Date.now();
  if (!o.token) throw fail('FEDLORA_ERR_TOKEN_INVALID', 'EnrollRequest.token is empty');
  const row = checkToken(db, o.token, now);
  const signed = await signCsr(ca, o.csrPem, { siteId: row.site_id, validityDays: o.validityDays ?? DEFAULT_SITE_CERT_DAYS });
  const tx = db.transaction(() => {
    const r = db.prepare('UPDATE pki_tokens SET used_at_ms = ?, used_cert_serial = ? WHERE token_hash = ? AND used_at_ms IS NULL AND expires_at_ms > ?')
      .run(now, normalizeSerial(signed.serial), row.token_hash, now);
    if (r.changes !== 1) checkToken(db, o.token, now); // throws USED / EXPIRED
    recordCertificate(db, row.site_id, signed, 'enroll', now);
    // A fresh enrollment (a new invite from the operator) makes the site active, also a revoked or disabled one.
    db.prepare(`INSERT INTO sites (id, status, enrolled_at_ms) VALUES (?, 'active', ?)
                ON CONFLICT(id) DO UPDATE SET status = 'active'`).run(row.site_id, now);
    coordinatorAudit(db).append(row.site_id, 'enroll', row.site_id, {
      serial: normalizeSerial(signed.serial), cert_sha256: signed.sha256, not_after: new Date(signed.notAfter).toISOString(), token_ref: row.token_hash.slice(0, 16),
    }, new Date(now));
  });
  tx.immediate();
  return {
    siteId: row.site_id,
    certificatePem: Buffer.from(signed.pem),
    caCertificatePem: Buffer.from(ca.certPem),
    federationEndpoint: o.federationEndpoint,
    notAfterUnixMs: signed.notAfter,
    serial: normalizeSerial(signed.serial),
  };
}

/** Renewal (Federation.RenewCertificate): the caller is already authenticated as siteId. */
export async function renewSiteCertificate(db: Database, ca: LoadedCa, o: { siteId: string; csrPem: string | Buffer; validityDays?: number; now?: number }): Promise<{ certificatePem: Buffer; notAfterUnixMs: number; serial: string }> {
  const now = o.now ?? Date.now();
  const st = siteStatus(db, o.siteId);
  if (st !== 'active') throw fail(st === undefined ? 'FEDLORA_ERR_SITE_UNKNOWN' : 'FEDLORA_ERR_SITE_DISABLED', `site ${o.siteId} is ${st ?? 'not enrolled'}: no certificate renewal`);
  const signed = await signCsr(ca, o.csrPem, { siteId: o.siteId, validityDays: o.validityDays ?? DEFAULT_SITE_CERT_DAYS });
  db.transaction(() => {
    recordCertificate(db, o.siteId, signed, 'renew', now);
    coordinatorAudit(db).append(o.siteId, 'cert_renewed', o.siteId, { serial: normalizeSerial(signed.serial), cert_sha256: signed.sha256, not_after: new Date(signed.notAfter).toISOString() }, new Date(now));
  }).immediate();
  return { certificatePem: Buffer.from(signed.pem), notAfterUnixMs: signed.notAfter, serial: signed.serial };
}

export type SiteStatus = 'active' | 'disabled' | 'revoked';

/** A site's status (sites.status); undefined = never enrolled. */
function siteStatus(db: Database, siteId: string): SiteStatus | undefined {
  const r = db.prepare('SELECT status FROM sites WHERE id = ?').get(siteId) as { status: SiteStatus } | undefined;
  return r?.status;
}

/** Enable or disable a site: a disabled site gets no tasks and its calls are refused. */
export function setSiteStatus(db: Database, siteId: string, status: SiteStatus): void {
  const r = db.prepare('UPDATE sites SET status = ? WHERE id = ?').run(status, siteId);
  if (r.changes !== 1) throw fail('FEDLORA_ERR_SITE_UNKNOWN', `site ${siteId} has never enrolled`);
}

/** `fedlora site revoke`: every certificate of the site goes on the CRL; the site is marked
 *  revoked (sites.status); its in-flight updates (received
 *  or accepted, not yet aggregated, in an open round) are discarded and its open tasks
 *  cancelled, so nothing it sent can reach an aggregate. Works on a live coordinator's file
 *  (WAL): the round engine reads SQLite on every tick. */
export function revokeSite(db: Database, siteId: string, reason = 'revoked by operator', now = Date.now()): { serials: string[]; discardedUpdates: string[] } {
  const serials = (db.prepare('SELECT serial FROM pki_certificates WHERE site_id = ?').all(siteId) as { serial: string }[]).map((r) => r.serial);
  if (serials.length === 0 && siteStatus(db, siteId) === undefined) throw fail('FEDLORA_ERR_SITE_UNKNOWN', `site ${siteId} has no certificates to revoke`);
  let discardedUpdates: string[] = [];
  db.transaction(() => {
    const ins = db.prepare('INSERT OR IGNORE INTO pki_crl (serial, site_id, revoked_at_ms, reason) VALUES (?, ?, ?, ?)');
    for (const s of serials) ins.run(s, siteId, now, reason);
    db.prepare(`INSERT INTO sites (id, status, enrolled_at_ms) VALUES (?, 'revoked', ?)
                ON CONFLICT(id) DO UPDATE SET status = 'revoked'`).run(siteId, now);
    // Outstanding join tokens for the site die with it.
    db.prepare('UPDATE pki_tokens SET expires_at_ms = ? WHERE site_id = ? AND used_at_ms IS NULL AND expires_at_ms > ?').run(now, siteId, now);
    const openRound = `EXISTS (SELECT 1 FROM rounds r WHERE r.job_id = x.job_id AND r.round = x.round AND r.attempt = x.attempt AND r.state = 'open')`;
    discardedUpdates = (db.prepare(`SELECT update_id FROM updates x WHERE site_id = ? AND status IN ('receiving','received','accepted') AND ${openRound} ORDER BY update_id`)
      .all(siteId) as { update_id: string }[]).map((r) => r.update_id);
    const upd = db.prepare(`UPDATE updates SET status = 'discarded', reason = ? WHERE update_id = ?`);
    for (const u of discardedUpdates) upd.run(`site ${siteId} revoked: ${reason}`, u);
    // Its tasks in open rounds are answered (cancelled): the round neither waits for it nor counts it.
    db.prepare(`UPDATE tasks SET status = 'cancelled' WHERE site_id = ? AND status IN ('pending','delivered','submitted') AND ${openRound.replaceAll('x.', 'tasks.')}`).run(siteId);
    coordinatorAudit(db).append('operator', 'revoke', siteId, { serials, reason, discarded_updates: discardedUpdates }, new Date(now));
  }).immediate();
  return { serials, discardedUpdates };
}

export interface EnrollmentServiceOptions {
  federationEndpoint: string;
  validityDays?: number;
}

/** Handlers for the Enrollment service: `server.addService(enrollmentService(), handlers)`. */
export function createEnrollmentHandlers(db: Database, ca: LoadedCa, o: EnrollmentServiceOptions): EnrollmentHandlers {
  return {
    enroll: (call, callback) => {
      const req = call.request;
      enrollSite(db, ca, { token: req.token, csrPem: Buffer.from(req.csrPem ?? []), federationEndpoint: o.federationEndpoint, validityDays: o.validityDays })
        .then(({ serial: _serial, ...res }) => callback(null, res))
        .catch((e) => callback(toGrpcError(e) as grpc.ServiceError));
    },
  };
}
