// The Task messages sites receive for round tasks: TRAIN for the round's base version, built
// from the job spec and the round's stored plan (so a task re-sent after a restart is the same
// task), and the final EVALUATE side tasks of a completed job.
import type { Task } from '../../shared/proto.ts';
import type { CoordinatorStore, TaskRow } from '../store/store.ts';
import type { JobInfo } from '../jobs/job-service.ts';
import { createPrivacyLedger } from '../privacy/ledger.ts';
import { roundPlanOf, wireConfig } from './round-plan.ts';
import { periodOfRound, periodsOf } from '../jobs/periods.ts';

export interface TaskMessageDeps {
  store: CoordinatorStore;
  jobInfo(jobId: string): JobInfo;
}

/** The Task message for a task row (TRAIN for the round's base version). */
export function taskMessage(d: TaskMessageDeps, t: TaskRow): Task {
  const { spec } = d.jobInfo(t.job_id);
  const r = d.store.rounds(t.job_id).find((x) => x.round === t.round && x.attempt === t.attempt)!;
  const g = d.store.adapterVersion(t.job_id, r.base_version)!;
  const plan = roundPlanOf(r);
  const dp = spec.privacy.dp;
  // The site's own maximum-epsilon check (policy.max_epsilon) reads this: the ledger's epsilon
  // once this round is published, by the same accountant the coordinator charges.
  const spent = dp ? createPrivacyLedger(dp).epsilonAfter(t.round).epsilon : 0;
  const dataPeriod = periodOfRound(periodsOf(d.store.db, t.job_id, spec), t.round);
  return {
    taskId: t.task_id, jobId: t.job_id, round: t.round, kind: t.kind as Task['kind'],
    baseModel: { id: spec.base_model.id, manifestSha256: spec.base_model.manifest_sha256 },
    lora: { r: spec.lora.r, alpha: spec.lora.alpha, targetModules: spec.lora.target_modules, dropout: spec.lora.dropout, useRslora: spec.lora.use_rslora, freezeA: spec.lora.freeze_a, initSeed: spec.lora.init_seed, minSiteR: spec.lora.min_site_r ?? spec.lora.r },
    train: {
      localSteps: spec.train.local_steps, localEpochs: spec.train.local_epochs, learningRate: spec.train.learning_rate, optimizer: spec.train.optimizer,
      batchTokens: spec.train.batch_tokens, seed: (spec.train.seed + t.round) % Number.MAX_SAFE_INTEGER, proxMu: plan.config.proxMu ?? (Number(spec.aggregation.mu ?? 0) || 0),
      weightDecay: spec.train.weight_decay, warmupSteps: spec.train.warmup_steps, maxGradNorm: spec.train.max_grad_norm,
      replayFraction: spec.train.replay_fraction, dataPeriod,
      ...(spec.train.distill ? { distill: { teacher: spec.train.distill.teacher, topK: spec.train.distill.top_k, temperature: spec.train.distill.temperature, alpha: spec.train.distill.alpha } } : {}),
    },
    globalAdapter: { jobId: t.job_id, version: g.version, sha256: g.sha256, sizeBytes: g.size, manifestSha256: g.manifest_sha256 },
    privacy: {
      dpEnabled: !!dp, clipNorm: dp?.clip_norm ?? 0, noiseMultiplier: dp?.noise_multiplier ?? 0, epsilonAfterRound: spent, delta: dp?.delta ?? 0,
      secureAggregation: spec.privacy.secure_aggregation, minSites: spec.min_sites, adaptiveClipping: dp?.adaptive_clipping ?? false, clippedBitNoise: 0,
    },
    deadlineUnixMs: r.deadline_ms, selectedSites: (JSON.parse(r.selected_json) as string[]).length, aggregation: spec.aggregation.name,
    payloadKind: plan.payloadKind, strategyConfig: wireConfig(plan.config), peerAdapters: [], peerSites: [],
    evaluateBase: spec.evaluation.evaluate_base && t.round === 1,
    parentJob: spec.init_adapter?.job ?? '',
  };
}

/** Every site that took part evaluates the final version on its held-out data (the last
 *  round's TRAIN tasks evaluated only the versions before it): one EVALUATE side task per site,
 *  built from the site's last round task. */
export function finalEvaluateTasks(d: TaskMessageDeps, jobId: string): { siteId: string; task: Task }[] {
  const last = d.store.adapterVersions(jobId).at(-1);
  if (!last || last.version === 0) return [];
  const lastTaskBySite = d.store.lastRoundTaskPerSite(jobId);
  return [...lastTaskBySite].map(([siteId, t]) => ({
    siteId,
    task: {
      ...taskMessage(d, t), taskId: `eval-${jobId}-v${last.version}-${siteId}`, kind: 'TASK_KIND_EVALUATE' as const, round: last.version,
      globalAdapter: { jobId, version: last.version, sha256: last.sha256, sizeBytes: last.size, manifestSha256: last.manifest_sha256 },
    },
  }));
}
