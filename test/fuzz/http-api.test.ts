// Property-based fuzzing of the coordinator's HTTP API (fastify inject against buildHttpApp on a
// real SQLite store): hostile job submissions, status changes, cancels, cross-eval requests and
// path parameters. A refused request is a 4xx with {error: {code: FEDLORA_ERR_*}} and changes
// no stored row; nothing ever answers 5xx.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import fc from 'fast-check';
import type { FastifyInstance } from 'fastify';
import { buildHttpApp } from '../../coordinator/http/app.ts';
import { hashToken } from '../../coordinator/config.ts';
import { ERRORS } from '../../shared/errors.ts';
import { harness, online, rawSpec, rmDir, type Harness } from '../coordinator/helpers.ts';

const RUNS = Number(process.env.FEDLORA_FUZZ_RUNS ?? 1000);
const TOKEN = 'fuzz-admin-token';
let h: Harness;
let app: FastifyInstance;

beforeAll(async () => {
  h = harness();
  online(h, 's1', 's2');
  app = await buildHttpApp({ engine: h.engine, config: { admin_tokens: [{ name: 'ops', sha256: hashToken(TOKEN) }] }, manifestKeyPem: h.signer.publicKeyPem });
  const r = await app.inject({ method: 'POST', url: '/api/jobs?id=fuzz-job', headers: { authorization: `Bearer ${TOKEN}` }, payload: rawSpec() });
  expect(r.statusCode).toBe(201);
});
afterAll(async () => {
  await app?.close();
  h?.close();
  if (h) rmDir(h.dir);
});

const TABLES = ['jobs', 'rounds', 'tasks', 'updates', 'adapter_versions', 'sites', 'cross_eval_requests'];
function snapshot(): string {
  return JSON.stringify(TABLES.map((t) => h.store.db.prepare(`SELECT * FROM ${t} ORDER BY rowid`).all()));
}

function mutateAt(obj: unknown, path: number[], value: unknown): unknown {
  if (path.length === 0 || obj === null || typeof obj !== 'object') return value;
  const keys = Object.keys(obj as object);
  if (keys.length === 0) return value;
  const k = keys[path[0] % keys.length];
  const copy: Record<string, unknown> = Array.isArray(obj) ? ([...obj] as unknown as Record<string, unknown>) : { ...(obj as Record<string, unknown>) };
  copy[k] = mutateAt(copy[k], path.slice(1), value);
  return copy;
}

const hostile = fc.oneof(fc.jsonValue(), fc.constantFrom(-1, 0, 1e308, '', 'x'.repeat(5000), null, [], {}, '__proto__'), fc.array(fc.integer(), { maxLength: 500 }));

const request = fc.oneof(
  // job submissions: a valid spec with one field replaced, or garbage, as JSON or YAML text
  fc.record({
    kind: fc.constant('submit' as const),
    body: fc.oneof(fc.tuple(fc.array(fc.nat(20), { minLength: 1, maxLength: 3 }), hostile).map(([p, v]) => JSON.stringify(mutateAt(rawSpec({ rounds: 2 }), p, v))), fc.string({ maxLength: 200 })),
    type: fc.constantFrom('application/json', 'application/yaml', 'text/plain'),
    id: fc.oneof(fc.constant(undefined), fc.string({ maxLength: 40 })),
  }),
  fc.record({ kind: fc.constant('status' as const), site: fc.oneof(fc.constantFrom('s1', 's2', 'nope'), fc.string({ minLength: 1, maxLength: 20 })), body: hostile }),
  fc.record({ kind: fc.constant('cancel' as const), job: fc.oneof(fc.constant('no-such-job'), fc.string({ minLength: 1, maxLength: 30 })) }),
  fc.record({ kind: fc.constant('crosseval' as const), job: fc.constantFrom('fuzz-job', 'nope'), body: hostile }),
  fc.record({ kind: fc.constant('get' as const), path: fc.constantFrom('/api/jobs/', '/api/jobs/fuzz-job/adapters/', '/api/jobs/fuzz-job/metrics?metric=', '/api/jobs/fuzz-job/rounds?x=', '/api/sites/'), tail: fc.string({ maxLength: 40 }) }),
);

describe('fuzz: HTTP API', () => {
  it('refused requests are 4xx with a FEDLORA_ERR code and change nothing; nothing is 5xx', async () => {
    const auth = { authorization: `Bearer ${TOKEN}` };
    let refused = 0;
    await fc.assert(
      fc.asyncProperty(request, fc.boolean(), async (q, withAuth) => {
        const headers: Record<string, string> = withAuth ? { ...auth } : {};
        const before = snapshot();
        let res;
        if (q.kind === 'submit') {
          // ids that could be valid create a job (a state change that is fine): only fuzz invalid ones here
          const url = `/api/jobs${q.id === undefined ? '?id=' + encodeURIComponent('fuzz-job') : '?id=' + encodeURIComponent(q.id)}`;
          res = await app.inject({ method: 'POST', url, headers: { ...headers, 'content-type': q.type }, payload: q.body });
        } else if (q.kind === 'status') {
          res = await app.inject({ method: 'POST', url: `/api/sites/${encodeURIComponent(q.site)}/status`, headers: { ...headers, 'content-type': 'application/json' }, payload: JSON.stringify(q.body) ?? 'null' });
        } else if (q.kind === 'cancel') {
          res = await app.inject({ method: 'POST', url: `/api/jobs/${encodeURIComponent(q.job)}/cancel`, headers });
        } else if (q.kind === 'crosseval') {
          res = await app.inject({ method: 'POST', url: `/api/jobs/${q.job}/cross-eval`, headers: { ...headers, 'content-type': 'application/json' }, payload: JSON.stringify(q.body) ?? 'null' });
        } else {
          res = await app.inject({ method: 'GET', url: q.path + encodeURIComponent(q.tail), headers });
        }
        expect(res.statusCode, `${JSON.stringify(q)} → ${res.statusCode} ${res.body.slice(0, 300)}`).toBeLessThan(500);
        if (res.statusCode >= 400) {
          refused++;
          const body = res.json() as { error?: { code?: string; message?: string } };
          expect(body.error?.code && body.error.code in ERRORS, res.body.slice(0, 300)).toBe(true);
          expect(body.error?.message?.length ?? 0).toBeGreaterThan(0);
          expect(snapshot()).toBe(before);
        }
      }),
      { numRuns: RUNS },
    );
    expect(refused).toBeGreaterThan(RUNS / 4);
  });
});
