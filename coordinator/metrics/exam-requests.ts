// Federated exams: an admin asks the sites of a job to score its newest global adapter on their own
// copy of an exam file (POST /api/jobs/:id/exams, `fedlora job exam JOB --exam NAME`). Each site gets
// one EXAM side task (side_tasks, kind TASK_KIND_EXAM, delivered on its task stream); the site maps
// the exam's name to its file (site.yaml evaluation.exams), scores it, and reports only figures
// (eval_set exam:<name>: accuracy with its interval and replicates, per subject), then "done"; a
// site without the file declines naming why. The consortium figure is the summary's, as for held-out sets.
import { fail } from '../../shared/errors.ts';
import type { Task } from '../../shared/proto.ts';
import type { RoundEngine } from '../rounds/index.ts';
import type { TaskRow } from '../store/store.ts';
import { insertSideTasks, sideTaskMessage, type SideTaskRow } from '../store/side-tasks.ts';

export const EXAM_NAME = /^[A-Za-z0-9._-]{1,64}$/;
export type ExamMode = 'loglik' | 'generate' | 'both';

/** One EXAM task per site of the job (or the named ones) for its newest published version. */
export function requestExam(engine: RoundEngine, o: { jobId: string; exam: string; mode: ExamMode; sites?: string[]; now: number }): { version: number; tasks: { site: string; task_id: string }[] } {
  if (!EXAM_NAME.test(o.exam)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `exam ${JSON.stringify(o.exam)}: a name of letters, digits, . _ - (at most 64)`);
  const last = engine.store.adapterVersions(o.jobId).at(-1);
  if (!last) throw fail('FEDLORA_ERR_JOB_STATE', `job ${o.jobId} has no published adapter yet: nothing to examine`);
  // the sites that took part, each with its last round task (the job's model, LoRA and privacy settings)
  const lastTask = engine.store.lastRoundTaskPerSite(o.jobId);
  for (const s of o.sites ?? []) if (!lastTask.has(s)) throw fail('FEDLORA_ERR_NOT_FOUND', `sites: site ${s} took no part in job ${o.jobId}`);
  const sites = [...lastTask.keys()].filter((s) => !o.sites?.length || o.sites.includes(s)).sort();
  const tasks = sites.map((siteId) => {
    const task: Task = {
      ...engine.taskMessage(lastTask.get(siteId)!), taskId: `exam-${o.jobId}-${o.exam}-v${last.version}-${siteId}-${o.now}`, kind: 'TASK_KIND_EXAM', round: last.version,
      globalAdapter: { jobId: o.jobId, version: last.version, sha256: last.sha256, sizeBytes: last.size, manifestSha256: last.manifest_sha256 },
      exam: o.exam, examMode: o.mode, evaluateBase: false,
    };
    return { siteId, task };
  });
  insertSideTasks(engine.store.db, tasks, o.now);
  return { version: last.version, tasks: tasks.map((t) => ({ site: t.siteId, task_id: t.task.taskId })) };
}

export function examTaskView(r: SideTaskRow) {
  const t = sideTaskMessage(r);
  return {
    task_id: r.task_id, site: r.site_id, exam: t.exam ?? '', mode: t.examMode ?? '', version: t.round, status: r.status,
    decline_reason: r.decline_reason, decline_code: r.decline_code, created: new Date(r.created_ms).toISOString(), updated: new Date(r.updated_ms).toISOString(),
  };
}

/** The job's EXAM tasks, newest first. */
export function examTasks(engine: RoundEngine, jobId: string): ReturnType<typeof examTaskView>[] {
  const rows = engine.store.db.prepare(`SELECT * FROM side_tasks WHERE job_id = ? AND kind = 'TASK_KIND_EXAM' ORDER BY created_ms DESC, site_id`).all(jobId) as SideTaskRow[];
  return rows.map(examTaskView);
}
