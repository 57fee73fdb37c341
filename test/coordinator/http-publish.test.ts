// HTTP API (fastify inject: routes, auth, errors, CSV, downloads, security headers) and the
// publication manifest chain + signature checks.
import { describe, it, expect, afterAll, beforeAll } from 'vitest';
import { createHash } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import { buildHttpApp } from '../../coordinator/http/app.ts';
import { hashToken } from '../../coordinator/config.ts';
import { verifyManifest, verifyManifestChain } from '../../shared/publication-manifest.ts';
import { submitUpdateBytes } from '../../coordinator/rounds/intake.ts';
import { harness, online, rawSpec, fakeDelta, encodeDelta, rmDir, testSigner, type Harness } from './helpers.ts';

let h: Harness;
let app: FastifyInstance;
const TOKEN = 'admin-secret-token';
const auth = { authorization: `Bearer ${TOKEN}` };

beforeAll(async () => {
  h = harness();
  app = await buildHttpApp({ engine: h.engine, config: { admin_tokens: [{ name: 'ops', sha256: hashToken(TOKEN) }] }, manifestKeyPem: h.signer.publicKeyPem });
});
afterAll(async () => {
  await app.close();
  h.close();
  rmDir(h.dir);
});

async function runJob(id: string, rounds: number): Promise<void> {
  online(h, 's1', 's2');
  const r = await app.inject({ method: 'POST', url: `/api/jobs?id=${id}`, headers: auth, payload: rawSpec({ rounds }) });
  expect(r.statusCode).toBe(201);
  for (let round = 1; round <= rounds; round++) {
    await h.engine.tick();
    for (const s of ['s1', 's2']) {
      const t = h.store.openTasksFor(s).find((x) => x.job_id === id)!;
      const { layout } = h.engine.jobInfo(id);
      await submitUpdateBytes(h.engine, s, { updateId: `${id}-${s}-${round}`, taskId: t.task_id, jobId: id, round, baseVersion: round - 1, numExamples: 4 }, encodeDelta(layout.update, fakeDelta(layout.update, s, round)));
    }
    await h.engine.tick();
  }
}

describe('HTTP API', () => {
  it('health, openapi, security headers, 404 shape', async () => {
    const r = await app.inject({ headers: auth, url: '/api/health' });
    expect(r.statusCode).toBe(200);
    expect(r.json()).toMatchObject({ status: 'ok' });
    expect(r.headers['x-content-type-options']).toBe('nosniff');
    expect(r.headers['x-frame-options']).toBe('DENY');
    expect(r.headers['content-security-policy']).toMatch(/default-src 'none'/);
    const o = (await app.inject({ headers: auth, url: '/api/openapi.json' })).json();
    expect(o.openapi).toBe('3.1.0');
    expect(Object.keys(o.paths)).toContain('/api/jobs/{id}/metrics');
    const nf = await app.inject({ headers: auth, url: '/api/nope' });
    expect(nf.statusCode).toBe(404);
    expect(nf.json()).toEqual({ error: { code: 'FEDLORA_ERR_NOT_FOUND', message: 'no route GET /api/nope' } });
  });

  it('submit needs the admin token; bad specs give 400 with the field', async () => {
    expect((await app.inject({ method: 'POST', url: '/api/jobs', payload: rawSpec() })).json().error.code).toBe('FEDLORA_ERR_UNAUTHENTICATED');
    const wrong = await app.inject({ method: 'POST', url: '/api/jobs', headers: { authorization: 'Bearer nope' }, payload: rawSpec() });
    expect(wrong.statusCode).toBe(401);
    const bad = await app.inject({ method: 'POST', url: '/api/jobs', headers: auth, payload: rawSpec({ rounds: 0 }) });
    expect(bad.statusCode).toBe(400);
    expect(bad.json().error).toMatchObject({ code: 'FEDLORA_ERR_JOB_INVALID', message: expect.stringMatching(/^request body: rounds: /) });
    const yaml = await app.inject({ method: 'POST', url: '/api/jobs?id=from-yaml', headers: { ...auth, 'content-type': 'application/yaml' }, payload: `name: y\nbase_model: {id: m, manifest_sha256: "${'d'.repeat(64)}", config: {model_type: llama, hidden_size: 8, num_attention_heads: 2, intermediate_size: 16, num_hidden_layers: 1}}\nlora: {r: 1, alpha: 1, target_modules: [q_proj]}\nrounds: 1\ntrain: {learning_rate: 0.1}\n` });
    expect(yaml.statusCode).toBe(201);
    expect(yaml.json()).toMatchObject({ id: 'from-yaml', status: 'running', current_version: 0 });
    const cancel = await app.inject({ method: 'POST', url: '/api/jobs/from-yaml/cancel', headers: auth });
    expect(cancel.json().status).toBe('cancelled');
  });

  it('jobs, rounds, adapters, downloads, metrics JSON/CSV with filters, privacy', async () => {
    await runJob('job-h', 2);
    const j = (await app.inject({ headers: auth, url: '/api/jobs/job-h' })).json();
    expect(j).toMatchObject({ id: 'job-h', status: 'completed', current_version: 2, rounds_total: 2 });
    const rounds = (await app.inject({ headers: auth, url: '/api/jobs/job-h/rounds' })).json().rounds;
    expect(rounds.map((r: { round: number; state: string }) => [r.round, r.state])).toEqual([[1, 'published'], [2, 'published']]);
    expect(rounds[0].updates.map((u: { site: string; status: string }) => [u.site, u.status])).toEqual([['s1', 'accepted'], ['s2', 'accepted']]);
    const versions = (await app.inject({ headers: auth, url: '/api/jobs/job-h/adapters' })).json().versions;
    expect(versions.map((v: { version: number }) => v.version)).toEqual([0, 1, 2]);
    const file = await app.inject({ headers: auth, url: '/api/jobs/job-h/adapters/2/adapter_model.safetensors' });
    expect(file.statusCode).toBe(200);
    expect(createHash('sha256').update(file.rawPayload).digest('hex')).toBe(versions[2].sha256);
    const cfg = (await app.inject({ headers: auth, url: '/api/jobs/job-h/adapters/2/adapter_config.json' })).json();
    expect(cfg).toMatchObject({ peft_type: 'LORA', task_type: 'CAUSAL_LM', r: 2, lora_alpha: 4, bias: 'none', use_rslora: false, lora_dropout: 0, base_model_name_or_path: 'tiny/qwen2', target_modules: ['q_proj', 'v_proj'] });
    const manifest = await app.inject({ headers: auth, url: '/api/jobs/job-h/adapters/2/manifest.json' });
    expect(verifyManifest(manifest.payload, versions[2].signature, (await app.inject({ headers: auth, url: '/api/manifest-key' })).payload)).toBe(true);
    expect((await app.inject({ headers: auth, url: '/api/jobs/job-h/adapters/9/manifest.json' })).statusCode).toBe(404);

    h.engine.reportMetrics('s1', { taskId: '', jobId: 'job-h', round: 1, phase: 'eval', metrics: [{ kind: 'global', name: 'loss', value: 2.5, count: 8, modelOwner: '', adapterVersion: 1 }, { kind: 'local', name: 'accuracy', value: 0.5, count: 8, modelOwner: '', adapterVersion: 1 }] });
    h.engine.reportMetrics('s2', { taskId: '', jobId: 'job-h', round: 1, phase: 'eval', metrics: [{ kind: 'cross', name: 'loss', value: 3, count: 4, modelOwner: 's1,"x"', adapterVersion: 1 }] });
    const all = (await app.inject({ headers: auth, url: '/api/jobs/job-h/metrics' })).json().metrics;
    expect(all).toHaveLength(3);
    const loss = (await app.inject({ headers: auth, url: '/api/jobs/job-h/metrics?metric=loss&site=s1' })).json().metrics;
    expect(loss).toEqual([expect.objectContaining({ site_id: 's1', kind: 'global', metric: 'loss', value: 2.5, count: 8 })]);
    const csv = await app.inject({ headers: auth, url: '/api/jobs/job-h/metrics?format=csv&kind=cross' });
    expect(csv.headers['content-type']).toMatch(/^text\/csv/);
    const lines = csv.payload.trim().split('\n');
    expect(lines[0]).toBe('job_id,round,site_id,kind,metric,subset,eval_set,value,ci_low,ci_high,count,model_owner,adapter_version,phase,created_ms');
    expect(lines).toHaveLength(2);
    expect(lines[1]).toMatch(/^job-h,1,s2,cross,loss,,,3,,,4,"s1,""x""",1,eval,\d+$/);
    expect((await app.inject({ headers: auth, url: '/api/jobs/job-h/metrics?kind=bogus' })).statusCode).toBe(400);
    const priv = (await app.inject({ headers: auth, url: '/api/jobs/job-h/privacy' })).json();
    expect(priv).toMatchObject({ dp_enabled: false, ledger: [] });
    const sites = (await app.inject({ headers: auth, url: '/api/sites' })).json().sites;
    expect(sites.map((s: { id: string; online: boolean }) => [s.id, s.online])).toEqual([['s1', true], ['s2', true]]);
    expect((await app.inject({ method: 'POST', url: '/api/sites/s2/status', payload: { status: 'disabled' } })).statusCode).toBe(401);
    const dis = await app.inject({ method: 'POST', url: '/api/sites/s2/status', headers: auth, payload: { status: 'disabled' } });
    expect(dis.json()).toEqual({ id: 's2', status: 'disabled' });
    expect(h.store.onlineSites(0)).toEqual(['s1']);
    expect((await app.inject({ method: 'POST', url: '/api/sites/zz/status', headers: auth, payload: { status: 'disabled' } })).statusCode).toBe(404);
  });
});

describe('publication manifests', () => {
  it('chain: each version signed and pointing at the previous manifest; tampering is detected', async () => {
    const versions = h.store.adapterVersions('job-h');
    const items = versions.map((v) => ({ manifestJson: v.manifest_json, signature: v.signature }));
    expect(verifyManifestChain(items, h.signer.publicKeyPem)).toEqual({ ok: true });
    const m2 = JSON.parse(versions[2].manifest_json);
    expect(m2).toMatchObject({ job_id: 'job-h', version: 2, round: 2, contributing_sites: 2, num_examples: 8, strategy: 'fedavg', adapter_sha256: versions[2].sha256 });
    expect(m2.prev_manifest_sha256).toBe(versions[1].manifest_sha256);
    const tampered = versions[1].manifest_json.replace('"num_examples":8', '"num_examples":9');
    expect(tampered).not.toBe(versions[1].manifest_json);
    expect(verifyManifestChain([items[0], { ...items[1], manifestJson: tampered }, items[2]], h.signer.publicKeyPem)).toMatchObject({ ok: false, at: 1, why: 'bad signature' });
    expect(verifyManifestChain([items[0], items[2]], h.signer.publicKeyPem)).toMatchObject({ ok: false, at: 1 });
    expect(verifyManifest(items[0].manifestJson, items[0].signature, testSigner().publicKeyPem)).toBe(false);
  });
});
