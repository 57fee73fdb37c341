// Bearer tokens of the HTTP API (table api_tokens): a name, a role, an expiry; only the
// token's sha256 is stored (a token is 192 random bits, so a fast hash is enough), and the
// token itself is shown once, when made (`fedlora coordinator token add`). coordinator.yaml's
// admin_tokens keep working as admin tokens without expiry (remove them there to revoke).
// Adding and revoking are written to the audit log in the same transaction.
import { createHash, randomBytes, randomUUID } from 'node:crypto';
import type { Database } from 'better-sqlite3-multiple-ciphers';
import { fail } from '../../shared/errors.ts';
import { parseDuration } from '../../certs/tokens.ts';
import { checkAdminToken, type CoordinatorConfig } from '../config.ts';
import { coordinatorAudit } from '../store/audit.ts';
import { ROLES, type Authenticate, type Role } from './access.ts';

export interface ApiTokenRow {
  id: string;
  name: string;
  role: Role;
  sha256: string;
  created_ms: number;
  expires_ms: number | null;
  revoked_ms: number | null;
  last_used_ms: number | null;
}

export type TokenState = 'active' | 'expired' | 'revoked';

const NAME_RE = /^[A-Za-z0-9._@-]{1,64}$/;
/** last_used_ms is written at most this often per token (reads must not all become writes). */
const LAST_USED_EVERY_MS = 60_000;

const sha256 = (token: string) => createHash('sha256').update(token, 'utf8').digest('hex');

export function tokenState(r: Pick<ApiTokenRow, 'expires_ms' | 'revoked_ms'>, now: number): TokenState {
  if (r.revoked_ms !== null) return 'revoked';
  if (r.expires_ms !== null && r.expires_ms <= now) return 'expired';
  return 'active';
}

/** "30d", "12h", ... → milliseconds; "never" → null (the token does not expire). */
export function parseExpiry(text: string, where = '--expires'): number | null {
  if (text.trim() === 'never') return null;
  try {
    return parseDuration(text);
  } catch {
    throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `${where} ${JSON.stringify(text)} must look like 12h, 30d or never`);
  }
}

export function checkRole(role: string, where = '--role'): Role {
  if (!(ROLES as readonly string[]).includes(role)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `${where} ${JSON.stringify(role)} must be one of ${ROLES.join(', ')}`);
  return role as Role;
}

export function addApiToken(db: Database, o: { name: string; role: Role; ttlMs: number | null; now?: number }): { token: string; row: ApiTokenRow } {
  if (!NAME_RE.test(o.name)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--name ${JSON.stringify(o.name)} must be 1-64 of [A-Za-z0-9._@-]`);
  const now = o.now ?? Date.now();
  const token = `flt_${randomBytes(24).toString('base64url')}`;
  const row: ApiTokenRow = {
    id: randomUUID(), name: o.name, role: o.role, sha256: sha256(token), created_ms: now,
    expires_ms: o.ttlMs === null ? null : now + o.ttlMs, revoked_ms: null, last_used_ms: null,
  };
  db.transaction(() => {
    if (db.prepare('SELECT 1 FROM api_tokens WHERE name = ? AND revoked_ms IS NULL').get(o.name)) {
      throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--name ${o.name}: a token with this name exists (revoke it first, or pick another name)`);
    }
    db.prepare(`INSERT INTO api_tokens (id, name, role, sha256, created_ms, expires_ms) VALUES (@id, @name, @role, @sha256, @created_ms, @expires_ms)`).run(row);
    coordinatorAudit(db).append('operator', 'api_token_added', o.name, { id: row.id, role: o.role, expires: row.expires_ms === null ? 'never' : new Date(row.expires_ms).toISOString() }, new Date(now));
  }).immediate();
  return { token, row };
}

/** Revoke the active token of that name; it stops working on its next request. */
export function revokeApiToken(db: Database, name: string, now = Date.now()): ApiTokenRow {
  return db.transaction(() => {
    const row = db.prepare('SELECT * FROM api_tokens WHERE name = ? AND revoked_ms IS NULL').get(name) as ApiTokenRow | undefined;
    if (!row) throw fail('FEDLORA_ERR_NOT_FOUND', `no active token named ${name} (tokens of coordinator.yaml's admin_tokens are revoked by removing them there)`);
    db.prepare('UPDATE api_tokens SET revoked_ms = ? WHERE id = ?').run(now, row.id);
    coordinatorAudit(db).append('operator', 'api_token_revoked', name, { id: row.id, role: row.role }, new Date(now));
    return { ...row, revoked_ms: now };
  }).immediate();
}

export function listApiTokens(db: Database): ApiTokenRow[] {
  return db.prepare('SELECT * FROM api_tokens ORDER BY created_ms, name').all() as ApiTokenRow[];
}

/** The token checker of the HTTP API: api_tokens first (read on every request, so a revocation
 *  made by the CLI on the live database counts at once), then coordinator.yaml's admin_tokens. */
export function apiTokenAuthenticator(db: () => Database, config: Pick<CoordinatorConfig, 'admin_tokens'>, now: () => number = Date.now): Authenticate {
  const lastWritten = new Map<string, number>();
  return (token) => {
    const row = db().prepare('SELECT * FROM api_tokens WHERE sha256 = ?').get(sha256(token)) as ApiTokenRow | undefined;
    if (row) {
      const t = now();
      const state = tokenState(row, t);
      if (state === 'revoked') throw fail('FEDLORA_ERR_API_TOKEN_EXPIRED', `token "${row.name}" was revoked at ${new Date(row.revoked_ms!).toISOString()}`);
      if (state === 'expired') throw fail('FEDLORA_ERR_API_TOKEN_EXPIRED', `token "${row.name}" expired at ${new Date(row.expires_ms!).toISOString()}: ask for a new one (fedlora coordinator token add)`);
      if (t - (lastWritten.get(row.id) ?? 0) >= LAST_USED_EVERY_MS) {
        lastWritten.set(row.id, t);
        db().prepare('UPDATE api_tokens SET last_used_ms = ? WHERE id = ?').run(t, row.id);
      }
      return { name: row.name, role: row.role, tokenId: row.id };
    }
    const name = checkAdminToken(config, token);
    if (name) return { name, role: 'admin', tokenId: null };
    throw fail('FEDLORA_ERR_UNAUTHENTICATED', 'token not recognised');
  };
}
