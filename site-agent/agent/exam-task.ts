// TASK_KIND_EXAM: score the job's global adapter on this site's own copy of an exam file
// (site.yaml evaluation.exams maps the exam's name to it) and report only the figures (eval_set
// exam:<name>, kind global, round = the adapter version): accuracy with its 95% interval and
// bootstrap replicates, per subject (withheld below evaluation.min_items), latency and calibration.
// Questions, answers and per-question results stay here. A site without the file, or with a
// malformed one, declines naming why (the agent declines a task that fails).
import { fail } from '../../shared/errors.ts';
import { readExamFile } from '../eval/exam/exam-file.ts';
import { engineExamModel, examResults, scoreExam, type ExamMode } from '../eval/exam/exam-run.ts';
import { reportTaskDone } from './cross-eval.ts';
import { fetchVerifiedGlobal } from './global-adapter.ts';
import { reportedFigure, reportMetrics } from './metrics-report.ts';
import { checkBaseModel, loraOfTask, type TaskDeps } from './task-context.ts';
import type { WireTask } from './wire.ts';

/** Tokens generated per answer: a letter and a little room. */
const EXAM_MAX_NEW_TOKENS = 16;

export async function runExamTask(deps: TaskDeps, task: WireTask): Promise<{ questions: number }> {
  const name = task.exam ?? '';
  const file = deps.workspace.examFile(name);
  if (!file) throw fail('FEDLORA_ERR_NOT_FOUND', `site ${deps.siteId} holds no exam "${name}" (site.yaml evaluation.exams names ${Object.keys(deps.config.evaluation.exams).join(', ') || 'none'})`);
  const mode = (task.examMode || 'loglik') as ExamMode;
  if (!['loglik', 'generate', 'both'].includes(mode)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `task ${task.taskId}: exam_mode ${JSON.stringify(task.examMode)} is not loglik, generate or both`);
  const exam = readExamFile(file);
  deps.status.state = 'evaluating';
  await checkBaseModel(deps, task);
  const adapter = await fetchVerifiedGlobal(deps, task);
  const model = engineExamModel(deps.workspace.checkpoint(), deps.workspace.tokenizer(), adapter, loraOfTask(task), { device: deps.config.model.device, quantize: deps.config.model.quantize });
  const scored = await scoreExam(model, exam.items, { mode, maxNewTokens: EXAM_MAX_NEW_TOKENS });
  const ev = deps.config.evaluation;
  // the draws are labelled by the site: sites resample independently (the consortium interval needs it)
  const figs = examResults({ ...exam, name }, scored, { minCount: ev.min_items, resamples: ev.bootstrap.resamples, seed: ev.bootstrap.seed, label: deps.siteId });
  const version = task.globalAdapter.version;
  await reportMetrics(deps, { ...task, round: version }, 'eval', figs.map((f) => reportedFigure('global', f, version, `exam:${name}`)));
  await reportTaskDone(deps.wire, task);
  deps.log.info({ task: task.taskId, job: task.jobId, version, exam: name, questions: exam.items.length }, 'exam scored and reported (figures only)');
  return { questions: exam.items.length };
}
