// Per-client-IP rate limits (@fastify/rate-limit windows, 429 FEDLORA_ERR_RATE_LIMITED with
// Retry-After): every request counts in a general window; writes (any method but GET/HEAD/
// OPTIONS) also in a much smaller one; every 401 answer to a request that presented a token
// counts in a failed-authentication window, and while that one is full the IP's writes and any
// request carrying a token are refused before the token is looked at, so guessing tokens runs
// at a few tries a minute (a request without a token is no guess: its 401 does not count).
// Hooks on the root instance, so 404s and every route are covered.
import rateLimit from '@fastify/rate-limit';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { fail } from '../../shared/errors.ts';

export interface RateWindow {
  /** Requests allowed per window. */
  max: number;
  windowMs: number;
}

export interface RateLimits {
  all: RateWindow;
  write: RateWindow;
  failedAuth: RateWindow;
}

export const DEFAULT_RATE_LIMITS: RateLimits = {
  all: { max: 600, windowMs: 6_000 }, // dashboards poll; a runaway script does not starve the rest
  write: { max: 60, windowMs: 60_000 },
  failedAuth: { max: 10, windowMs: 60_000 }, // 10 bad tokens a minute, then nothing with a token
};

const isWrite = (req: FastifyRequest) => req.method !== 'GET' && req.method !== 'HEAD' && req.method !== 'OPTIONS';

export async function installRateLimits(app: FastifyInstance, limits: RateLimits = DEFAULT_RATE_LIMITS): Promise<void> {
  await app.register(rateLimit, { global: false });
  const window = (w: RateWindow) => app.createRateLimit({ max: w.max, timeWindow: w.windowMs });
  const all = window(limits.all);
  const writes = window(limits.write);
  const failures = window(limits.failedAuth);
  const refuse = (reply: FastifyReply, ttlS: number, what: string, ip: string) => {
    const s = Math.max(1, ttlS);
    reply.header('Retry-After', String(s));
    return fail('FEDLORA_ERR_RATE_LIMITED', `${what} from ${ip}: retry in ${s} s`);
  };

  app.addHook('onRequest', async (req, reply) => {
    const a = await all(req);
    if (!a.isAllowed && a.isExceeded) throw refuse(reply, a.ttlInSeconds, 'too many requests', req.ip);
    const write = isWrite(req);
    if (!write && req.headers.authorization === undefined) return;
    const f = await failures(req, { increment: false });
    if (!f.isAllowed && f.remaining === 0) throw refuse(reply, f.ttlInSeconds, 'too many failed authentication attempts', req.ip);
    if (!write) return;
    const w = await writes(req);
    if (!w.isAllowed && w.isExceeded) throw refuse(reply, w.ttlInSeconds, 'too many writes', req.ip);
  });
  app.addHook('onResponse', async (req, reply) => {
    if (reply.statusCode === 401 && req.headers.authorization !== undefined) await failures(req);
  });
}
