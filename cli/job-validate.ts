// `fedlora job validate FILE`: checks a job file offline, before anything is submitted —
//   fields       the spec schema (every field, its type and range, the combinations refused)
//                and the aggregation section's options;
//   base model   its config.json gives the adapter's shapes; with --model DIR the local model
//                folder's manifest is the one the spec names;
//   lineage      init_adapter's version (from --coordinator-dir, the coordinator's data folder
//                read-only, or --init-adapter DIR, a folder `fedlora adapter download` wrote):
//                same base model manifest and LoRA shape.
// Every error names the file, the line and the field (FEDLORA_ERR_JOB_INVALID).
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fail, isFedloraError } from '../shared/errors.ts';
import { readSafetensorsHeader } from '../shared/safetensors.ts';
import type { PublicationManifest } from '../shared/publication-manifest.ts';
import { sha256Hex } from '../shared/hash.ts';
import { readJobSpecFile, type JobSpec } from '../coordinator/jobs/spec.ts';
import { createJobStrategy } from '../coordinator/jobs/job-service.ts';
import { lineageIssues, type LineageSource, type SpecIssue } from '../coordinator/jobs/lineage.ts';
import { jobLayout } from '../coordinator/publish/layout.ts';
import { lineageSourceFromStore, type LineageReader } from '../coordinator/publish/lineage.ts';
import type { AdapterVersionRow, JobRow } from '../coordinator/store/store.ts';
import { openCoordinatorDb } from '../coordinator/store/migrations.ts';
import { computeModelManifest } from '../site-agent/engine/index.ts';

export interface ValidateJobOptions {
  /** The base model folder: its manifest must be base_model.manifest_sha256. */
  model?: string;
  /** The coordinator's data folder (coordinator.sqlite is opened read-only). */
  coordinatorDir?: string;
  /** A downloaded adapter folder (adapter_model.safetensors, adapter_config.json, manifest.json). */
  initAdapter?: string;
}

/** What was checked, one line each; throws FEDLORA_ERR_JOB_INVALID (file:line: field: why) on the first problem. */
export function validateJobFile(file: string, o: ValidateJobOptions = {}): string[] {
  const { spec, lineOf } = readJobSpecFile(file);
  const at = (path: (string | number)[], message: string) => fail('FEDLORA_ERR_JOB_INVALID', `${file}:${lineOf(path) ?? '?'}: ${path.join('.')}: ${message}`);
  const rethrowAt = (path: (string | number)[], e: unknown) => {
    if (!isFedloraError(e)) throw e;
    const why = e.message.replace(/^FEDLORA_ERR_\w+: /, '');
    throw at(path, why.startsWith(`${path.join('.')}: `) ? why.slice(path.join('.').length + 2) : why);
  };
  const done: string[] = [];
  let layout;
  try {
    layout = jobLayout(spec);
  } catch (e) {
    rethrowAt(['base_model', spec.base_model.config_path ? 'config_path' : 'config'], e);
  }
  try {
    createJobStrategy(spec, undefined);
  } catch (e) {
    const field = /aggregation\.(\w+)/.exec((e as Error).message)?.[1];
    rethrowAt(field ? ['aggregation', field] : ['aggregation'], e);
  }
  done.push(`fields: ok (${spec.rounds} rounds, aggregation ${spec.aggregation.name}, LoRA r ${spec.lora.r}${spec.lora.min_site_r && spec.lora.min_site_r < spec.lora.r ? ` (sites down to r ${spec.lora.min_site_r})` : ''} on ${spec.lora.target_modules.join(', ')}${spec.schedule ? `, every ${spec.schedule.every}` : ''})`);
  done.push(`base model config: ${layout!.full.entries.length} adapter tensors`);

  if (o.model) {
    const got = computeModelManifest(o.model).sha256;
    if (got !== spec.base_model.manifest_sha256) throw at(['base_model', 'manifest_sha256'], `${spec.base_model.manifest_sha256} is not the manifest of ${o.model} (${got})`);
    done.push(`base model manifest: ${o.model} matches`);
  }

  if (spec.init_adapter) {
    const { job, version } = spec.init_adapter;
    const found = o.coordinatorDir ? fromCoordinatorDir(o.coordinatorDir, spec) : o.initAdapter ? fromAdapterFolder(o.initAdapter, spec) : null;
    if (!found) done.push(`lineage: not checked (init_adapter ${job} v${version}: give --coordinator-dir DIR or --init-adapter DIR)`);
    else {
      if ('issue' in found) throw at(found.issue.path, found.issue.message);
      const issues = lineageIssues(spec, found.source, layout!.full);
      if (issues.length) throw at(issues[0].path, issues[0].message);
      done.push(`lineage: continues ${job} v${version} (manifest ${found.source.manifestSha256.slice(0, 12)}…, base model ${found.source.manifest.base_model.id})`);
    }
  }
  return done;
}

/** The version through a read-only view of coordinator.sqlite. */
function fromCoordinatorDir(dir: string, spec: JobSpec): { source: LineageSource } | { issue: SpecIssue } {
  const file = join(dir, 'coordinator.sqlite');
  if (!existsSync(file)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--coordinator-dir ${dir}: no coordinator.sqlite there`);
  const db = openCoordinatorDb(file, { readonly: true }); // encrypted when coordinator.yaml says so
  try {
    const reader: LineageReader = {
      job: (id: string) => db.prepare('SELECT * FROM jobs WHERE id = ?').get(id) as JobRow | undefined,
      adapterVersion: (id: string, v: number, owner = '') => db.prepare('SELECT * FROM adapter_versions WHERE job_id = ? AND version = ? AND owner_site = ?').get(id, v, owner) as AdapterVersionRow | undefined,
      adapterVersions: (id: string) => db.prepare(`SELECT * FROM adapter_versions WHERE job_id = ? AND owner_site = '' ORDER BY version`).all(id) as AdapterVersionRow[],
    };
    const got = lineageSourceFromStore(reader, spec.init_adapter!);
    return 'issue' in got ? got : { source: got.source };
  } finally {
    db.close();
  }
}

/** The version as `fedlora adapter download` wrote it. */
function fromAdapterFolder(dir: string, spec: JobSpec): { source: LineageSource } | { issue: SpecIssue } {
  const read = (name: string) => {
    try {
      return readFileSync(join(dir, name), 'utf8');
    } catch (e) {
      throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `--init-adapter ${dir}: cannot read ${name} (${(e as Error).message}); download the version with "fedlora adapter download"`);
    }
  };
  const manifestJson = read('manifest.json');
  const manifest = JSON.parse(manifestJson) as PublicationManifest;
  const { job, version } = spec.init_adapter!;
  if (manifest.job_id !== job) return { issue: { path: ['init_adapter', 'job'], message: `${job}, but ${dir} holds a version of job ${manifest.job_id}` } };
  if (manifest.version !== version) return { issue: { path: ['init_adapter', 'version'], message: `${version}, but ${dir} holds version ${manifest.version} of job ${job}` } };
  const cfg = JSON.parse(read('adapter_config.json')) as { r: number; lora_alpha: number; target_modules: string[]; use_rslora?: boolean };
  const header = readSafetensorsHeader(join(dir, 'adapter_model.safetensors'));
  return {
    source: {
      job, version, manifest, manifestSha256: sha256Hex(manifestJson),
      lora: { r: cfg.r, alpha: cfg.lora_alpha, target_modules: cfg.target_modules, use_rslora: cfg.use_rslora ?? false },
      shapes: new Map([...header.entries].map(([n, e]) => [n, e.shape])),
    },
  };
}
