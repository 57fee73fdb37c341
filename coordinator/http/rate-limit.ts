// Per-client-IP token buckets for the HTTP API (no extra package): every request takes a token
// from the IP's general bucket; admin writes (any method but GET/HEAD/OPTIONS) also from a much
// smaller write bucket; a failed authentication (any 401/403 answer) takes a token from a tiny
// failure bucket, and while that one is empty the IP's writes and any request carrying an
// Authorization header are refused before the token is even looked at — so guessing admin
// tokens runs at a few tries a minute.
// Refusals are 429 FEDLORA_ERR_RATE_LIMITED with Retry-After. Installed on the root instance
// (hooks, not an encapsulated plugin) so it covers every route.
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { fail } from '../../shared/errors.ts';

export interface BucketSpec {
  /** Bucket size: how many requests may come at once. */
  burst: number;
  /** Tokens added per second. */
  perSecond: number;
}

export interface RateLimitOptions {
  all: BucketSpec;
  adminWrite: BucketSpec;
  failedAuth: BucketSpec;
  /** At most this many IPs are tracked; the stalest go first. */
  maxClients: number;
}

export const DEFAULT_RATE_LIMITS: RateLimitOptions = {
  all: { burst: 600, perSecond: 100 }, // dashboards poll; a runaway script does not starve the rest
  adminWrite: { burst: 60, perSecond: 1 },
  failedAuth: { burst: 10, perSecond: 1 / 6 }, // 10 bad tokens, then one per 6 s
  maxClients: 10_000,
};

class Bucket {
  tokens: number;
  at: number;
  constructor(private readonly spec: BucketSpec, now: number) {
    this.tokens = spec.burst;
    this.at = now;
  }
  private refill(now: number): void {
    this.tokens = Math.min(this.spec.burst, this.tokens + ((now - this.at) / 1000) * this.spec.perSecond);
    this.at = now;
  }
  /** Seconds until a token is there (0 = one is there now). */
  wait(now: number): number {
    this.refill(now);
    return this.tokens >= 1 ? 0 : (1 - this.tokens) / this.spec.perSecond;
  }
  take(now: number): number {
    const w = this.wait(now);
    if (w === 0) this.tokens -= 1;
    return w;
  }
}

interface Client { all: Bucket; write: Bucket; failed: Bucket; seen: number }

const isWrite = (req: FastifyRequest) => req.method !== 'GET' && req.method !== 'HEAD' && req.method !== 'OPTIONS';

export function installRateLimit(app: FastifyInstance, opts: Partial<RateLimitOptions> = {}, now: () => number = Date.now): void {
  const o: RateLimitOptions = { ...DEFAULT_RATE_LIMITS, ...opts };
  const clients = new Map<string, Client>();
  const clientOf = (ip: string): Client => {
    const t = now();
    let c = clients.get(ip);
    if (c) {
      clients.delete(ip); // re-insert: Map order = least recently seen first
    } else {
      if (clients.size >= o.maxClients) clients.delete(clients.keys().next().value!);
      c = { all: new Bucket(o.all, t), write: new Bucket(o.adminWrite, t), failed: new Bucket(o.failedAuth, t), seen: t };
    }
    c.seen = t;
    clients.set(ip, c);
    return c;
  };
  const refuse = (reply: { header(k: string, v: string): unknown }, waitS: number, what: string, ip: string) => {
    const s = Math.max(1, Math.ceil(waitS));
    reply.header('Retry-After', String(s));
    return fail('FEDLORA_ERR_RATE_LIMITED', `${what} from ${ip}: retry in ${s} s`);
  };

  app.addHook('onRequest', async (req, reply) => {
    const c = clientOf(req.ip);
    const t = now();
    let w = c.all.take(t);
    if (w > 0) throw refuse(reply, w, 'too many requests', req.ip);
    const write = isWrite(req);
    if (!write && req.headers.authorization === undefined) return;
    w = c.failed.wait(t);
    if (w > 0) throw refuse(reply, w, 'too many failed authentication attempts', req.ip);
    if (!write) return;
    w = c.write.take(t);
    if (w > 0) throw refuse(reply, w, 'too many admin writes', req.ip);
  });
  app.addHook('onResponse', async (req, reply) => {
    if (reply.statusCode === 401 || reply.statusCode === 403) clientOf(req.ip).failed.take(now());
  });
}
