// Storing what sites report (ReportMetrics): evaluation and training metrics, per job and round.
// A metric of a side task (EVALUATE / CROSS_EVAL) already stored for the task — same kind, name,
// owner and version: the site did the task again after it restarted — is acknowledged, not
// stored twice, and the empty TASK_DONE_PHASE report marks the side task done. A figure's interval
// goes in its row; its bootstrap replicates (float32 little-endian) in metric_bootstrap.
import { fail } from '../../shared/errors.ts';
import { TASK_DONE_PHASE, type Metric, type MetricsReport } from '../../shared/proto.ts';
import type { CoordinatorStore } from '../store/store.ts';
import { setSideTaskStatus, sideTask } from '../store/side-tasks.ts';

const KINDS = ['global', 'local', 'base', 'cross', 'personal'];
// '' the site's held-out set, exam:<name> an exam file, shared:<name> a consortium-wide test set (evaluation.shared_sets), review the doctors' review of an adapter's answers.
const EVAL_SET = /^((exam|shared):[A-Za-z0-9._-]{1,64}|review)?$/;
/** Bounds of what one figure may carry (a report is at most MAX_MESSAGE_BYTES anyway). */
const MAX_SUBSET_CHARS = 512;
const MAX_REPLICATES = 100_000;

/** Check what a figure carries beyond its value; a bad one names the field and the figure. */
function checkFigure(x: Metric): void {
  const what = `MetricsReport.metrics ${x.name}${x.subset ? `[${x.subset}]` : ''}`;
  const bad = (msg: string) => fail('FEDLORA_ERR_INVALID_ARGUMENT', `${what}: ${msg}`);
  if ((x.subset ?? '').length > MAX_SUBSET_CHARS) throw bad(`subset is longer than ${MAX_SUBSET_CHARS} characters`);
  if (!EVAL_SET.test(x.evalSet ?? '')) throw bad(`eval_set ${JSON.stringify(x.evalSet)} is none of '', exam:<name>, shared:<name> (letters, digits, . _ -) and review`);
  if (x.ci) {
    if (!Number.isFinite(x.ci.low) || !Number.isFinite(x.ci.high) || x.ci.low > x.ci.high) throw bad(`ci [${x.ci.low}, ${x.ci.high}] is not a finite interval`);
  }
  if ((x.bootstrap?.length ?? 0) > MAX_REPLICATES) throw bad(`${x.bootstrap!.length} bootstrap replicates (at most ${MAX_REPLICATES})`);
}

/** Store a site's metrics; returns how many rows were stored. */
export function storeSiteMetrics(store: CoordinatorStore, now: number, siteId: string, m: MetricsReport): number {
  if (!store.job(m.jobId)) throw fail('FEDLORA_ERR_NOT_FOUND', `MetricsReport.job_id: job ${m.jobId} does not exist`);
  const side = m.taskId ? sideTask(store.db, m.taskId) : undefined;
  const mine = side && side.site_id === siteId && side.job_id === m.jobId ? side : undefined;
  const stored = mine
    ? store.db.prepare('SELECT 1 FROM metrics WHERE task_id = ? AND site_id = ? AND kind = ? AND metric = ? AND model_owner = ? AND adapter_version IS ? AND subset = ? AND eval_set = ? LIMIT 1')
    : null;
  const keep = store.db.prepare('INSERT INTO metric_bootstrap (metric_id, replicates) VALUES (?, ?)');
  let n = 0;
  store.tx(() => {
    for (const x of m.metrics) {
      if (!KINDS.includes(x.kind)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `MetricsReport.metrics.kind: "${x.kind}" is not global|local|base|cross`);
      if (!Number.isFinite(x.value)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `MetricsReport.metrics: ${x.name} = ${x.value} is not finite`);
      checkFigure(x);
      const subset = x.subset ?? '', evalSet = x.evalSet ?? '';
      if (stored?.get(m.taskId, siteId, x.kind, x.name, x.modelOwner, x.adapterVersion, subset, evalSet)) continue;
      const id = store.insertMetric({
        job_id: m.jobId, round: m.round, site_id: siteId, kind: x.kind, metric: x.name, value: x.value, count: x.count, model_owner: x.modelOwner,
        adapter_version: x.adapterVersion, phase: m.phase || null, task_id: m.taskId || null, created_ms: now,
        subset, eval_set: evalSet, ci_low: x.ci?.low ?? null, ci_high: x.ci?.high ?? null, ci_resamples: x.ci ? x.ci.resamples : null,
      });
      if (x.bootstrap?.length) keep.run(id, Buffer.from(Float32Array.from(x.bootstrap).buffer));
      n++;
    }
    if (mine && m.phase === TASK_DONE_PHASE) setSideTaskStatus(store.db, mine.task_id, 'done', now);
  });
  return n;
}
