// The global adapter a task starts from: downloaded once per job version into
// <siteDir>/adapters/<job>/v<version>/, verified (the wire checks the file's sha256 and the
// coordinator's manifest signature; here the task's sha256 is checked against the signed
// manifest), then marked verified with a `.verified` file; later tasks read it from there.
//
// Two moments others hook into:
//   "on global adapter verified" (TaskDeps.onGlobalVerified, here): each hook runs when a version
//     has been verified and before it is marked, so a hook interrupted by a crash runs again with
//     the next download. A failing hook is logged and does not fail the task.
//   "on global adapter evaluated" (TaskDeps.onGlobalEvaluated, in evaluate-task.ts): after its
//     held-out evaluation here, with the metrics (the assistant's release gate: candidate,
//     safety suite, decision).

import { existsSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fail } from '../../shared/errors.ts';
import { readPeftAdapter } from '../../shared/lora/peft.ts';
import type { AdapterWeights, LoraConfig } from '../../shared/lora/types.ts';
import { loraOfTask, taskLogFields, type TaskDeps } from './task-context.ts';
import type { SiteMetric } from './evaluation.ts';
import type { WireTask } from './wire.ts';

export interface VerifiedGlobal {
  jobId: string;
  version: number;
  /** sha256 of adapter_model.safetensors, as the coordinator's signed manifest names it. */
  sha256: string;
  /** The stored PEFT folder (adapter_config.json, adapter_model.safetensors, the signed manifest). */
  dir: string;
  weights: AdapterWeights;
  lora: LoraConfig;
  baseModelId: string;
}

export type GlobalVerifiedHook = (adapter: VerifiedGlobal, deps: TaskDeps) => Promise<void> | void;

/** A global adapter after its held-out evaluation at this site, with the metrics computed here. */
export interface EvaluatedGlobal {
  jobId: string;
  version: number;
  sha256: string;
  dir: string;
  metrics: SiteMetric[];
}

/** "On global adapter evaluated" (evaluate-task.ts): e.g. the assistant's release gate. */
export type GlobalEvaluatedHook = (adapter: EvaluatedGlobal) => Promise<void>;

const VERIFIED_MARK = '.verified';

/** The task's global adapter, verified; runs the hooks when this version is new at this site. */
export async function fetchVerifiedGlobal(deps: TaskDeps, task: WireTask): Promise<AdapterWeights> {
  const { version, sha256 } = task.globalAdapter;
  const dir = deps.workspace.globalDir(task.jobId, version);
  if (existsSync(join(dir, VERIFIED_MARK))) return readPeftAdapter(dir).weights;
  rmSync(dir, { recursive: true, force: true });
  const got = await deps.wire.fetchAdapter({ jobId: task.jobId, version }, dir);
  const manifest = JSON.parse(got.manifestJson.toString('utf8')) as { adapter_sha256: string };
  if (sha256 && manifest.adapter_sha256 !== sha256) throw fail('FEDLORA_ERR_UPDATE_HASH', `global adapter ${task.jobId} v${version}: task names sha256 ${sha256}, the signed manifest ${manifest.adapter_sha256}`);
  const { weights } = readPeftAdapter(dir);
  const verified: VerifiedGlobal = { jobId: task.jobId, version, sha256: manifest.adapter_sha256, dir, weights, lora: loraOfTask(task), baseModelId: task.baseModel.id };
  for (const hook of deps.onGlobalVerified) {
    try {
      await hook(verified, deps);
    } catch (e) {
      deps.log.warn({ ...taskLogFields(task), version, hook: hook.name || 'anonymous', err: (e as Error).message }, 'a hook on a newly verified global adapter failed; the task goes on');
    }
  }
  writeFileSync(join(dir, VERIFIED_MARK), new Date().toISOString());
  return weights;
}
