// Authentication for every route of the assistant's server: `Authorization: Bearer <API key>`
// (made by `fedlora site user add`). requireRole() is the reusable hook: route plugins (the chat
// page, the OpenAI-compatible API, and later pages) add it as an onRequest hook. `admin`
// includes everything a `clinician` may do.
import type { FastifyReply, FastifyRequest } from 'fastify';
import type Database from 'better-sqlite3-multiple-ciphers';
import { fail } from '../../shared/errors.ts';
import { userForKey, type Role } from './users.ts';

export interface AuthUser {
  name: string;
  role: Role;
  keyId: string;
}

declare module 'fastify' {
  interface FastifyRequest {
    /** Set by requireRole() once the API key is checked. */
    user?: AuthUser;
  }
}

export type RoleHook = (req: FastifyRequest, reply: FastifyReply) => Promise<void>;
export type RequireRole = (role: Role) => RoleHook;

/** The hook factory for one site database: requireRole('clinician') or requireRole('admin'). */
export function makeRequireRole(db: Database.Database): RequireRole {
  return (role) => async (req) => {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    if (!m) throw fail('FEDLORA_ERR_UNAUTHENTICATED', 'missing API key: send "Authorization: Bearer <key>" (a site admin makes keys with `fedlora site user add`)');
    const user = userForKey(db, m[1]);
    if (!user) throw fail('FEDLORA_ERR_UNAUTHENTICATED', 'API key not recognised or revoked');
    if (role === 'admin' && user.role !== 'admin') throw fail('FEDLORA_ERR_PERMISSION', `user ${user.name} has role ${user.role}; this needs role admin`);
    req.user = user;
  };
}
