// The site's part of a federated training round (TASK_KIND_TRAIN) as a pipeline of named steps.
// Each step is a small function of (deps, round): `deps` are the site's parts (task-context.ts),
// `round` holds the task and what earlier steps produced. A step returns 'stop' to end the round
// early (declined by policy, already submitted); a step that throws fails the task (the agent
// declines it, or forgets it when the connection broke). A new step (replay of earlier records,
// a per-site rank, a personalised adapter, another evaluation) is a function here and one line
// in TRAIN_ROUND where it belongs.
//
//   resume-recorded-update  a task sent again whose update is in the outbox: resume it or skip
//   site-policy             the site's own policy first: nothing is computed for a task it refuses
//   verify-base-model       the local base model is the job's, byte for byte
//   distill-teacher         a distillation job's teacher, found at the site (else declined)
//   fetch-global-adapter    download and verify; "on global adapter verified" hooks run there
//   data-period             the job's data period: new records, earlier ones to replay and keep testing
//   evaluate-global         held-out metrics of the adapter this round starts from
//   site-rank               below the job's rank (policy.max_lora_rank): the global re-compressed to it
//   prepare-training-data   the training file, from the site store
//   train                   local training from the global adapter (at the site's rank)
//   build-payload           the update: delta or weights, only B with a frozen A
//   record-in-outbox        bytes and signed header stored before the first byte is sent
//   deliver                 secure aggregation (masked) or the outbox upload
//   report-training         training loss and tokens/s to the coordinator
//   personalise             a few local steps on the global version, evaluated, never sent
//   local-baseline          the same training on this site's data alone, kept current

import { createHash, randomUUID } from 'node:crypto';
import { existsSync, rmSync } from 'node:fs';
import { fail } from '../../shared/errors.ts';
import type { AdapterWeights, LoraConfig } from '../../shared/lora/types.ts';
import { layoutAtRank, padToRank, rankOfLayout } from '../../shared/lora/rank.ts';
import { flatten, l2norm, layoutOf, unflatten } from '../../shared/tensors.ts';
import { signUpdate } from '../../shared/update-signature.ts';
import { evaluateAndReport } from './evaluate-task.ts';
import { fetchVerifiedGlobal } from './global-adapter.ts';
import { reportTraining } from './metrics-report.ts';
import type { OutboxEntry } from './outbox.ts';
import { deliverEntry, discardEntry } from './outbox-delivery.ts';
import { checkPolicy, siteLoraRank } from './policy.ts';
import { runSecAggSite } from './secagg-client.ts';
import { checkBaseModel, loraOfTask, taskLogFields, type AgentState, type TaskDeps } from './task-context.ts';
import type { LocalTrainRequest, LocalTrainResult } from './trainers.ts';
import { localTrainRequest } from './train-request.ts';
import { personalise } from './personal.ts';
import { resolveTeacher } from './distill-teacher.ts';
import { siteRankStart } from './site-rank.ts';
import { assertFinite, buildUpdateTensors, encodeUpdate, type PayloadKind } from './update-payload.ts';
import type { WireTask } from './wire.ts';
import { declineTask } from './decline.ts';

export interface TrainRound {
  readonly task: WireTask;
  readonly log: ReturnType<typeof taskLogFields>;
  /** The job's LoRA settings: the global adapter and the update have this shape. */
  readonly lora: LoraConfig;
  /** This task's scratch folder: removed when the round ends, kept after a failure. */
  readonly workDir: string;
  global?: AdapterWeights;
  /** Below the job's rank (policy.max_lora_rank): the rank this site trains, its LoRA settings
   *  (the job's scaling) and the global adapter re-compressed to it. Absent: the job's rank. */
  siteRank?: { lora: LoraConfig; start: AdapterWeights };
  trainFile?: string;
  trained?: LocalTrainResult;
  update?: { kind: PayloadKind; tensors: AdapterWeights; l2Norm: number };
  /** The outbox entry of a plain upload (none with secure aggregation). */
  recorded?: OutboxEntry;
}

export type StepResult = void | 'stop';

export interface RoundStep {
  name: string;
  /** The agent state heartbeats show while the step runs (unchanged if absent). */
  state?: AgentState;
  run(deps: TaskDeps, round: TrainRound): Promise<StepResult> | StepResult;
}

export const TRAIN_ROUND: readonly RoundStep[] = [
  { name: 'resume-recorded-update', run: resumeRecordedUpdate },
  { name: 'site-policy', run: admitBySitePolicy },
  { name: 'verify-base-model', run: verifyBaseModel },
  { name: 'distill-teacher', run: findDistillTeacher },
  { name: 'fetch-global-adapter', state: 'training', run: fetchGlobalAdapter },
  { name: 'data-period', run: enterRoundDataPeriod },
  { name: 'evaluate-global', state: 'evaluating', run: evaluateGlobal },
  { name: 'site-rank', run: startAtSiteRank },
  { name: 'prepare-training-data', state: 'training', run: prepareTrainingData },
  { name: 'train', state: 'training', run: trainFromGlobal },
  { name: 'build-payload', run: buildPayload },
  { name: 'record-in-outbox', run: recordInOutbox },
  { name: 'deliver', state: 'uploading', run: deliverUpdate },
  { name: 'report-training', run: reportRoundTraining },
  { name: 'personalise', run: personaliseGlobal },
  { name: 'local-baseline', run: trainLocalBaseline },
];

/** Run the steps in order; the scratch folder is removed when the round ends (done or stopped). */
export async function runTrainRound(deps: TaskDeps, task: WireTask, steps: readonly RoundStep[] = TRAIN_ROUND): Promise<void> {
  let lora: LoraConfig | undefined; // read when a step first needs it (a resumed upload does not)
  const round: TrainRound = {
    task,
    log: taskLogFields(task),
    get lora() {
      return (lora ??= loraOfTask(task));
    },
    workDir: deps.workspace.taskDir(task.taskId),
  };
  for (const step of steps) {
    if (step.state) deps.status.state = step.state;
    let result: StepResult;
    try {
      result = await step.run(deps, round);
    } catch (e) {
      deps.log.warn({ ...round.log, step: step.name, err: (e as Error).message }, 'round step failed');
      throw e;
    }
    if (result === 'stop') break;
  }
  rmSync(round.workDir, { recursive: true, force: true });
}

/** What an earlier step must have produced (a clear error if steps were put in the wrong order). */
function need<K extends keyof TrainRound>(round: TrainRound, key: K, step: string): NonNullable<TrainRound[K]> {
  const v = round[key];
  if (v === undefined || v === null) throw fail('FEDLORA_ERR_INTERNAL', `round step ${step} needs "${String(key)}", which no earlier step produced`);
  return v as NonNullable<TrainRound[K]>;
}

/** A task sent again (after a restart or reconnect) whose update is already recorded is never
 *  trained twice: pending -> resume the same update; acknowledged -> nothing to do. */
export async function resumeRecordedUpdate(deps: TaskDeps, round: TrainRound): Promise<StepResult> {
  const prior = deps.outbox.forTask(round.task.taskId);
  if (prior?.state === 'acknowledged') {
    deps.log.info({ ...round.log, update: prior.updateId }, 'task already submitted (update acknowledged); skipped');
    return 'stop';
  }
  if (prior?.state === 'pending' && existsSync(prior.file)) {
    deps.log.info({ ...round.log, update: prior.updateId }, 'task resent with its update pending: resuming the upload, not retraining');
    deps.status.state = 'uploading';
    await deliverEntry(deps, prior);
    await reportTraining(deps, prior);
    return 'stop';
  }
  if (prior?.state === 'pending') discardEntry(deps, prior, 'FEDLORA_ERR_IO', `${prior.file} is missing; the task is trained again`);
}

/** The site's own policy: a refused task is declined (and audited) before anything is computed. */
export async function admitBySitePolicy(deps: TaskDeps, round: TrainRound): Promise<StepResult> {
  const { task } = round;
  const decision = checkPolicy(deps.config.policy, {
    dpEnabled: task.privacy.dpEnabled,
    epsilonAfterRound: task.privacy.epsilonAfterRound,
    secureAggregation: task.privacy.secureAggregation,
    minSites: task.privacy.minSites,
    selectedSites: task.selectedSites,
  });
  const refusal = !decision.ok ? decision : siteLoraRank(deps.config.policy, task.lora);
  if (refusal.ok) return;
  deps.log.warn({ ...round.log, reason: refusal.reason }, 'task declined by site policy');
  await declineTask(deps, task, refusal.code, refusal.reason);
  return 'stop';
}

/** A distillation job's teacher must be at this site with the student's tokenizer, else the round is declined. */
export async function findDistillTeacher(deps: TaskDeps, round: TrainRound): Promise<StepResult> {
  const t = await resolveTeacher(deps.config, round.task);
  if (!t || t.ok) return;
  deps.log.warn({ ...round.log, reason: t.reason }, 'task declined: distillation teacher');
  await declineTask(deps, round.task, t.code, t.reason);
  return 'stop';
}

/** The base model must be the job's, byte for byte (manifest of file hashes). */
export async function verifyBaseModel(deps: TaskDeps, round: TrainRound): Promise<StepResult> {
  await checkBaseModel(deps, round.task);
}

export async function fetchGlobalAdapter(deps: TaskDeps, round: TrainRound): Promise<StepResult> {
  round.global = await fetchVerifiedGlobal(deps, round.task);
}

/** Which of the site's records are this period's new ones and which earlier (periods.ts). */
export function enterRoundDataPeriod(deps: TaskDeps, round: TrainRound): StepResult {
  const p = deps.workspace.enterDataPeriod(round.task, { record: true });
  if (p.earlierUpTo !== null) deps.log.info({ ...round.log, period: round.task.train.dataPeriod ?? 0, earlier_up_to_ingest_run: p.earlierUpTo, replay_fraction: p.replayFraction }, 'data period');
}

/** The global adapter this round starts from is the result of round `version`: reported as such. */
export async function evaluateGlobal(deps: TaskDeps, round: TrainRound): Promise<StepResult> {
  const v = round.task.globalAdapter.version;
  await evaluateAndReport(deps, round.task, 'global', need(round, 'global', 'evaluate-global'), round.lora, v);
}

/** Below the job's rank: the global re-compressed to the site's (site-rank.ts). */
export function startAtSiteRank(deps: TaskDeps, round: TrainRound): StepResult {
  const at = siteRankStart(deps, round.task, round.lora, need(round, 'global', 'site-rank'));
  if (!at) return;
  round.siteRank = at;
  deps.log.info({ ...round.log, job_rank: round.lora.r, site_rank: at.lora.r }, 'training a lower LoRA rank (policy.max_lora_rank)');
}

/** The LoRA settings and start of this site's training: its own rank's, else the job's. */
const trainedLora = (round: TrainRound): LoraConfig => round.siteRank?.lora ?? round.lora;
const startOf = (round: TrainRound, step: string): AdapterWeights => round.siteRank?.start ?? need(round, 'global', step);

export async function prepareTrainingData(deps: TaskDeps, round: TrainRound): Promise<StepResult> {
  const { task } = round;
  round.trainFile = (await deps.workspace.trainingData({ jobId: task.jobId, round: task.round, taskId: task.taskId })).trainFile;
}

/** One local training of this round (from the global adapter, or the local baseline's own). */
function trainRequest(deps: TaskDeps, round: TrainRound, run: 'global' | 'local', initAdapter: AdapterWeights): LocalTrainRequest {
  return localTrainRequest(deps, { ...round, lora: trainedLora(round), trainFile: need(round, 'trainFile', `train (${run})`) }, run, initAdapter);
}

export async function trainFromGlobal(deps: TaskDeps, round: TrainRound): Promise<StepResult> {
  const result = await deps.trainer.train(trainRequest(deps, round, 'global', startOf(round, 'train')));
  assertFinite(result.adapter, `local training of round ${round.task.round}`);
  if (result.distill) deps.log.info({ ...round.log, kl_first: result.distill.klPerStep[0], kl_last: result.distill.klPerStep.at(-1), teacher_store_reused: result.distill.teacherStoreReused }, 'distilled from the teacher');
  round.trained = result;
}

/** What leaves the site: local - global (or the local weights), only lora_B with a frozen A;
 *  at the site's rank (the coordinator pads or re-compresses), except that secure aggregation
 *  masks vectors of the job's layout: there the rank-k B delta is zero-padded here (ffa, the
 *  only strategy the job spec allows lower ranks with under secure aggregation). */
export function buildPayload(_deps: TaskDeps, round: TrainRound): StepResult {
  const kind: PayloadKind = round.task.payloadKind === 'weights' ? 'weights' : 'delta';
  let tensors = buildUpdateTensors(startOf(round, 'build-payload'), need(round, 'trained', 'build-payload').adapter, kind, round.lora.freezeA);
  if (round.siteRank && round.task.privacy.secureAggregation) {
    if (kind !== 'delta' || !round.lora.freezeA) throw fail('FEDLORA_ERR_SHAPE', `secure aggregation of a rank-${round.siteRank.lora.r} update needs a frozen A (ffa); the job has aggregation ${round.task.aggregation}`);
    const from = layoutOf(tensors);
    tensors = unflatten(padToRank(flatten(tensors, from), from, layoutAtRank(from, round.lora.r)), layoutAtRank(from, round.lora.r));
  }
  round.update = { kind, tensors, l2Norm: l2norm([...tensors.values()].map((t) => t.data)) };
}

/** What the round's training reports (in the outbox entry and to the coordinator). */
function trainingInfo(round: TrainRound, step: string) {
  const t = need(round, 'trained', step);
  const loraRank = round.siteRank?.lora.r;
  return {
    trainLoss: t.lossPerStep.at(-1) ?? null, tokensPerSecond: t.tokensPerSecond, numExamples: t.numExamples, peakRssBytes: t.peakRssBytes, weightBits: t.weightBits,
    ...(loraRank ? { loraRank } : {}), ...(t.distill ? { trainKl: t.distill.klPerStep.at(-1) } : {}),
  };
}

/** A plain upload is recorded (bytes + signed header) before its first byte is sent, so an
 *  interrupted upload resumes under the same update id instead of retraining. Secure
 *  aggregation records nothing: its masked vector only exists during the exchange. */
export function recordInOutbox(deps: TaskDeps, round: TrainRound): StepResult {
  const { task } = round;
  if (task.privacy.secureAggregation) return;
  const update = need(round, 'update', 'record-in-outbox');
  const trained = need(round, 'trained', 'record-in-outbox');
  const updateId = randomUUID();
  const loraRank = round.siteRank?.lora.r;
  // lora_r: the rank of the factors when below the job's (inside the signed bytes)
  const bytes = encodeUpdate(update.tensors, { job_id: task.jobId, round: String(task.round), payload_kind: update.kind, ...(loraRank ? { lora_r: String(loraRank) } : {}) });
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  const signed = { updateId, jobId: task.jobId, round: task.round, baseVersion: task.globalAdapter.version, sha256, numExamples: trained.numExamples };
  const signature = signUpdate(deps.siteKeyPem(), signed);
  const finalLoss = trained.lossPerStep.at(-1) ?? null;
  round.recorded = deps.outbox.put(
    {
      ...signed,
      taskId: task.taskId,
      totalBytes: bytes.length,
      chunkSize: deps.config.network.chunk_size,
      payloadKind: update.kind,
      signature,
      updateNorm: update.l2Norm,
      clipped: false,
      metadataJson: Buffer.from(JSON.stringify({ final_loss: finalLoss, tokens_per_s: trained.tokensPerSecond, ...(loraRank ? { lora_r: loraRank } : {}) })),
    },
    bytes,
    {
      ...trainingInfo(round, 'record-in-outbox'), payloadKind: update.kind, tensors: update.tensors.size, l2Norm: update.l2Norm,
    },
  );
}

export async function deliverUpdate(deps: TaskDeps, round: TrainRound): Promise<StepResult> {
  if (!round.task.privacy.secureAggregation) {
    await deliverEntry(deps, need(round, 'recorded', 'deliver'));
    return;
  }
  // Secure aggregation: only a masked vector leaves the site; the coordinator unmasks the sum.
  const { task } = round;
  const numExamples = need(round, 'trained', 'deliver').numExamples;
  const r = await runSecAggSite(deps.wire, {
    jobId: task.jobId,
    round: task.round,
    siteId: deps.siteId,
    update: flatten(need(round, 'update', 'deliver').tensors),
    numExamples,
    deadlineUnixMs: Number(task.deadlineUnixMs),
    signal: deps.signal,
  });
  deps.audit.append(deps.siteId, 'egress', `${task.jobId}/${task.round}`, {
    what: 'masked adapter update (secure aggregation)',
    bytes: r.maskedBytes,
    sha256: r.maskedSha256,
    l2_norm: r.l2Norm,
    l2_norm_clipped: r.l2Clipped,
    num_examples: numExamples,
    to: 'coordinator',
  });
  deps.log.info({ ...round.log, bytes: r.maskedBytes, survivors: r.survivors.length }, 'masked update sent (secure aggregation)');
}

export async function reportRoundTraining(deps: TaskDeps, round: TrainRound): Promise<StepResult> {
  await reportTraining(deps, { ...round.task, info: trainingInfo(round, 'report-training') });
}

/** The site's personalised adapter: training.personal_steps on the global version this round
 *  started from, evaluated beside it (kind personal, that version's round); it stays here. */
export async function personaliseGlobal(deps: TaskDeps, round: TrainRound): Promise<StepResult> {
  const v = round.task.globalAdapter.version;
  const lora = trainedLora(round);
  const personal = await personalise(deps, { ...round, lora, trainFile: need(round, 'trainFile', 'personalise') }, startOf(round, 'personalise'), v);
  if (personal) await evaluateAndReport(deps, round.task, 'personal', personal, lora, v);
}

/** The local-only baseline: the same training on this site's data alone, continued each round
 *  from its own previous adapter (the job's version-0 adapter at first), then evaluated. */
export async function trainLocalBaseline(deps: TaskDeps, round: TrainRound): Promise<StepResult> {
  if (!deps.config.training.local_baseline) return;
  const { task } = round;
  const lora = trainedLora(round);
  deps.status.state = 'training';
  const kept = deps.workspace.loadLocalBaseline(task.jobId);
  // a baseline kept at another rank (the site's policy.max_lora_rank changed) starts again
  const prev = kept && rankOfLayout(layoutOf(kept)) === lora.r ? kept : null;
  const local = await deps.trainer.train(trainRequest(deps, round, 'local', prev ?? deps.workspace.initialAdapter(lora)));
  assertFinite(local.adapter, 'local-only baseline');
  deps.workspace.saveLocalBaseline(task.jobId, local.adapter, lora, task.baseModel.id);
  await evaluateAndReport(deps, task, 'local', local.adapter, lora, task.round);
}
