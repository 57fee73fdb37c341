// Evaluation at the site: an adapter (the global one, the local-only baseline, or none = the base
// model) is scored on the held-out set by the site's evaluator (workspace.evaluate) and only the
// aggregate metrics are reported; a global adapter's metrics also go to the "on global adapter
// evaluated" hook (global-adapter.ts). An EVALUATE task (the job's final evaluation) is this for the
// global adapter it names, and the base model when asked.

import { rmSync } from 'node:fs';
import type { AdapterWeights, LoraConfig } from '../../shared/lora/types.ts';
import { reportTaskDone } from './cross-eval.ts';
import { fetchVerifiedGlobal } from './global-adapter.ts';
import { reportedFigure, reportMetrics, type ReportDeps } from './metrics-report.ts';
import { loraOfTask, type TaskDeps } from './task-context.ts';
import { siteRankStart } from './site-rank.ts';
import { personalise } from './personal.ts';
import type { WireTask } from './wire.ts';
import { figureOptionsOf, type ItemOutcomes } from './evaluation.ts';
import { pairedVsLocal } from './paired-comparison.ts';

/** Held-out metrics of `adapter` (and, for the job's adapters, its figures on the consortium-wide
 *  sets), reported with kind `global` | `local` | `base`; a global
 *  adapter's metrics belong to the round that produced it (its version). A local-only adapter's
 *  per-item outcomes are kept at the site; a global version's evaluation adds its paired
 *  difference to the local-only adapter of its round (paired-comparison.ts). */
export async function evaluateAndReport(
  deps: TaskDeps,
  task: WireTask,
  kind: 'global' | 'local' | 'base' | 'personal',
  adapter: AdapterWeights | null,
  lora: LoraConfig,
  version: number,
): Promise<void> {
  deps.status.state = 'evaluating';
  const own = await deps.workspace.evaluateWithOutcomes(adapter, lora);
  const m = own.metrics;
  const shared = kind === 'base' ? [] : await deps.workspace.evaluateShared(adapter, lora);
  const outcomes = [own.outcomes, ...shared.map((s) => s.outcomes)].filter((x): x is ItemOutcomes => x !== null);
  if (kind === 'local') deps.workspace.saveLocalOutcomes(task.jobId, task.round, outcomes);
  // The global version against the local-only adapter of its round, item by item (paired).
  const paired = kind === 'global' ? pairedVsLocal(outcomes, deps.workspace.localOutcomes(task.jobId, version), figureOptionsOf(deps.config.evaluation)) : [];
  const figures = [
    ...m.map((f) => reportedFigure(kind, f, version)),
    ...shared.flatMap((s) => s.metrics.map((f) => reportedFigure(kind, f, version, s.evalSet))),
    ...paired.map((p) => reportedFigure(kind, p.figure, version, p.evalSet)),
  ];
  await reportMetrics(deps, { ...task, round: kind === 'global' || kind === 'personal' ? version : task.round }, 'eval', figures);
  // After the report: the coordinator has the numbers before the gate's safety suite runs. The
  // gate compares whole-set figures (with their intervals, without the replicates).
  const wholeSet = m.filter((f) => f.subset === '').map(({ replicates: _r, ...f }) => f);
  if (kind === 'global') await deps.onGlobalEvaluated?.({ jobId: task.jobId, version, sha256: task.globalAdapter.sha256, dir: deps.workspace.globalDir(task.jobId, version), metrics: wholeSet });
  if (kind === 'global') await reportReview(deps, task);
}

/** The doctors' review aggregates of the job's versions that changed since last sent (each
 *  figure names the version it is about). */
export async function reportReview(deps: ReportDeps & Pick<TaskDeps, 'reviewEgress'>, task: Pick<WireTask, 'taskId' | 'jobId' | 'round'>): Promise<void> {
  for (const p of deps.reviewEgress?.pending(task.jobId) ?? []) {
    await reportMetrics(deps, task, 'review', p.metrics);
    deps.reviewEgress!.markSent(p);
  }
}

/** TASK_KIND_EVALUATE: the named global adapter, this site's personalised one of it (when
 *  training.personal_steps) and the base model if asked, then "done". */
export async function runEvaluateTask(deps: TaskDeps, task: WireTask): Promise<void> {
  const lora = loraOfTask(task);
  deps.status.state = 'evaluating';
  const global = await fetchVerifiedGlobal(deps, task);
  deps.workspace.enterDataPeriod(task, { record: false });
  await evaluateAndReport(deps, task, 'global', global, lora, task.globalAdapter.version);
  const workDir = deps.workspace.taskDir(task.taskId);
  // personalised at the rank this site trains (policy.max_lora_rank), from the global at that rank
  const at = deps.config.training.personal_steps > 0 ? siteRankStart(deps, task, lora, global) : null;
  const personalLora = at?.lora ?? lora;
  const personal = await personalise(deps, { task, lora: personalLora, workDir, trainFile: (await deps.workspace.trainingData()).trainFile }, at?.start ?? global, task.globalAdapter.version);
  if (personal) await evaluateAndReport(deps, task, 'personal', personal, personalLora, task.globalAdapter.version);
  rmSync(workDir, { recursive: true, force: true });
  if (task.evaluateBase) await evaluateAndReport(deps, task, 'base', null, lora, task.globalAdapter.version);
  await reportTaskDone(deps.wire, task);
}
