// A job continuing a published version of an earlier job (init_adapter), on the in-process round
// engine with real SQLite and signed manifests: its version 0 is that adapter byte for byte, its
// manifest chain goes on across the jobs and verifies whole, the version tree links them; a
// version that is missing or of another base model or LoRA shape is refused naming the field;
// `fedlora job validate` checks the same offline with the file's line.
import { afterAll, describe, expect, it } from 'vitest';
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import YAML from 'yaml';
import { verifyManifestChain } from '../../shared/publication-manifest.ts';
import { adapterFiles } from '../../coordinator/publish/publisher.ts';
import { lineageChain, versionTree } from '../../coordinator/publish/lineage.ts';
import { parseJobSpec } from '../../coordinator/jobs/spec.ts';
import { runRound } from './round-driver.ts';
import { validateJobFile } from '../../cli/job-validate.ts';
import { initTinyModel, computeModelManifest } from '../../site-agent/engine/index.ts';
import { harness, online, rawSpec, rmDir, tempDir, tinySpec, TINY_CONFIG, type Harness } from '../coordinator/helpers.ts';

const dirs: string[] = [];
afterAll(() => dirs.forEach(rmDir));
function mk(): Harness {
  const h = harness();
  dirs.push(h.dir);
  return h;
}

/** Job "quarter-1" with one published round (v1), then "quarter-2" continuing v1. */
async function twoQuarters(h: Harness) {
  online(h, 's1', 's2');
  await h.engine.submitJob(tinySpec({ rounds: 1, name: 'quarter 1' }), 'quarter-1');
  await runRound(h.engine, 'quarter-1', 1, ['s1', 's2']);
  expect(h.store.job('quarter-1')).toMatchObject({ status: 'completed', current_version: 1 });
  await h.engine.submitJob(tinySpec({ rounds: 1, name: 'quarter 2', init_adapter: { job: 'quarter-1', version: 1 }, lora: { r: 2, alpha: 4, target_modules: ['v_proj', 'q_proj'], init_seed: 99 } }), 'quarter-2');
}

describe('init_adapter: a job that continues a published version', () => {
  it('starts from that adapter, chains its manifests across the jobs, and shows in the version tree', async () => {
    const h = mk();
    await twoQuarters(h);
    const q1v1 = h.store.adapterVersion('quarter-1', 1)!, q2v0 = h.store.adapterVersion('quarter-2', 0)!;
    // Version 0 is the same adapter file (content-addressed: the same folder), not a fresh init.
    expect(q2v0.sha256).toBe(q1v1.sha256);
    expect(readFileSync(adapterFiles(q2v0).model).equals(readFileSync(adapterFiles(q1v1).model))).toBe(true);
    expect([...h.engine.loadVersion('quarter-2', 0)]).toEqual([...h.engine.loadVersion('quarter-1', 1)]);
    const m0 = JSON.parse(q2v0.manifest_json);
    expect(m0).toMatchObject({ job_id: 'quarter-2', version: 0, init_adapter: { job_id: 'quarter-1', version: 1, manifest_sha256: q1v1.manifest_sha256 }, prev_manifest_sha256: q1v1.manifest_sha256 });
    // Train a round of quarter 2: the chain from quarter-1 v0 to quarter-2 v1 verifies whole.
    await runRound(h.engine, 'quarter-2', 1, ['s1', 's2']);
    const chain = lineageChain(h.store, 'quarter-2');
    expect(chain.map((r) => `${r.job_id}/v${r.version}`)).toEqual(['quarter-1/v0', 'quarter-1/v1', 'quarter-2/v0', 'quarter-2/v1']);
    const items = chain.map((r) => ({ manifestJson: r.manifest_json, signature: r.signature }));
    expect(verifyManifestChain(items, h.signer.publicKeyPem)).toEqual({ ok: true });
    // Alone, the continuing job's chain does not start at a root: its v0 names its parent.
    expect(verifyManifestChain(items.slice(2), h.signer.publicKeyPem)).toMatchObject({ ok: false, at: 0 });
    // A chain skipping the parent version breaks.
    expect(verifyManifestChain([items[0], items[2], items[3]], h.signer.publicKeyPem)).toMatchObject({ ok: false, at: 1 });
    const tree = versionTree(h.store).map((n) => [`${n.job_id}/v${n.version}`, n.parent ? `${n.parent.job_id}/v${n.parent.version}` : null]);
    expect(tree).toEqual([['quarter-1/v0', null], ['quarter-1/v1', 'quarter-1/v0'], ['quarter-2/v0', 'quarter-1/v1'], ['quarter-2/v1', 'quarter-2/v0']]);
    // The audit log records where the job came from.
    const submitted = h.store.audit.list({ action: 'job_submitted' }).find((e) => e.subject === 'quarter-2')!;
    expect(submitted.details.init_adapter).toEqual({ job_id: 'quarter-1', version: 1, manifest_sha256: q1v1.manifest_sha256 });
  });

  it('refuses a version that is missing, or of another base model or LoRA shape, naming the field', async () => {
    const h = mk();
    await twoQuarters(h);
    const submit = (over: Record<string, unknown>) => h.engine.submitJob(tinySpec({ rounds: 1, ...over }));
    await expect(submit({ init_adapter: { job: 'nope', version: 1 } })).rejects.toThrow(/init_adapter\.job: job nope does not exist/);
    await expect(submit({ init_adapter: { job: 'quarter-1', version: 5 } })).rejects.toThrow(/init_adapter\.version: job quarter-1 has no published version 5 \(published: v0\.\.v1\)/);
    await expect(submit({ init_adapter: { job: 'quarter-1', version: 1 }, lora: { r: 4, alpha: 4, target_modules: ['q_proj', 'v_proj'] } })).rejects.toThrow(/lora\.r: 4 differs from job quarter-1 v1's rank 2/);
    await expect(submit({ init_adapter: { job: 'quarter-1', version: 1 }, lora: { r: 2, alpha: 4, target_modules: ['q_proj', 'k_proj'] } })).rejects.toThrow(/lora\.target_modules: \[k_proj, q_proj\] differs from job quarter-1 v1's \[q_proj, v_proj\]/);
    await expect(submit({ init_adapter: { job: 'quarter-1', version: 1 }, lora: { r: 2, alpha: 8, target_modules: ['q_proj', 'v_proj'] } })).rejects.toThrow(/lora\.alpha: 8 differs/);
    await expect(submit({ init_adapter: { job: 'quarter-1', version: 1 }, base_model: { id: 'tiny/qwen2', manifest_sha256: 'b'.repeat(64), config: TINY_CONFIG } })).rejects.toThrow(/base_model\.manifest_sha256: bbbbbbbbbbbb… differs from job quarter-1 v1's base model tiny\/qwen2/);
    await expect(submit({ init_adapter: { job: 'quarter-1', version: 1 }, base_model: { id: 'tiny/qwen2', manifest_sha256: 'a'.repeat(64), config: { ...TINY_CONFIG, hidden_size: 32 } } })).rejects.toThrow(/base_model\.config: .* is \[2, 32\] for this job's base model config but \[2, 16\]/);
    expect(h.store.jobs().map((j) => j.id).sort()).toEqual(['quarter-1', 'quarter-2']); // nothing stored
  });
});

describe('job spec: sites of different ranks', () => {
  const spec = (over: Record<string, unknown>) => () => parseJobSpec(rawSpec(over), 'job.yaml');
  it('needs svd or ffa, and refuses secure aggregation unless A is frozen', () => {
    expect(spec({ lora: { r: 4, alpha: 8, target_modules: ['q_proj'], min_site_r: 2 } })).toThrow(/aggregation\.name: fedavg cannot combine sites of different LoRA ranks \(lora\.min_site_r 2 < lora\.r 4\): use svd .* or ffa/);
    expect(spec({ lora: { r: 4, alpha: 8, target_modules: ['q_proj'], min_site_r: 8 } })).toThrow(/lora\.min_site_r: 8 is above lora\.r 4/);
    expect(spec({ lora: { r: 4, alpha: 8, target_modules: ['q_proj'], min_site_r: 2 }, aggregation: { name: 'svd' }, privacy: { secure_aggregation: true } }))
      .toThrow(/privacy\.secure_aggregation: cannot be combined with sites of different LoRA ranks .* the coordinator would need each site's factors/);
    expect(spec({ lora: { r: 4, alpha: 8, target_modules: ['q_proj'], min_site_r: 2 }, aggregation: { name: 'svd' } })().lora.min_site_r).toBe(2);
    expect(spec({ lora: { r: 4, alpha: 8, target_modules: ['q_proj'], min_site_r: 2, freeze_a: true }, aggregation: { name: 'ffa' }, privacy: { secure_aggregation: true } })().privacy.secure_aggregation).toBe(true);
  });
});

describe('fedlora job validate', () => {
  const CLI = join(import.meta.dirname, '..', '..', 'cli', 'bin.mjs');

  it('checks fields, the base model and the lineage offline, with the line of the bad field', async () => {
    const h = mk();
    await twoQuarters(h);
    const dir = tempDir('validate');
    dirs.push(dir);
    const model = initTinyModel({ arch: 'qwen2', out: join(dir, 'model'), seed: 1, layers: 2, hidden: 16, heads: 2, kvHeads: 1, intermediate: 32, tokenizer: 'byte' });
    const manifest = computeModelManifest(join(dir, 'model')).sha256;
    const job = (over: Record<string, unknown>) => {
      const file = join(dir, `job-${Math.random().toString(36).slice(2, 8)}.yaml`);
      writeFileSync(file, YAML.stringify({ ...rawSpec({ base_model: { id: 'tiny/qwen2', manifest_sha256: manifest, config_path: './model/config.json' } }), ...over }));
      return file;
    };
    const lineOf = (file: string, key: string) => readFileSync(file, 'utf8').split('\n').findIndex((l) => l.trimStart().startsWith(`${key}:`)) + 1;
    // A valid file: every check named.
    const ok = validateJobFile(job({}), { model: join(dir, 'model') });
    expect(ok[0]).toMatch(/^fields: ok \(2 rounds, aggregation fedavg, LoRA r 2 on q_proj, v_proj\)/);
    expect(ok).toContain(`base model manifest: ${join(dir, 'model')} matches`);
    expect(model.config.hiddenSize).toBe(16);
    // A bad field: file, line, field.
    const bad = job({ train: { local_steps: 2, learning_rate: -1 } });
    expect(() => validateJobFile(bad)).toThrow(new RegExp(`${bad}:${lineOf(bad, 'learning_rate')}: train\\.learning_rate: `));
    const badAgg = job({ aggregation: { name: 'trimmed_mean', beta: 0.7 } });
    expect(() => validateJobFile(badAgg)).toThrow(new RegExp(`${badAgg}:${lineOf(badAgg, 'beta')}: aggregation\\.beta: `));
    // Another model folder: its manifest is not the spec's.
    const other = job({ base_model: { id: 'tiny/qwen2', manifest_sha256: 'c'.repeat(64), config_path: './model/config.json' } });
    expect(() => validateJobFile(other, { model: join(dir, 'model') })).toThrow(new RegExp(`${other}:${lineOf(other, 'manifest_sha256')}: base_model\\.manifest_sha256: c{64} is not the manifest of `));
    // Lineage through the coordinator's data folder (read-only) or a downloaded adapter folder.
    const cont = (over: Record<string, unknown>) => job({ base_model: { id: 'tiny/qwen2', manifest_sha256: 'a'.repeat(64), config: TINY_CONFIG }, init_adapter: { job: 'quarter-1', version: 1 }, ...over });
    expect(validateJobFile(cont({}), { coordinatorDir: h.dir }).at(-1)).toMatch(/^lineage: continues quarter-1 v1 \(manifest [0-9a-f]{12}…, base model tiny\/qwen2\)/);
    expect(validateJobFile(cont({})).at(-1)).toMatch(/^lineage: not checked/);
    const wrongR = cont({ lora: { r: 4, alpha: 4, target_modules: ['q_proj', 'v_proj'] } });
    expect(() => validateJobFile(wrongR, { coordinatorDir: h.dir })).toThrow(new RegExp(`${wrongR}:${lineOf(wrongR, 'r')}: lora\\.r: 4 differs from job quarter-1 v1's rank 2`));
    const missing = cont({ init_adapter: { job: 'quarter-1', version: 9 } });
    expect(() => validateJobFile(missing, { coordinatorDir: h.dir })).toThrow(new RegExp(`${missing}:${lineOf(missing, 'version')}: init_adapter\\.version: job quarter-1 has no published version 9`));
    const folder = join(dir, 'q1v1');
    mkdirSync(folder);
    const row = h.store.adapterVersion('quarter-1', 1)!;
    cpSync(adapterFiles(row).model, join(folder, 'adapter_model.safetensors'));
    cpSync(adapterFiles(row).config, join(folder, 'adapter_config.json'));
    writeFileSync(join(folder, 'manifest.json'), row.manifest_json);
    expect(validateJobFile(cont({}), { initAdapter: folder }).at(-1)).toMatch(/^lineage: continues quarter-1 v1/);
    const otherVersion = cont({ init_adapter: { job: 'quarter-1', version: 0 } });
    expect(() => validateJobFile(otherVersion, { initAdapter: folder })).toThrow(/init_adapter\.version: 0, but .* holds version 1 of job quarter-1/);
    // The real command: exit status and message as a user sees them.
    const run = promisify(execFile);
    const good = await run(process.execPath, [CLI, 'job', 'validate', cont({}), '--coordinator-dir', h.dir]);
    expect(good.stdout).toMatch(/: valid\n {2}fields: ok .*\n(.*\n)* {2}lineage: continues quarter-1 v1/);
    const failed = await run(process.execPath, [CLI, 'job', 'validate', wrongR, '--coordinator-dir', h.dir]).then(() => null, (e: { code: number; stderr: string }) => e);
    expect(failed?.code).not.toBe(0);
    expect(failed?.stderr).toMatch(new RegExp(`FEDLORA_ERR_JOB_INVALID: ${wrongR}:${lineOf(wrongR, 'r')}: lora\\.r: 4 differs`));
  });
});
