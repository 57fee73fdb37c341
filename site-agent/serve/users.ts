// Users of the assistant and their API keys. A key is 32 random bytes (base64url) behind a
// short public id: `flk_<id>_<secret>`. Only sha256 of the whole key is stored: the key is a
// random 256-bit secret, not a password, so a slow password hash would add nothing but latency
// on every request. Revoking a user revokes all of their keys.
import { randomBytes } from 'node:crypto';
import type Database from 'better-sqlite3-multiple-ciphers';
import { fail } from '../../shared/errors.ts';
import { sha256Hex } from '../../shared/hash.ts';

export type Role = 'clinician' | 'admin';
export const ROLES: readonly Role[] = ['clinician', 'admin'];

export interface ServeUser {
  name: string;
  role: Role;
  createdAt: string;
  revokedAt: string | null;
  keys: number;
}

const NAME_RE = /^[\p{L}\p{N}._@-]{1,64}$/u;

export function addUser(db: Database.Database, name: string, role: string): { key: string; keyId: string } {
  if (!NAME_RE.test(name)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `user name ${JSON.stringify(name)}: use 1-64 letters, digits, . _ @ -`);
  if (!ROLES.includes(role as Role)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--role ${JSON.stringify(role)}: expected one of ${ROLES.join(', ')}`);
  const keyId = randomBytes(6).toString('hex');
  const key = `flk_${keyId}_${randomBytes(32).toString('base64url')}`;
  db.transaction(() => {
    const existing = db.prepare('SELECT role, revoked_at FROM serve_users WHERE name = ?').get(name) as { role: string; revoked_at: string | null } | undefined;
    if (existing && existing.revoked_at === null) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `user ${name} exists (role ${existing.role}); revoke it first to issue a new key`);
    if (existing) db.prepare('UPDATE serve_users SET role = ?, revoked_at = NULL WHERE name = ?').run(role, name);
    else db.prepare('INSERT INTO serve_users (name, role) VALUES (?, ?)').run(name, role);
    db.prepare('INSERT INTO serve_api_keys (id, user_name, key_sha256) VALUES (?, ?, ?)').run(keyId, name, sha256Hex(key));
  }).immediate();
  return { key, keyId };
}

export function revokeUser(db: Database.Database, name: string): { keys: number } {
  return db.transaction(() => {
    const u = db.prepare('SELECT revoked_at FROM serve_users WHERE name = ?').get(name) as { revoked_at: string | null } | undefined;
    if (!u) throw fail('FEDLORA_ERR_NOT_FOUND', `no user ${JSON.stringify(name)} (see \`fedlora site user list\`)`);
    const now = new Date().toISOString();
    db.prepare('UPDATE serve_users SET revoked_at = coalesce(revoked_at, ?) WHERE name = ?').run(now, name);
    const r = db.prepare('UPDATE serve_api_keys SET revoked_at = ? WHERE user_name = ? AND revoked_at IS NULL').run(now, name);
    return { keys: r.changes };
  }).immediate();
}

export function listUsers(db: Database.Database): ServeUser[] {
  const rows = db.prepare(`SELECT u.name, u.role, u.created_at, u.revoked_at,
      (SELECT count(*) FROM serve_api_keys k WHERE k.user_name = u.name AND k.revoked_at IS NULL) AS keys
    FROM serve_users u ORDER BY u.name`).all() as { name: string; role: Role; created_at: string; revoked_at: string | null; keys: number }[];
  return rows.map((r) => ({ name: r.name, role: r.role, createdAt: r.created_at, revokedAt: r.revoked_at, keys: r.keys }));
}

/** The active user owning `key`, or null (unknown, malformed or revoked). */
export function userForKey(db: Database.Database, key: string): { name: string; role: Role; keyId: string } | null {
  if (!/^flk_[0-9a-f]{12}_[A-Za-z0-9_-]{43}$/.test(key)) return null;
  const r = db.prepare(`SELECT u.name, u.role, k.id FROM serve_api_keys k JOIN serve_users u ON u.name = k.user_name
    WHERE k.key_sha256 = ? AND k.revoked_at IS NULL AND u.revoked_at IS NULL`).get(sha256Hex(key)) as { name: string; role: Role; id: string } | undefined;
  return r ? { name: r.name, role: r.role, keyId: r.id } : null;
}
