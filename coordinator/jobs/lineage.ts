// A job that starts from a published version of an earlier job (init_adapter: { job, version }):
// what must match for that adapter to mean the same thing in the new job — the base model's
// manifest, the LoRA rank, targets, alpha and rsLoRA (the scaling), and the tensors' shapes —
// as issues naming the spec field, so the coordinator (at submission) and `fedlora job
// validate` (offline, with the file's line) report the same problems.
import type { PublicationManifest } from '../../shared/publication-manifest.ts';
import type { AdapterLayout } from '../../shared/tensors.ts';
import type { JobSpec } from './spec.ts';

/** The version a job would continue from, however it was found (coordinator store or a
 *  downloaded adapter folder). */
export interface LineageSource {
  job: string;
  version: number;
  manifest: PublicationManifest;
  manifestSha256: string;
  lora: { r: number; alpha: number; target_modules: string[]; use_rslora: boolean };
  /** name -> shape of the source adapter's tensors. */
  shapes: Map<string, number[]>;
}

export interface SpecIssue {
  path: (string | number)[];
  message: string;
}

/** What keeps `source` from being this spec's version 0 (empty: it can be). */
export function lineageIssues(spec: JobSpec, source: LineageSource, layout: AdapterLayout): SpecIssue[] {
  const from = `job ${source.job} v${source.version}`;
  const issues: SpecIssue[] = [];
  if (source.manifest.base_model.manifest_sha256 !== spec.base_model.manifest_sha256) {
    issues.push({ path: ['base_model', 'manifest_sha256'], message: `${spec.base_model.manifest_sha256.slice(0, 12)}… differs from ${from}'s base model ${source.manifest.base_model.id} (${source.manifest.base_model.manifest_sha256.slice(0, 12)}…); init_adapter needs the same base model` });
  }
  const l = spec.lora;
  if (l.r !== source.lora.r) issues.push({ path: ['lora', 'r'], message: `${l.r} differs from ${from}'s rank ${source.lora.r}; init_adapter needs the same LoRA shape` });
  const want = [...l.target_modules].sort().join(', '), have = [...source.lora.target_modules].sort().join(', ');
  if (want !== have) issues.push({ path: ['lora', 'target_modules'], message: `[${want}] differs from ${from}'s [${have}]; init_adapter needs the same LoRA shape` });
  if (l.alpha !== source.lora.alpha) issues.push({ path: ['lora', 'alpha'], message: `${l.alpha} differs from ${from}'s ${source.lora.alpha}: the same factors would scale differently` });
  if (l.use_rslora !== source.lora.use_rslora) issues.push({ path: ['lora', 'use_rslora'], message: `${l.use_rslora} differs from ${from}'s ${source.lora.use_rslora}: the same factors would scale differently` });
  if (issues.length) return issues;
  for (const e of layout.entries) {
    const shape = source.shapes.get(e.name);
    if (!shape || shape.join(',') !== e.shape.join(',')) {
      issues.push({ path: ['base_model', 'config'], message: `${e.name} is [${e.shape.join(', ')}] for this job's base model config but ${shape ? `[${shape.join(', ')}]` : 'absent'} in ${from}` });
      break;
    }
  }
  if (!issues.length && source.shapes.size !== layout.entries.length) issues.push({ path: ['base_model', 'config'], message: `${from} holds ${source.shapes.size} tensors, this job's layout ${layout.entries.length}` });
  return issues;
}
