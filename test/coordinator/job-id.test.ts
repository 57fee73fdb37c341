// Job ids chosen by an operator (`fedlora job submit --id`, POST /api/jobs?id=, submitJob):
// one rule, [a-z0-9][a-z0-9._-]{0,63}, refused with a clear FEDLORA_ERR_INVALID_ARGUMENT that
// names where the id came from, before anything is stored (ids name folders: manifests/<job>/).
import { describe, it, expect, afterAll, beforeAll } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { buildHttpApp } from '../../coordinator/http/app.ts';
import { hashToken } from '../../coordinator/config.ts';
import { checkJobId } from '../../coordinator/jobs/job-id.ts';
import { parseJobSpec } from '../../coordinator/jobs/spec.ts';
import { harness, rawSpec, rmDir, type Harness } from './helpers.ts';
import { cli } from '../faults/harness.ts';

let h: Harness;
let app: FastifyInstance;
const TOKEN = 'admin-secret-token';
const auth = { authorization: `Bearer ${TOKEN}` };
const BAD = ['', '..', '.hidden', '-x', '_x', 'Job-1', 'a/b', 'a b', 'x'.repeat(65), 'é'];
const GOOD = ['a', '0', 'job-1', 'dp-fedavg.kill-1', 'a_b.c-d', 'x'.repeat(64)];

beforeAll(async () => {
  h = harness();
  app = await buildHttpApp({ engine: h.engine, config: { admin_tokens: [{ name: 'ops', sha256: hashToken(TOKEN) }] }, manifestKeyPem: h.signer.publicKeyPem });
});
afterAll(async () => {
  await app.close();
  h.close();
  rmDir(h.dir);
});

describe('job ids', () => {
  it('checkJobId accepts [a-z0-9][a-z0-9._-]{0,63} and names the source of a bad one', () => {
    for (const id of GOOD) expect(checkJobId(id, '--id')).toBe(id);
    for (const id of BAD) {
      expect(() => checkJobId(id, '--id'), JSON.stringify(id)).toThrow(expect.objectContaining({
        code: 'FEDLORA_ERR_INVALID_ARGUMENT', message: expect.stringContaining(`--id: job id ${JSON.stringify(id)} is not valid`),
      }));
    }
  });
  it('POST /api/jobs?id= and submitJob refuse a bad id and store nothing', async () => {
    for (const id of ['..', 'Upper', '.x']) {
      const r = await app.inject({ method: 'POST', url: `/api/jobs?id=${encodeURIComponent(id)}`, headers: auth, payload: rawSpec({ rounds: 1 }) });
      expect(r.statusCode).toBe(400);
      expect(r.json().error).toMatchObject({ code: 'FEDLORA_ERR_INVALID_ARGUMENT', message: expect.stringContaining(`query id: job id ${JSON.stringify(id)} is not valid`) });
    }
    await expect(h.engine.submitJob(parseJobSpec(rawSpec({ rounds: 1 })), '../escape')).rejects.toMatchObject({ code: 'FEDLORA_ERR_INVALID_ARGUMENT' });
    expect(h.store.jobs()).toEqual([]);
    const ok = await app.inject({ method: 'POST', url: '/api/jobs?id=same-id.1', headers: auth, payload: rawSpec({ rounds: 1 }) });
    expect(ok.statusCode).toBe(201);
    expect(ok.json().id).toBe('same-id.1');
  });
  it('fedlora job submit --id refuses a bad id before reading the file or calling the API', async () => {
    await expect(cli(['job', 'submit', '/nonexistent.yaml', '--id', 'Bad/Id', '--url', 'http://127.0.0.1:1', '--token', 'x']))
      .rejects.toThrow(/FEDLORA_ERR_INVALID_ARGUMENT: --id: job id "Bad\/Id" is not valid/);
  });
});
