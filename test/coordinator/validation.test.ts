// Job spec and config validation errors name the field; store migrations; update content checks.
import { describe, it, expect, afterEach } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import Database from 'better-sqlite3-multiple-ciphers';
import { parseJobSpec, parseJobSpecText, loadJobSpecFile } from '../../coordinator/jobs/spec.ts';
import { loadCoordinatorConfig, parseCoordinatorConfig, checkAdminToken, hashToken } from '../../coordinator/config.ts';
import { CoordinatorStore } from '../../coordinator/store/store.ts';
import { MIGRATIONS, migrate } from '../../coordinator/store/migrations.ts';
import { validateUpdateBytes } from '../../coordinator/rounds/validate-update.ts';
import { jobLayout } from '../../coordinator/publish/layout.ts';
import { encodeSafetensors, type TensorToWrite } from '../../shared/safetensors.ts';
import { unflatten } from '../../shared/tensors.ts';
import { isFedloraError } from '../../shared/errors.ts';
import { rawSpec, tinySpec, tempDir, rmDir, fakeDelta, encodeDelta, harness, online } from './helpers.ts';
import { submitUpdateBytes } from '../../coordinator/rounds/intake.ts';

const dirs: string[] = [];
afterEach(() => { while (dirs.length) rmDir(dirs.pop()!); });

function errorOf(fn: () => unknown): { code: string; message: string } {
  try {
    fn();
  } catch (e) {
    if (isFedloraError(e)) return { code: e.code, message: e.message };
    throw e;
  }
  throw new Error('expected a FedloraError');
}

describe('job spec validation', () => {
  it('points at the bad field', () => {
    expect(errorOf(() => parseJobSpec(rawSpec({ lora: { r: 'two', alpha: 4, target_modules: ['q_proj'] } }), 'job.yaml'))).toEqual({
      code: 'FEDLORA_ERR_JOB_INVALID', message: expect.stringMatching(/^job\.yaml: lora\.r: .*expected number/),
    });
    expect(errorOf(() => parseJobSpec(rawSpec({ lora: { r: 2, alpha: 4, target_modules: ['q_proj', 'w_proj'] } }), 'job.yaml')).message).toMatch(/lora\.target_modules\[1\]/);
    expect(errorOf(() => parseJobSpec(rawSpec({ base_model: { id: 'x', manifest_sha256: 'nothex', config: {} } }), 'j')).message).toMatch(/base_model\.manifest_sha256: expected 64 lowercase hex/);
    expect(errorOf(() => parseJobSpec(rawSpec({ min_sites: 5, max_sites: 2 }), 'j')).message).toMatch(/min_sites: min_sites 5 exceeds max_sites 2/);
    expect(errorOf(() => parseJobSpec(rawSpec({ extra_field: 1 }), 'j')).message).toMatch(/extra_field/);
    expect(errorOf(() => parseJobSpecText('rounds: [', 'j.yaml')).message).toMatch(/^j\.yaml: not valid YAML/);
    const text = `name: t\nbase_model: {id: m, manifest_sha256: "${'c'.repeat(64)}", config: {model_type: llama}}\nlora:\n  r: 2\n  alpha: four\n  target_modules: [q_proj]\nrounds: 1\ntrain: {learning_rate: 0.1}\n`;
    expect(errorOf(() => parseJobSpecText(text, 'job.yaml')).message).toMatch(/^job\.yaml:5: lora\.alpha: .*expected number/);
    expect(errorOf(() => parseJobSpec(rawSpec({ base_model: { id: 'x', manifest_sha256: 'a'.repeat(64) } }), 'j')).message).toMatch(/base_model\.config_path: config_path \(or an inline config\) is required/);
  });
  it('fills defaults and inlines config_path relative to the spec file', () => {
    const d = tempDir('spec');
    dirs.push(d);
    writeFileSync(join(d, 'config.json'), JSON.stringify({ model_type: 'llama', hidden_size: 8, num_attention_heads: 2, intermediate_size: 16, num_hidden_layers: 1 }));
    writeFileSync(join(d, 'job.yaml'), `name: t\nbase_model: {id: m, manifest_sha256: "${'c'.repeat(64)}", config_path: config.json}\nlora: {r: 1, alpha: 2, target_modules: [o_proj]}\nrounds: 1\ntrain: {learning_rate: 0.1}\n`);
    const s = loadJobSpecFile(join(d, 'job.yaml'));
    expect(s.base_model.config).toMatchObject({ hidden_size: 8 });
    expect(s).toMatchObject({ min_sites: 1, aggregation: { name: 'fedavg' }, lora: { dropout: 0, freeze_a: false } });
    expect(jobLayout(s).full.entries.map((e) => [e.name, e.shape])).toEqual([
      ['base_model.model.model.layers.0.self_attn.o_proj.lora_A.weight', [1, 8]],
      ['base_model.model.model.layers.0.self_attn.o_proj.lora_B.weight', [8, 1]],
    ]);
  });
});

describe('coordinator config', () => {
  it('errors name file and field; admin tokens are checked by hash', () => {
    const d = tempDir('cfg');
    dirs.push(d);
    writeFileSync(join(d, 'coordinator.yaml'), 'http:\n  port: "eighty"\n');
    const e = errorOf(() => loadCoordinatorConfig(d));
    expect(e.code).toBe('FEDLORA_ERR_CONFIG');
    expect(e.message).toMatch(/coordinator\.yaml:2: http\.port: .*expected number/);
    expect(errorOf(() => parseCoordinatorConfig({ admin_tokens: [{ name: 'a', sha256: 'plain-token' }] })).message).toMatch(/admin_tokens\[0\]\.sha256/);
    const cfg = parseCoordinatorConfig({ admin_tokens: [{ name: 'ops', sha256: hashToken('s3cret') }] });
    expect(cfg.http).toEqual({ host: '127.0.0.1', port: 8080 });
    expect(checkAdminToken(cfg, 's3cret')).toBe('ops');
    expect(checkAdminToken(cfg, 's3creT')).toBeUndefined();
  });
});

describe('store', () => {
  it('migrates a fresh file once, in WAL mode, and is idempotent on reopen', () => {
    const d = tempDir('store');
    dirs.push(d);
    const f = join(d, 'c.sqlite');
    const s = new CoordinatorStore(f);
    expect(s.db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(s.db.pragma('user_version', { simple: true })).toBe(MIGRATIONS.length);
    const tables = (s.db.prepare(`SELECT name FROM sqlite_master WHERE type='table'`).all() as { name: string }[]).map((r) => r.name);
    for (const t of ['sites', 'jobs', 'rounds', 'tasks', 'updates', 'adapter_versions', 'metrics', 'privacy_ledger', 'pki_certificates']) expect(tables).toContain(t);
    s.upsertSite('s1', 5);
    s.close();
    const db = new Database(f);
    expect(migrate(db)).toEqual({ from: MIGRATIONS.length, to: MIGRATIONS.length });
    expect(db.prepare('SELECT id FROM sites').all()).toEqual([{ id: 's1' }]);
    db.close();
  });
});

describe('update validation', () => {
  const spec = tinySpec();
  const { update } = jobLayout(spec);
  const good = fakeDelta(update, 's', 1);
  const tensors = () => new Map<string, TensorToWrite>([...unflatten(good, update)].map(([k, t]) => [k, { dtype: 'F32' as const, shape: t.shape, data: t.data }]));

  it('accepts exactly the layout and returns the flat vector', () => {
    expect(validateUpdateBytes(encodeDelta(update, good), update, 'u')).toEqual(good);
  });
  it('NaN / Inf -> FEDLORA_ERR_UPDATE_NONFINITE naming the tensor', () => {
    for (const bad of [NaN, Infinity]) {
      const v = new Float32Array(good);
      v[update.entries[1].offset + 3] = bad;
      expect(errorOf(() => validateUpdateBytes(encodeDelta(update, v), update, 'u'))).toEqual({ code: 'FEDLORA_ERR_UPDATE_NONFINITE', message: `u: tensor "${update.entries[1].name}" element 3 is ${bad}` });
    }
  });
  it('wrong names, shapes, dtypes and garbage are rejected', () => {
    const extra = tensors();
    extra.set('base_model.model.model.layers.9.self_attn.q_proj.lora_A.weight', { dtype: 'F32', shape: [1], data: new Float32Array(1) });
    expect(errorOf(() => validateUpdateBytes(encodeSafetensors(extra), update, 'u')).message).toMatch(/unexpected tensor "base_model.model.model.layers.9/);
    const missing = tensors();
    missing.delete(update.entries[0].name);
    expect(errorOf(() => validateUpdateBytes(encodeSafetensors(missing), update, 'u')).message).toMatch(/missing tensor/);
    const shape = tensors();
    const e0 = update.entries[0];
    shape.set(e0.name, { dtype: 'F32', shape: [e0.shape[1], e0.shape[0]], data: shape.get(e0.name)!.data });
    expect(errorOf(() => validateUpdateBytes(encodeSafetensors(shape), update, 'u'))).toMatchObject({ code: 'FEDLORA_ERR_SHAPE' });
    const half = tensors();
    half.set(e0.name, { dtype: 'F16', shape: e0.shape, data: half.get(e0.name)!.data });
    expect(errorOf(() => validateUpdateBytes(encodeSafetensors(half), update, 'u'))).toMatchObject({ code: 'FEDLORA_ERR_UNSUPPORTED_DTYPE' });
    expect(errorOf(() => validateUpdateBytes(Buffer.from('not a safetensors file at all'), update, 'u'))).toMatchObject({ code: 'FEDLORA_ERR_UPDATE_INVALID' });
  });
  it('through intake: wrong round / base version / unselected site / replay are refused; a bad file is recorded rejected', async () => {
    const h = harness();
    dirs.push(h.dir);
    online(h, 's1', 's2');
    const job = await h.engine.submitJob(tinySpec({ rounds: 2, max_sites: 1, min_sites: 1 }));
    await h.engine.tick();
    const [sel] = JSON.parse(h.store.currentRound(job)!.selected_json) as string[];
    const other = sel === 's1' ? 's2' : 's1';
    const task = h.store.openTasksFor(sel)[0];
    const bytes = encodeDelta(update, good);
    const hdr = { updateId: 'u1', taskId: task.task_id, jobId: job, round: 1, baseVersion: 0, numExamples: 3 };
    await expect(submitUpdateBytes(h.engine, other, hdr, bytes)).rejects.toMatchObject({ code: 'FEDLORA_ERR_NOT_SELECTED' });
    await expect(submitUpdateBytes(h.engine, sel, { ...hdr, round: 2 }, bytes)).rejects.toMatchObject({ code: 'FEDLORA_ERR_UPDATE_INVALID', message: expect.stringMatching(/header says job .* round 2/) });
    await expect(submitUpdateBytes(h.engine, sel, { ...hdr, baseVersion: 1 }, bytes)).rejects.toMatchObject({ code: 'FEDLORA_ERR_UPDATE_INVALID', message: expect.stringMatching(/base_version/) });
    const nan = new Float32Array(good);
    nan[0] = NaN;
    await expect(submitUpdateBytes(h.engine, sel, { ...hdr, updateId: 'bad' }, encodeDelta(update, nan))).rejects.toMatchObject({ code: 'FEDLORA_ERR_UPDATE_NONFINITE' });
    expect(h.store.update('bad')).toMatchObject({ status: 'rejected', reason: expect.stringMatching(/^FEDLORA_ERR_UPDATE_NONFINITE/) });
    const ok = await submitUpdateBytes(h.engine, sel, hdr, bytes);
    expect(ok.status).toBe('accepted');
    await h.engine.tick();
    // round 1 closed: round 2 task exists; replaying u1 for round 2 is refused
    const t2 = h.store.openTasksFor(JSON.parse(h.store.currentRound(job)!.selected_json)[0])[0];
    await expect(submitUpdateBytes(h.engine, t2.site_id, { ...hdr, taskId: t2.task_id, round: 2, baseVersion: 1 }, bytes)).rejects.toMatchObject({ code: 'FEDLORA_ERR_REPLAY' });
    // a late update to the closed round 1
    await expect(submitUpdateBytes(h.engine, sel, { ...hdr, updateId: 'late' }, bytes)).rejects.toMatchObject({ code: 'FEDLORA_ERR_ROUND_CLOSED' });
    h.close();
  });
});
