// Admin HTTP API hardening: per-IP rate limiting (@fastify/rate-limit windows: general,
// writes, failed authentication — the last one locks out token guessing before the token is
// even checked), 429 FEDLORA_ERR_RATE_LIMITED with Retry-After, security headers
// (@fastify/helmet) on every kind of answer, and secrets hashed at rest (admin tokens in
// coordinator.yaml, join tokens in pki_tokens).
import { describe, it, expect, afterAll, afterEach, vi } from 'vitest';
import Fastify from 'fastify';
import Database from 'better-sqlite3-multiple-ciphers';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { isFedloraError, fail } from '../../shared/errors.ts';
import { AuditLog } from '../../shared/audit.ts';
import { installRateLimits, DEFAULT_RATE_LIMITS } from '../../coordinator/http/rate-limits.ts';
import { buildHttpApp } from '../../coordinator/http/app.ts';
import { initCoordinator } from '../../coordinator/service.ts';
import { hashToken, loadCoordinatorConfig } from '../../coordinator/config.ts';
import { issueJoinToken } from '../../coordinator/enrollment.ts';
import { decodeJoinToken, hashSecret } from '../../certs/tokens.ts';
import { harness, tempDir, rmDir, type Harness } from '../coordinator/helpers.ts';

const dirs: string[] = [];
const harnesses: Harness[] = [];
afterAll(() => {
  for (const h of harnesses) h.close();
  for (const d of dirs) rmDir(d);
});
afterEach(() => {
  vi.useRealTimers();
});

/** A bare app with only the rate limits (small windows; Date is faked) and routes that count their calls. */
async function limitedApp() {
  vi.useFakeTimers({ toFake: ['Date'], now: 1_000_000 });
  const app = Fastify();
  await installRateLimits(app, { all: { max: 5, windowMs: 1000 }, write: { max: 3, windowMs: 2000 }, failedAuth: { max: 2, windowMs: 10_000 } });
  app.setErrorHandler((e, _req, reply) => (isFedloraError(e) ? reply.status(e.httpStatus).send({ error: { code: e.code, message: e.message } }) : reply.status(500).send(e)));
  const hits = { read: 0, write: 0 };
  app.get('/r', async () => ({ n: ++hits.read }));
  app.post('/w', async (req) => {
    hits.write++;
    if (req.headers.authorization !== 'Bearer good') throw fail('FEDLORA_ERR_UNAUTHENTICATED', 'token not recognised');
    return { ok: true };
  });
  return { app, hits };
}

describe('rate limiting (windows, fake clock)', () => {
  it('general window: max, then 429 with Retry-After, resets with time, per IP', async () => {
    const { app, hits } = await limitedApp();
    const get = (ip = '10.0.0.1') => app.inject({ method: 'GET', url: '/r', remoteAddress: ip });
    for (let i = 0; i < 5; i++) expect((await get()).statusCode).toBe(200);
    const r = await get();
    expect(r.statusCode).toBe(429);
    expect(r.json().error.code).toBe('FEDLORA_ERR_RATE_LIMITED');
    expect(r.headers['retry-after']).toBe('1');
    expect(hits.read).toBe(5); // the handler never ran for the refused request
    expect((await get('10.0.0.2')).statusCode).toBe(200); // another client is not affected
    vi.advanceTimersByTime(1000);
    expect((await get()).statusCode).toBe(200);
  });

  it('writes have their own, smaller window', async () => {
    const { app, hits } = await limitedApp();
    const post = () => app.inject({ method: 'POST', url: '/w', remoteAddress: '10.0.0.3', headers: { authorization: 'Bearer good' } });
    for (let i = 0; i < 3; i++) expect((await post()).statusCode).toBe(200);
    const r = await post();
    expect(r.statusCode).toBe(429);
    expect(r.json().error.message).toMatch(/too many writes from 10\.0\.0\.3/);
    expect(r.headers['retry-after']).toBe('2');
    expect(hits.write).toBe(3);
    expect((await app.inject({ method: 'GET', url: '/r', remoteAddress: '10.0.0.3' })).statusCode).toBe(200); // reads still go
    vi.advanceTimersByTime(2000);
    expect((await post()).statusCode).toBe(200);
  });

  it('failed authentication locks the IP out of writes and token-bearing reads, even with a good token, until the window ends', async () => {
    const { app, hits } = await limitedApp();
    const post = (tok: string, ip = '10.0.0.4') => app.inject({ method: 'POST', url: '/w', remoteAddress: ip, headers: { authorization: `Bearer ${tok}` } });
    expect((await post('guess-1')).statusCode).toBe(401);
    expect((await post('guess-2')).statusCode).toBe(401);
    const locked = await post('good');
    expect(locked.statusCode).toBe(429);
    expect(locked.json().error.message).toMatch(/too many failed authentication attempts/);
    expect(locked.headers['retry-after']).toBe('10');
    expect(hits.write).toBe(2); // refused before the token was looked at
    // reads that present a token are locked too; plain reads are not
    expect((await app.inject({ method: 'GET', url: '/r', remoteAddress: '10.0.0.4', headers: { authorization: 'Bearer good' } })).statusCode).toBe(429);
    expect((await app.inject({ method: 'GET', url: '/r', remoteAddress: '10.0.0.4' })).statusCode).toBe(200);
    expect((await post('good', '10.0.0.5')).statusCode).toBe(200); // only that IP
    vi.advanceTimersByTime(10_000);
    expect((await post('good')).statusCode).toBe(200);
  });
});

describe('the coordinator HTTP app', () => {
  async function realApp() {
    const dataDir = tempDir('sec-http');
    dirs.push(dataDir);
    const init = await initCoordinator({ dataDir });
    const config = loadCoordinatorConfig(dataDir);
    const h = harness({ dir: dataDir });
    harnesses.push(h);
    const app = await buildHttpApp({ engine: h.engine, config, manifestKeyPem: 'key', logger: false });
    return { app, dataDir, init, h };
  }

  it('sends the helmet security headers on every kind of answer (200, 401, 404, 429)', async () => {
    const { app, init } = await realApp();
    const answers = [
      await app.inject({ method: 'GET', url: '/healthz' }),
      await app.inject({ method: 'GET', url: '/api/jobs', headers: { authorization: `Bearer ${init.adminToken}` } }),
      await app.inject({ method: 'POST', url: '/api/jobs', payload: {} }),
      await app.inject({ method: 'GET', url: '/api/no-such-route' }),
    ];
    expect(answers.map((a) => a.statusCode)).toEqual([200, 200, 401, 404]);
    let r429;
    for (let i = 0; i < DEFAULT_RATE_LIMITS.failedAuth.max + 2 && !r429; i++) {
      const a = await app.inject({ method: 'POST', url: '/api/jobs/x/cancel', remoteAddress: '10.9.9.9', headers: { authorization: 'Bearer nope' } });
      if (a.statusCode === 429) r429 = a;
    }
    expect(r429).toBeDefined();
    for (const a of [...answers, r429!]) {
      expect(a.headers['x-content-type-options']).toBe('nosniff');
      expect(a.headers['x-frame-options']).toBe('DENY');
      expect(a.headers['referrer-policy']).toBe('no-referrer');
      expect(String(a.headers['content-security-policy'])).toMatch(/frame-ancestors 'none'/);
      expect(String(a.headers['content-security-policy'])).toMatch(/default-src 'none'/);
      expect(a.headers['cache-control']).toBe('no-store');
    }
  });

  it('default limits: token guessing is cut off after the failed-auth burst; admin writes are capped; all audited', async () => {
    const { app, init, h } = await realApp();
    const codes: number[] = [];
    for (let i = 0; i < DEFAULT_RATE_LIMITS.failedAuth.max + 1; i++) {
      codes.push((await app.inject({ method: 'POST', url: '/api/jobs/x/cancel', remoteAddress: '10.1.1.1', headers: { authorization: `Bearer guess-${i}` } })).statusCode);
    }
    expect(codes.slice(0, -1).every((c) => c === 401)).toBe(true);
    expect(codes.at(-1)).toBe(429);
    const withGood = await app.inject({ method: 'POST', url: '/api/jobs/x/cancel', remoteAddress: '10.1.1.1', headers: { authorization: `Bearer ${init.adminToken}` } });
    expect(withGood.statusCode).toBe(429);
    expect(withGood.json().error.code).toBe('FEDLORA_ERR_RATE_LIMITED');
    // another IP with the real token gets through to the route (the job does not exist: 404)
    let firstLimited = -1;
    for (let i = 0; i < DEFAULT_RATE_LIMITS.write.max + 20 && firstLimited < 0; i++) {
      const a = await app.inject({ method: 'POST', url: '/api/jobs/x/cancel', remoteAddress: '10.2.2.2', headers: { authorization: `Bearer ${init.adminToken}` } });
      if (a.statusCode === 429) firstLimited = i;
      else expect(a.statusCode).toBe(404);
    }
    expect(firstLimited).toBe(DEFAULT_RATE_LIMITS.write.max);
    const audit = new AuditLog(h.store.db);
    const denied = audit.list({ action: 'admin_denied' });
    expect(denied.filter((e) => e.details.ip === '10.1.1.1').map((e) => e.details.status)).toEqual([...codes, 429]);
    const done = audit.list({ action: 'admin_action' }).filter((e) => e.details.ip === '10.2.2.2');
    expect(done.length).toBe(firstLimited);
    expect(done[0]).toMatchObject({ actor: 'admin:init', subject: 'POST /api/jobs/x/cancel', details: { status: 404, ok: false } });
    expect(audit.verify().ok).toBe(true);
  });

  it('keeps secrets hashed at rest: admin token in coordinator.yaml, join token in pki_tokens', async () => {
    const { dataDir, init, h } = await realApp();
    const yaml = readFileSync(join(dataDir, 'coordinator.yaml'), 'utf8');
    expect(yaml).not.toContain(init.adminToken);
    expect(yaml).toContain(hashToken(init.adminToken));
    const { token } = issueJoinToken(h.store.db, { siteId: 'site-q', ttlMs: 60_000, enrollEndpoint: 'localhost:7444', caSha256: 'b'.repeat(64) });
    const { secret } = decodeJoinToken(token);
    const db = new Database(join(dataDir, 'coordinator.sqlite'), { readonly: true });
    const rows = JSON.stringify(db.prepare('SELECT * FROM pki_tokens').all());
    const audit = JSON.stringify(db.prepare('SELECT * FROM audit_log').all());
    db.close();
    expect(rows).toContain(hashSecret(secret));
    expect(rows).not.toContain(secret);
    expect(audit).not.toContain(secret);
    expect(audit).toContain(hashSecret(secret).slice(0, 16)); // the token_issued entry refers to it by hash prefix
  });
});
