// The release gate on real adapters of a tiny model: the agent's hook records each received
// global version with its held-out metrics, runs the whole safety suite on it and decides;
// a candidate worse than the serving version is held; an admin may override (audited); rollback;
// `fedlora site adapter candidates|approve|rollback`; answers name the version that produced them,
// switching without a restart.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import OpenAI from 'openai';
import { initLoraAdapter, readCheckpoint, writePeftAdapter, type LoraConfig } from '../../site-agent/engine/index.ts';
import { openSiteDb } from '../../site-agent/site-db.ts';
import { loadSiteConfig } from '../../site-agent/config.ts';
import { AuditLog } from '../../shared/audit.ts';
import { sha256FileSync } from '../../shared/hash.ts';
import { receiveGlobalAdapter } from '../../site-agent/serve/gate/receive.ts';
import { decideCandidate, recordCandidate, listCandidates } from '../../site-agent/serve/gate/policy.ts';
import { currentServing } from '../../site-agent/serve/gate/serving.ts';
import { startServe, type RunningServe } from '../../site-agent/serve/run.ts';
import { makeSite, rmDir, type TestSite } from './helpers.ts';

const run = promisify(execFile);
const BIN = join(import.meta.dirname, '..', '..', 'cli', 'bin.mjs');
const fedlora = (...args: string[]) => run(process.execPath, [BIN, ...args]).then((r) => r.stdout);
const lora: LoraConfig = { r: 4, alpha: 8, targets: ['q_proj', 'v_proj'], dropout: 0, useRslora: false, freezeA: false, initSeed: 3 };
const log = { info: () => undefined, warn: () => undefined };

let site: TestSite;
let srv: RunningServe | null = null;
const versions: { version: number; dir: string; sha256: string }[] = [];

/** A PEFT adapter; version 0 has B = 0 (the base model), later ones a small random B. */
function adapter(version: number): { version: number; dir: string; sha256: string } {
  const w = initLoraAdapter(readCheckpoint(site.modelDir).config, lora);
  let s = version * 7919;
  for (const [k, t] of w) if (k.includes('lora_B') && version > 0) for (let i = 0; i < t.data.length; i++) t.data[i] = (((s = (s * 16807) % 2147483647) / 2147483647) - 0.5) * 0.02;
  const dir = join(site.siteDir, 'adapters', 'job-1', `v${version}`);
  writePeftAdapter(dir, w, { r: lora.r, alpha: lora.alpha, targets: lora.targets, dropout: 0, useRslora: false, baseModel: 'tiny' });
  return { version, dir, sha256: sha256FileSync(join(dir, 'adapter_model.safetensors')) };
}
const metrics = (accuracy: number, loss: number) => [{ name: 'accuracy', value: accuracy, count: 24 }, { name: 'loss', value: loss, count: 900 }];

beforeAll(() => {
  site = makeSite('serve-gate', { gate: { safety_floor: 0.2, safety_max_new_tokens: 8 } });
  for (const v of [0, 1, 2, 3]) versions.push(adapter(v));
});
afterAll(async () => {
  await srv?.close();
  rmDir(site.dir);
});

describe('release gate', () => {
  it('records each received version, runs the safety suite, serves a better one and holds a worse one', async () => {
    const config = loadSiteConfig(site.siteDir);
    const db = openSiteDb(site.siteDir);
    const ctx = { siteDir: site.siteDir, db, audit: new AuditLog(db, 'site_audit'), config, log };
    await receiveGlobalAdapter(ctx, { jobId: 'job-1', ...versions[0], metrics: metrics(0.5, 2.0) });
    expect(currentServing(db).label).toBe('base');
    await receiveGlobalAdapter(ctx, { jobId: 'job-1', ...versions[1], metrics: metrics(0.55, 1.95) });
    expect(currentServing(db)).toMatchObject({ label: 'job-1/v1', sha256: versions[1].sha256 });
    await receiveGlobalAdapter(ctx, { jobId: 'job-1', ...versions[2], metrics: metrics(0.4, 1.9) });
    expect(currentServing(db).label).toBe('job-1/v1');
    const c2 = listCandidates(db).find((c) => c.version === 2)!;
    expect(c2.status).toBe('held');
    expect(c2.checks!.find((x) => x.name === 'heldout.accuracy')).toMatchObject({ ok: false });
    const safety = db.prepare('SELECT prompts, pass_rate, ci_low, ci_high, adapter_sha256 FROM safety_runs WHERE version = 2').get() as { prompts: number; pass_rate: number; ci_low: number; ci_high: number; adapter_sha256: string };
    expect(safety.prompts).toBeGreaterThanOrEqual(200);
    expect(safety.adapter_sha256).toBe(versions[2].sha256);
    expect(safety.ci_low).toBeLessThanOrEqual(safety.pass_rate);
    expect(db.prepare('SELECT count(*) FROM safety_results WHERE run_id = (SELECT id FROM safety_runs WHERE version = 2)').pluck().get()).toBe(safety.prompts);
    // With admin approval required, a passing candidate waits.
    recordCandidate(db, { jobId: 'job-1', ...versions[3], metrics: metrics(0.6, 1.8) });
    db.prepare("INSERT INTO safety_runs (adapter_label, adapter_sha256, job_id, version, suite_sha256, prompts, passed, pass_rate, ci_low, ci_high, categories, started_at, finished_at) SELECT 'job-1/v3', ?, 'job-1', 3, suite_sha256, prompts, passed, pass_rate, ci_low, ci_high, categories, started_at, finished_at FROM safety_runs WHERE version = 1").run(versions[3].sha256);
    const c3 = decideCandidate(db, ctx.audit, { ...config.serve.gate, require_admin_approval: true }, 'job-1', 3);
    expect(c3.status).toBe('passed');
    expect(currentServing(db).label).toBe('job-1/v1');
    const actions = db.prepare("SELECT action, subject FROM site_audit WHERE action LIKE 'gate_%'").all() as { action: string; subject: string }[];
    expect(actions.map((a) => a.subject)).toEqual(['job-1/v1', 'job-1/v2', 'job-1/v3']);
    db.close();
  });

  it('answers name the serving version; approve (override), rollback through the CLI switch it without a restart', async () => {
    srv = await startServe(site.siteDir);
    const client = new OpenAI({ apiKey: site.keys.clinician, baseURL: `${srv.url}/v1`, maxRetries: 0 });
    const ask = async () => {
      const r = await client.chat.completions.create({ model: 'fedlora-assistant', messages: [{ role: 'user', content: 'hello' }], max_tokens: 4 });
      return { fp: r.system_fingerprint, ext: (r as unknown as { fedlora: { model_version: string; adapter_sha256: string | null } }).fedlora };
    };
    expect(await ask()).toEqual({ fp: 'fedlora-job-1/v1', ext: expect.objectContaining({ model_version: 'job-1/v1', adapter_sha256: versions[1].sha256 }) });

    const list = await fedlora('site', 'adapter', 'candidates', '--site-dir', site.siteDir);
    expect(list).toMatch(/^serving: job-1\/v1/m);
    expect(list).toMatch(/\* job-1\/v1\tapproved/);
    expect(list).toMatch(/ {2}job-1\/v2\theld.*\n {4}held by: heldout\.accuracy: 0\.4000 vs 0\.5500/);

    const refused = await fedlora('site', 'adapter', 'approve', 'v2', '--site-dir', site.siteDir).catch((e) => e.stderr as string);
    expect(refused).toMatch(/FEDLORA_ERR_GATE: job-1\/v2 does not pass the gate: heldout\.accuracy/);
    expect(await fedlora('site', 'adapter', 'approve', 'v2', '--override', '--by', 'dr.admin', '--site-dir', site.siteDir)).toContain('job-1/v2 approved by dr.admin (override)');
    expect((await ask()).ext.model_version).toBe('job-1/v2');
    expect(await fedlora('site', 'adapter', 'approve', 'job-1/v3', '--site-dir', site.siteDir)).toContain('job-1/v3 approved');
    expect((await ask()).ext.model_version).toBe('job-1/v3');
    expect(await fedlora('site', 'adapter', 'rollback', '--site-dir', site.siteDir)).toContain('serves job-1/v2');
    expect((await ask()).ext.model_version).toBe('job-1/v2');
    expect(await fedlora('site', 'adapter', 'rollback', '--site-dir', site.siteDir)).toContain('serves job-1/v1');
    expect(await fedlora('site', 'adapter', 'rollback', '--site-dir', site.siteDir)).toContain('serves the base model');
    expect(await ask()).toEqual({ fp: 'fedlora-base', ext: expect.objectContaining({ model_version: 'base', adapter_sha256: null }) });

    const db = openSiteDb(site.siteDir);
    const ov = db.prepare("SELECT actor, details FROM site_audit WHERE action = 'gate_approve' AND subject = 'job-1/v2'").get() as { actor: string; details: string };
    db.close();
    expect(ov.actor).toBe('dr.admin');
    expect(JSON.parse(ov.details)).toMatchObject({ override: true, failing_checks: [expect.objectContaining({ name: 'heldout.accuracy' })] });
  });
});
