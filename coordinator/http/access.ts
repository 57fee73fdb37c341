// Who may call which route. Every route declares `config.access`: the roles allowed, or
// 'public'; one onRequest hook checks the bearer token against it (401 without a valid token,
// 403 for a role that may not), and a route without a declaration stops the app from starting,
// so no read can be left open by forgetting it.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { fail } from '../../shared/errors.ts';
import { errors } from './schemas.ts';

export const ROLES = ['admin', 'researcher', 'observer'] as const;
export type Role = (typeof ROLES)[number];
export type Access = 'public' | readonly Role[];

/** The authenticated caller of a request (null on public routes and before authentication). */
export interface Caller {
  name: string;
  role: Role;
  /** Where the token lives: its id in the api_tokens table, or null for coordinator.yaml's admin_tokens. */
  tokenId: string | null;
}

/** Maps a presented bearer token to its caller, or throws a 401 FedloraError. */
export type Authenticate = (token: string) => Caller;

declare module 'fastify' {
  interface FastifyContextConfig {
    access?: Access;
  }
  interface FastifyRequest {
    caller: Caller | null;
  }
}

/** The role sets the routes use (README: "Who can read what"). */
export const ANY_ROLE: readonly Role[] = ROLES; // health and aggregate progress
export const READERS: readonly Role[] = ['admin', 'researcher']; // jobs' details, rounds, metrics, adapters
export const MONITORS: readonly Role[] = ['admin', 'observer']; // Prometheus
export const ADMIN: readonly Role[] = ['admin']; // every write

function bearerOf(req: FastifyRequest): string | undefined {
  const m = /^Bearer (.+)$/.exec(req.headers.authorization ?? '');
  return m ? m[1].trim() : undefined;
}

export function installAccess(app: FastifyInstance, authenticate: Authenticate): void {
  app.decorateRequest('caller', null);
  app.addHook('onRoute', (route) => {
    const access = route.config?.access;
    if (access === undefined) throw new Error(`route ${String(route.method)} ${route.url} declares no config.access`);
    if (access === 'public') return;
    // The OpenAPI document says who may call it, and how it refuses.
    const s = route.schema ?? {};
    route.schema = {
      ...s, security: [{ bearer: [] }], description: `${s.description ? `${s.description}\n\n` : ''}Roles: ${access.join(', ')}.`,
      response: { ...errors(401, 403), ...(s.response as object | undefined) },
    };
  });
  app.addHook('onRequest', async (req) => {
    const access = req.routeOptions.config?.access;
    if (access === undefined || access === 'public') return; // the 404 handler, or a public route
    const path = req.url.split('?')[0];
    const token = bearerOf(req);
    if (!token) throw fail('FEDLORA_ERR_UNAUTHENTICATED', `${req.method} ${path} needs a token: Authorization: Bearer <token> (roles: ${access.join(', ')})`);
    const caller = authenticate(token);
    req.caller = caller;
    if (!access.includes(caller.role)) throw fail('FEDLORA_ERR_ROLE', `${caller.role} token "${caller.name}" may not ${req.method} ${path} (roles: ${access.join(', ')})`);
  });
}

/** The caller of a route that declared roles (set by the access hook before the handler runs). */
export function callerOf(req: FastifyRequest): Caller {
  if (!req.caller) throw fail('FEDLORA_ERR_INTERNAL', `${req.method} ${req.url}: no authenticated caller (route declares no roles)`);
  return req.caller;
}
