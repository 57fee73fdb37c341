// Aggregate numbers the site sends the coordinator (never records): each report goes over the
// wire and is then recorded as an egress in the site's audit log. Non-finite values are dropped;
// an empty report is not sent.

import type { AuditLog } from '../../shared/audit.ts';
import type { OutboxEntry } from './outbox.ts';
import type { FederationWire, WireTask } from './wire.ts';
import type { Metric } from '../../shared/proto.ts';
import type { Figure } from '../eval/metrics/figure.ts';

export interface SiteReportMetric {
  kind: string;
  name: string;
  value: number;
  count: number;
  /** Default: the task's round. */
  adapterVersion?: number;
  /** '' = the whole set (shared/metric-subset.ts). */
  subset?: string;
  ci?: [number, number] | null;
  resamples?: number;
  replicates?: Float32Array;
  /** '' = the held-out set; 'exam:<name>'. */
  evalSet?: string;
}

/** A figure of an evaluation as it is reported (kind: whose adapter). */
export function reportedFigure(kind: string, f: Figure, adapterVersion: number, evalSet = ''): SiteReportMetric {
  return { kind, name: f.name, value: f.value, count: f.count, adapterVersion, subset: f.subset, ci: f.ci, resamples: f.resamples, replicates: f.replicates, evalSet };
}

/** The wire form of a reported figure (the interval only when it has one). */
export function wireMetric(m: SiteReportMetric, adapterVersion: number, modelOwner = ''): Metric {
  return {
    kind: m.kind, name: m.name, value: m.value, count: m.count, modelOwner, adapterVersion: m.adapterVersion ?? adapterVersion,
    ci: m.ci ? { low: m.ci[0], high: m.ci[1], resamples: m.resamples ?? m.replicates?.length ?? 0 } : null,
    subset: m.subset ?? '', bootstrap: m.replicates ? Array.from(m.replicates) : [], evalSet: m.evalSet ?? '',
  };
}

const described = (m: SiteReportMetric) => `${m.kind}.${m.name}${m.subset ? `[${m.subset}]` : ''}${m.evalSet ? `@${m.evalSet}` : ''}`;

export interface ReportDeps {
  siteId: string;
  wire: Pick<FederationWire, 'reportMetrics'>;
  audit: Pick<AuditLog, 'append'>;
}

type TaskRef = Pick<WireTask, 'taskId' | 'jobId' | 'round'>;

export async function reportMetrics(deps: ReportDeps, task: TaskRef, phase: string, metrics: SiteReportMetric[]): Promise<void> {
  const clean = metrics.filter((m) => Number.isFinite(m.value));
  if (clean.length === 0) return;
  await deps.wire.reportMetrics({
    taskId: task.taskId,
    jobId: task.jobId,
    round: task.round,
    phase,
    metrics: clean.map((m) => wireMetric(m, task.round)),
  });
  deps.audit.append(deps.siteId, 'egress', `${task.jobId}/${task.round}`, { what: 'aggregate metrics', phase, metrics: clean.map(described), to: 'coordinator' });
}

/** The training summary of a round (kept with its outbox entry, so a resumed upload reports it too). */
export async function reportTraining(
  deps: ReportDeps,
  e: TaskRef & { info: Pick<OutboxEntry['info'], 'trainLoss' | 'tokensPerSecond' | 'numExamples' | 'peakRssBytes' | 'weightBits' | 'loraRank' | 'trainKl'> },
): Promise<void> {
  await reportMetrics(deps, e, 'train', [
    { kind: 'global', name: 'train_loss', value: e.info.trainLoss ?? NaN, count: e.info.numExamples },
    { kind: 'global', name: 'train_tokens_per_s', value: e.info.tokensPerSecond, count: 1 },
    // the site's memory and base-weight precision (model.quantize), when its trainer reports them
    ...(e.info.peakRssBytes !== undefined ? [{ kind: 'global' as const, name: 'train_peak_rss_bytes', value: e.info.peakRssBytes, count: 1 }] : []),
    ...(e.info.weightBits !== undefined ? [{ kind: 'global' as const, name: 'train_weight_bits', value: e.info.weightBits, count: 1 }] : []),
    // the LoRA rank it trained when below the job's (policy.max_lora_rank)
    ...(e.info.loraRank !== undefined ? [{ kind: 'global' as const, name: 'train_lora_rank', value: e.info.loraRank, count: 1 }] : []),
    // distillation jobs: the KL to the teacher's top-k at the last local step
    ...(e.info.trainKl !== undefined ? [{ kind: 'global' as const, name: 'train_kl', value: e.info.trainKl, count: e.info.numExamples }] : []),
  ]);
}
