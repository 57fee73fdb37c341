// Personalised site adapters: each global version, trained a few more steps on this site's own
// records (training.personal_steps), is what this site's clinicians would get from federating and
// then fitting locally. Callers evaluate it beside the global version and the local-only
// baseline (kind personal, the version's round); it is kept at the site and never sent anywhere.
import type { AdapterWeights } from '../../shared/lora/types.ts';
import type { TaskDeps } from './task-context.ts';
import { localTrainRequest, type TrainingOf } from './train-request.ts';
import { assertFinite } from './update-payload.ts';

/** The personalised adapter of global `version` (null when training.personal_steps is 0). */
export async function personalise(deps: TaskDeps, t: TrainingOf, global: AdapterWeights, version: number): Promise<AdapterWeights | null> {
  const steps = deps.config.training.personal_steps;
  if (steps <= 0) return null;
  deps.status.state = 'training';
  const r = await deps.trainer.train(localTrainRequest(deps, t, 'personal', global, steps));
  assertFinite(r.adapter, `personalised adapter of version ${version}`);
  deps.workspace.savePersonal(t.task.jobId, version, r.adapter, t.lora, t.task.baseModel.id);
  return r.adapter;
}
