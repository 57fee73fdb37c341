// The round state machine of every running job. `tick()` is idempotent: it looks at SQLite
// (the only source of truth) and moves each job one step at a time:
//
//   (no round | last published) --enough online sites--> open(round r, attempt 1)
//   open --all selected answered, or deadline, with >= min_sites accepted--> aggregating
//   open --deadline (or all answered) with < min_sites accepted--> failed
//   failed --attempt <= round_retries--> open(round r, attempt+1, fresh selection)
//   failed --retries exhausted--> job failed
//   aggregating --strategy + publish version r--> published --r == rounds--> job completed
//
// Restart: nothing lives only in memory. An open round keeps its selection, deadline and
// accepted updates; an aggregating round is redone from its accepted update files with the
// persisted seed, strategy state and aggregation start time, so the result is identical.
// Time and site selection are injected (tests drive `tick()` with a fake clock).
import { EventEmitter } from 'node:events';
import { createHash, randomUUID } from 'node:crypto';
import { readFileSync, rmSync } from 'node:fs';
import { fail } from '../../shared/errors.ts';
import { decodeSafetensorsF32 } from '../../shared/safetensors.ts';
import { flatten } from '../../shared/tensors.ts';
import { TASK_DONE_PHASE, type Task, type MetricsReport } from '../../shared/proto.ts';
import type { CoordinatorStore, JobRow, RoundRow, TaskRow } from '../store/store.ts';
import { parseJobSpec, type JobSpec } from '../jobs/spec.ts';
import { checkJobId } from '../jobs/job-id.ts';
import { jobLayout, extract, merge, type JobLayout } from '../publish/layout.ts';
import { initialAdapterFlat } from '../publish/init-adapter.ts';
import { adapterFiles, publishVersion, writeVersion, type Signer } from '../publish/publisher.ts';
import { roundNoiseKey } from '../privacy/noise-key.ts';
import { failpoint } from '../../shared/failpoints.ts';
import { loadUpdateFile } from './validate-update.ts';
import { strategyFor as defaultStrategyFor, encodeState, decodeState } from './strategy-seam.ts';
import type { Strategy, UpdateRef } from '../strategies/types.ts';
import { createPrivacyLedger } from '../privacy/ledger.ts';
import { appendNow } from '../store/audit.ts';
import { SecAggRounds } from '../secagg/rounds.ts';
import { insertSideTasks, isOpen, setSideTaskStatus, sideTask } from '../store/side-tasks.ts';

export type SelectFn = (candidates: string[], n: number, seed: number) => string[];

export interface EngineOptions {
  store: CoordinatorStore;
  dataDir: string;
  signer: Signer;
  now?: () => number;
  heartbeatTimeoutMs?: number;
  select?: SelectFn;
  strategyFor?: (spec: JobSpec) => Promise<Strategy>;
  /** The coordinator's DP noise key (privacy/noise-key.ts): DP noise derived from it and the
   *  round, so an aggregation redone after a crash publishes the same adapter. Absent = fresh
   *  randomness per aggregation. */
  noiseKey?: Buffer;
}

/** Deterministic selection: a seeded Fisher-Yates shuffle of the sorted candidates. */
export const seededSelect: SelectFn = (candidates, n, seed) => {
  const a = [...candidates].sort();
  let s = seed >>> 0 || 1;
  const rnd = () => ((s = (Math.imul(s ^ (s >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0) / 4294967296);
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rnd() * (i + 1));
    [a[i], a[j]] = [a[j], a[i]];
  }
  return a.slice(0, n).sort();
};

function roundSeed(spec: JobSpec, jobId: string, round: number, attempt: number): number {
  return createHash('sha256').update(`${spec.selection_seed}:${jobId}:${round}:${attempt}`).digest().readUInt32LE(0);
}

export class RoundEngine extends EventEmitter {
  readonly store: CoordinatorStore;
  readonly dataDir: string;
  private readonly signer: Signer;
  readonly now: () => number;
  readonly heartbeatTimeoutMs: number;
  private readonly select: SelectFn;
  private readonly strategyFor: (spec: JobSpec) => Promise<Strategy>;
  private readonly noiseKey: Buffer | undefined;
  private readonly specs = new Map<string, { spec: JobSpec; layout: JobLayout }>();
  private ticking: Promise<void> | null = null;
  private again = false;
  private timer: NodeJS.Timeout | null = null;
  /** Rounds of privacy.secure_aggregation jobs collect masked inputs over the SecAgg RPC instead of updates. */
  readonly secagg: SecAggRounds;

  constructor(o: EngineOptions) {
    super();
    this.store = o.store;
    this.dataDir = o.dataDir;
    this.signer = o.signer;
    this.now = o.now ?? Date.now;
    this.heartbeatTimeoutMs = o.heartbeatTimeoutMs ?? 60_000;
    this.select = o.select ?? seededSelect;
    this.strategyFor = o.strategyFor ?? defaultStrategyFor;
    this.noiseKey = o.noiseKey;
    this.secagg = new SecAggRounds(this, (spec) => this.strategyFor(spec));
  }

  /** Tick every `intervalMs` (deadlines, sites coming online). */
  start(intervalMs = 1000): void {
    if (this.timer) return;
    this.timer = setInterval(() => void this.tick().catch((e) => this.emit('error', e)), intervalMs);
    this.timer.unref();
  }
  async stop(): Promise<void> {
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.ticking?.catch(() => undefined);
    this.secagg.close();
  }

  jobInfo(jobId: string): { spec: JobSpec; layout: JobLayout } {
    let c = this.specs.get(jobId);
    if (!c) {
      const row = this.store.job(jobId);
      if (!row) throw fail('FEDLORA_ERR_NOT_FOUND', `job ${jobId} does not exist`);
      const spec = parseJobSpec(JSON.parse(row.spec_json), `job ${jobId}`);
      c = { spec, layout: jobLayout(spec) };
      this.specs.set(jobId, c);
    }
    return c;
  }

  /** Register a job and publish its version 0 (A from init_seed, B = 0). `actor` goes in the audit log. */
  async submitJob(spec: JobSpec, jobId = `job-${randomUUID().slice(0, 8)}`, actor = 'admin'): Promise<string> {
    checkJobId(jobId, 'submitJob'); // it names folders (manifests/<job>/)
    const layout = jobLayout(spec); // refuses a bad base model config before anything is stored
    await this.strategyFor(spec); // refuses an unknown strategy at submission
    const now = this.now();
    this.store.tx(() => {
      if (this.store.job(jobId)) throw fail('FEDLORA_ERR_JOB_STATE', `job ${jobId} already exists`);
      const specJson = JSON.stringify(spec);
      this.store.insertJob({ id: jobId, name: spec.name, specJson, now });
      this.store.audit.append(actor, 'job_submitted', jobId, { name: spec.name, spec_sha256: createHash('sha256').update(specJson).digest('hex'), rounds: spec.rounds, aggregation: spec.aggregation.name, dp: !!spec.privacy.dp, secure_aggregation: spec.privacy.secure_aggregation }, new Date(now));
    });
    const v0 = publishVersion(this.store, this.dataDir, this.signer, {
      jobId, spec, version: 0, round: 0, flat: initialAdapterFlat(layout.model, spec, layout.full), layout: layout.full,
      contributingSites: 0, numExamples: 0, createdMs: now,
    });
    appendNow(this.store.db, 'coordinator', 'publish', `${jobId}/v0`, { job: jobId, version: 0, round: 0, sha256: v0.sha256, size: v0.size, manifest_sha256: v0.manifest_sha256 }, new Date(now));
    this.emit('job', jobId);
    void this.tick().catch((e) => this.emit('error', e));
    return jobId;
  }

  cancelJob(jobId: string, actor = 'admin'): void {
    const j = this.store.job(jobId);
    if (!j) throw fail('FEDLORA_ERR_NOT_FOUND', `job ${jobId} does not exist`);
    if (j.status !== 'running') throw fail('FEDLORA_ERR_JOB_STATE', `job ${jobId} is ${j.status}`);
    this.store.tx(() => {
      this.store.setJobStatus(jobId, 'cancelled', this.now());
      this.store.audit.append(actor, 'job_cancelled', jobId, { version: j.current_version }, new Date(this.now()));
    });
    this.emit('job', jobId);
  }

  /** Advance every running job as far as it goes now. Serialised: concurrent calls coalesce. */
  tick(): Promise<void> {
    if (this.ticking) {
      this.again = true;
      return this.ticking;
    }
    this.ticking = (async () => {
      // Yield first: if the body finished synchronously, `finally` would clear `ticking`
      // before the assignment below and a stale resolved promise would stick forever.
      await null;
      try {
        do {
          this.again = false;
          for (const job of this.store.jobs('running')) await this.advance(job);
        } while (this.again);
      } finally {
        this.ticking = null;
      }
    })();
    return this.ticking;
  }

  /** A job leaves 'running' (completed / failed): the row and its audit entry together, and for
   *  a completed job the final EVALUATE side tasks (so no crash can lose them). */
  private endJob(jobId: string, status: 'completed' | 'failed', error: string | null = null): void {
    const now = this.now();
    this.store.tx(() => {
      this.store.setJobStatus(jobId, status, now, error);
      this.store.audit.append('coordinator', `job_${status}`, jobId, { version: this.store.job(jobId)?.current_version ?? null, error }, new Date(now));
      if (status === 'completed') insertSideTasks(this.store.db, this.finalEvaluateTasks(jobId), now);
    });
  }

  /** Every site that took part evaluates the final version on its held-out data (the last
   *  round's TRAIN tasks evaluated only the versions before it): one EVALUATE side task per site,
   *  built from the site's last round task. */
  private finalEvaluateTasks(jobId: string): { siteId: string; task: Task }[] {
    const last = this.store.adapterVersions(jobId).at(-1);
    if (!last || last.version === 0) return [];
    const lastTaskBySite = new Map<string, TaskRow>();
    for (const r of this.store.rounds(jobId)) for (const t of this.store.roundTasks(jobId, r.round, r.attempt)) lastTaskBySite.set(t.site_id, t);
    return [...lastTaskBySite].map(([siteId, t]) => ({
      siteId,
      task: {
        ...this.taskMessage(t), taskId: `eval-${jobId}-v${last.version}-${siteId}`, kind: 'TASK_KIND_EVALUATE' as const, round: last.version,
        globalAdapter: { jobId, version: last.version, sha256: last.sha256, sizeBytes: last.size, manifestSha256: last.manifest_sha256 },
      },
    }));
  }

  private async advance(job: JobRow): Promise<void> {
    // Loop: one job may take several steps in one tick (e.g. aggregate then open the next round).
    for (let step = 0; step < 8; step++) {
      const j = this.store.job(job.id)!;
      if (j.status !== 'running') return;
      const { spec } = this.jobInfo(job.id);
      const cur = this.store.currentRound(job.id);
      let moved = false;
      try {
        if (!cur || cur.state === 'published') {
          const next = cur ? cur.round + 1 : 1;
          if (next > spec.rounds) {
            this.endJob(job.id, 'completed');
            this.emit('job', job.id);
            return;
          }
          if (spec.privacy.dp && createPrivacyLedger(spec.privacy.dp).wouldExceedBudget(next)) {
            // The budget is spent: stop with what is published (not a failure of the job).
            const e = createPrivacyLedger(spec.privacy.dp).epsilonAfter(next).epsilon;
            this.endJob(job.id, 'completed', `FEDLORA_ERR_PRIVACY_BUDGET: round ${next} would raise epsilon to ${e.toFixed(4)} > budget ${spec.privacy.dp.epsilon_budget}; stopped after round ${next - 1}`);
            this.emit('job', job.id);
            return;
          }
          moved = this.openRound(j, spec, next, 1, await this.strategyFor(spec));
        } else if (cur.state === 'failed') {
          if (cur.attempt <= spec.round_retries) moved = this.openRound(j, spec, cur.round, cur.attempt + 1, await this.strategyFor(spec));
          else {
            this.endJob(job.id, 'failed', `round ${cur.round} failed ${cur.attempt} times: ${cur.error ?? ''}`);
            this.emit('job', job.id);
            return;
          }
        } else if (cur.state === 'open') moved = spec.privacy.secure_aggregation ? await this.secagg.check(cur) : this.checkCollection(spec, cur);
        else if (cur.state === 'aggregating') {
          await this.aggregate(j, spec, cur);
          moved = true;
        }
      } catch (e) {
        // An aggregation/publication error fails the job (with the error) rather than looping.
        this.endJob(job.id, 'failed', (e as Error).message);
        this.emit('job', job.id);
        this.emit('error', e);
        return;
      }
      if (!moved) return;
    }
  }

  private openRound(job: JobRow, spec: JobSpec, round: number, attempt: number, strategy: Strategy): boolean {
    const now = this.now();
    const online = this.store.onlineSites(now - this.heartbeatTimeoutMs);
    if (online.length < spec.min_sites) return false; // wait for sites
    const seed = roundSeed(spec, job.id, round, attempt);
    const selected = this.select(online, Math.min(spec.max_sites, online.length), seed);
    const prevState = decodeState(this.store.lastPublishedRound(job.id)?.strategy_state ?? null);
    const taskConfig = {
      payload_kind: spec.privacy.secure_aggregation ? 'masked' : strategy.payloadKind,
      strategy_config: strategy.configureRound(round, prevState),
    };
    this.store.tx(() => {
      this.store.insertRound({
        job_id: job.id, round, attempt, state: 'open', base_version: job.current_version, selected_json: JSON.stringify(selected),
        seed, deadline_ms: now + spec.round_deadline_s * 1000, started_ms: now, task_config: JSON.stringify(taskConfig),
      });
      for (const s of selected) {
        const taskId = `${job.id}.r${round}.a${attempt}.${s}`;
        this.store.insertTask({ task_id: taskId, job_id: job.id, round, attempt, site_id: s, kind: 'TASK_KIND_TRAIN', status: 'pending', created_ms: now });
        this.store.audit.append('coordinator', 'task', taskId, { job: job.id, round, attempt, site: s, kind: 'TASK_KIND_TRAIN', base_version: job.current_version, deadline: new Date(now + spec.round_deadline_s * 1000).toISOString() }, new Date(now));
      }
    });
    this.emit('tasks', selected);
    this.emit('round', job.id, round);
    return true;
  }

  private checkCollection(spec: JobSpec, r: RoundRow): boolean {
    const now = this.now();
    const tasks = this.store.roundTasks(r.job_id, r.round, r.attempt);
    const accepted = this.store.roundUpdates(r.job_id, r.round, r.attempt, 'accepted');
    const allAnswered = tasks.every((t) => t.status === 'declined' || t.status === 'submitted' || t.status === 'cancelled');
    const late = now >= r.deadline_ms;
    if (!allAnswered && !late) return false;
    const enough = accepted.length >= spec.min_sites;
    // Uploads still arriving when the round leaves 'open' can never count (aggregation reads
    // only 'accepted' rows): discard them with their partial bytes, so no 'receiving' row or
    // .part file outlives its round; a site resuming one is told FEDLORA_ERR_ROUND_CLOSED.
    const unfinished = this.store.roundUpdates(r.job_id, r.round, r.attempt, 'receiving');
    this.store.tx(() => {
      for (const u of unfinished) {
        this.store.setUpdateStatus(u.update_id, 'discarded', 'round closed before the upload finished');
        this.store.audit.append(u.site_id, 'update_rejected', u.update_id, { code: 'FEDLORA_ERR_ROUND_CLOSED', reason: 'round closed before the upload finished', job: r.job_id, round: r.round, attempt: r.attempt, received_bytes: u.received_bytes, size: u.size }, new Date(now));
      }
      for (const t of tasks) if (t.status === 'pending' || t.status === 'delivered') this.store.setTaskStatus(t.task_id, 'cancelled');
      if (enough) this.store.setRoundState(r.job_id, r.round, r.attempt, 'aggregating', { now });
      else {
        const why = `${late ? 'deadline passed' : 'all selected sites answered'} with ${accepted.length} accepted update(s), min_sites is ${spec.min_sites}`;
        this.store.setRoundState(r.job_id, r.round, r.attempt, 'failed', { now, error: why });
        const discarded: string[] = [];
        for (const u of this.store.roundUpdates(r.job_id, r.round, r.attempt)) {
          if (u.status !== 'rejected' && u.status !== 'discarded') {
            this.store.setUpdateStatus(u.update_id, 'discarded', 'round attempt failed');
            discarded.push(u.update_id);
          }
        }
        this.store.audit.append('coordinator', 'round_failed', `${r.job_id}/r${r.round}a${r.attempt}`, { job: r.job_id, round: r.round, attempt: r.attempt, reason: why, discarded_updates: discarded }, new Date(now));
      }
    });
    // After the commit: a crash before this leaves only a stray .part of a discarded row.
    for (const u of unfinished) if (u.path.endsWith('.part')) rmSync(u.path, { force: true });
    const cancelled = tasks.filter((t) => t.status === 'pending' || t.status === 'delivered').map((t) => t.site_id);
    if (cancelled.length) this.emit('cancel', cancelled.map((s) => ({ siteId: s, taskId: tasks.find((t) => t.site_id === s)!.task_id })));
    this.emit('round', r.job_id, r.round);
    return true;
  }

  /** Load a published version as a flat vector in the job's full layout. */
  loadVersion(jobId: string, version: number): Float32Array {
    const row = this.store.adapterVersion(jobId, version);
    if (!row) throw fail('FEDLORA_ERR_NOT_FOUND', `job ${jobId} has no adapter version ${version}`);
    const { tensors } = decodeSafetensorsF32(readFileSync(adapterFiles(row).model), adapterFiles(row).model);
    return flatten(tensors, this.jobInfo(jobId).layout.full);
  }

  private async aggregate(job: JobRow, spec: JobSpec, r: RoundRow): Promise<void> {
    const { layout } = this.jobInfo(job.id);
    const accepted = this.store.roundUpdates(r.job_id, r.round, r.attempt, 'accepted'); // sorted by site id
    const baseFull = this.loadVersion(job.id, r.base_version);
    const prev = this.store.lastPublishedRound(job.id);
    const strategy = await this.strategyFor(spec);
    const refs: UpdateRef[] = accepted.map((u) => ({
      siteId: u.site_id,
      numExamples: u.examples,
      load: async () => loadUpdateFile(u.path, layout.update),
      ...(u.clipped === null ? {} : { unclippedBit: u.clipped ? 0 : 1 }),
    }));
    let res;
    let contributing = accepted.length, examples = accepted.reduce((a, u) => a + u.examples, 0);
    try {
      const ctx = {
        round: r.round, layout: layout.update, global: extract(baseFull, layout.full, layout.update),
        selected: (JSON.parse(r.selected_json) as string[]).length, state: decodeState(prev?.strategy_state ?? null), seed: r.seed,
        ...(this.noiseKey ? { noiseKey: roundNoiseKey(this.noiseKey, r.job_id, r.round, r.attempt, r.seed) } : {}),
      };
      if (spec.privacy.secure_aggregation) {
        // Only the survivors' sum is ever unmasked (coordinator/secagg); uniform weights.
        const s = await this.secagg.aggregate(r, strategy, ctx);
        [res, contributing, examples] = [s.result, s.count, s.numExamples];
      } else res = await strategy.aggregate(refs, ctx);
    } catch (e) {
      throw e instanceof Error && 'code' in e ? e : fail('FEDLORA_ERR_AGGREGATION', `job ${job.id} round ${r.round}: ${(e as Error).message}`);
    }
    await failpoint('coordinator.aggregate.computed'); // crash tests: computed, nothing written
    const version = r.base_version + 1;
    const createdMs = r.aggregating_ms ?? this.now();
    // Files first (content-addressed; an orphan after a crash is harmless), then ONE transaction
    // commits the version row, the round's publication, the job's version and the audit entries:
    // killed anywhere before it, the coordinator redoes this round from the same accepted
    // updates, seed, strategy state, start time and noise key, and commits the same bytes once.
    const { row: pub, stored } = writeVersion(this.store, this.dataDir, this.signer, {
      jobId: job.id, spec, version, round: r.round, flat: merge(baseFull, layout.full, layout.update, res.global), layout: layout.full,
      contributingSites: contributing, numExamples: examples, createdMs,
    });
    await failpoint('coordinator.publish.written'); // crash tests: files on disk, nothing committed
    const now = this.now();
    this.store.tx(() => {
      if (!stored) this.store.insertAdapterVersion(pub);
      this.store.setRoundState(r.job_id, r.round, r.attempt, 'published', { now, strategyState: encodeState(res.state), metricsJson: JSON.stringify(res.metrics) });
      this.store.setJobVersion(job.id, version, now);
      const at = new Date(now);
      const subject = `${job.id}/r${r.round}a${r.attempt}`;
      this.store.audit.append('coordinator', 'aggregate', subject, {
        job: job.id, round: r.round, attempt: r.attempt, strategy: strategy.name, secure_aggregation: spec.privacy.secure_aggregation, contributing_sites: contributing, num_examples: examples,
        updates: accepted.map((u) => ({ update_id: u.update_id, site: u.site_id, sha256: u.sha256, examples: u.examples })), // empty under secure aggregation (only the sum is seen)
        metrics: res.metrics, // the strategy's report: for DP dp_clip_norm, dp_clipped (sites clipped), dp_noise_std, dp_unclipped_fraction
      }, at);
      this.store.audit.append('coordinator', 'publish', `${job.id}/v${version}`, { job: job.id, version, round: r.round, sha256: pub.sha256, size: pub.size, manifest_sha256: pub.manifest_sha256 }, at);
      const dp = spec.privacy.dp;
      if (dp) {
        // C2's RDP accountant: epsilon spent once this round is aggregated.
        const eps = createPrivacyLedger(dp).epsilonAfter(r.round).epsilon;
        this.store.recordPrivacy({ job_id: job.id, round: r.round, epsilon: eps, delta: dp.delta, noise_multiplier: dp.noise_multiplier, sample_rate: dp.sample_rate, created_ms: now });
        this.store.audit.append('coordinator', 'privacy_spend', job.id, { round: r.round, epsilon: eps, delta: dp.delta, budget_epsilon: dp.epsilon_budget, noise_multiplier: dp.noise_multiplier, sample_rate: dp.sample_rate }, at);
      }
    });
    if (spec.privacy.secure_aggregation) this.secagg.purge(r);
    this.emit('published', job.id, version);
    this.emit('round', job.id, r.round);
  }

  // ---- what the wire (or a test) calls ---------------------------------------------------

  /** The Task message for a task row (TRAIN for the round's base version). */
  taskMessage(t: TaskRow): Task {
    const { spec } = this.jobInfo(t.job_id);
    const r = this.store.rounds(t.job_id).find((x) => x.round === t.round && x.attempt === t.attempt)!;
    const g = this.store.adapterVersion(t.job_id, r.base_version)!;
    const tc = (r.task_config ? JSON.parse(r.task_config) : {}) as { payload_kind?: string; strategy_config?: Record<string, string> };
    const strategyCfg: Record<string, string> = tc.strategy_config ?? {};
    const dp = spec.privacy.dp;
    const spent = dp ? createPrivacyLedger(dp).epsilonAfter(t.round).epsilon : 0;
    return {
      taskId: t.task_id, jobId: t.job_id, round: t.round, kind: t.kind as Task['kind'],
      baseModel: { id: spec.base_model.id, manifestSha256: spec.base_model.manifest_sha256 },
      lora: { r: spec.lora.r, alpha: spec.lora.alpha, targetModules: spec.lora.target_modules, dropout: spec.lora.dropout, useRslora: spec.lora.use_rslora, freezeA: spec.lora.freeze_a, initSeed: spec.lora.init_seed },
      train: {
        localSteps: spec.train.local_steps, localEpochs: spec.train.local_epochs, learningRate: spec.train.learning_rate, optimizer: spec.train.optimizer,
        batchTokens: spec.train.batch_tokens, seed: (spec.train.seed + t.round) % Number.MAX_SAFE_INTEGER, proxMu: Number(strategyCfg.mu ?? strategyCfg.prox_mu ?? spec.aggregation.mu ?? 0) || 0,
        weightDecay: spec.train.weight_decay, warmupSteps: spec.train.warmup_steps, maxGradNorm: spec.train.max_grad_norm,
      },
      globalAdapter: { jobId: t.job_id, version: g.version, sha256: g.sha256, sizeBytes: g.size, manifestSha256: g.manifest_sha256 },
      privacy: {
        dpEnabled: !!dp, clipNorm: dp?.clip_norm ?? 0, noiseMultiplier: dp?.noise_multiplier ?? 0, epsilonAfterRound: spent, delta: dp?.delta ?? 0,
        secureAggregation: spec.privacy.secure_aggregation, minSites: spec.min_sites, adaptiveClipping: dp?.adaptive_clipping ?? false, clippedBitNoise: 0,
      },
      deadlineUnixMs: r.deadline_ms, selectedSites: (JSON.parse(r.selected_json) as string[]).length, aggregation: spec.aggregation.name,
      payloadKind: tc.payload_kind ?? 'delta', strategyConfig: strategyCfg, peerAdapters: [], peerSites: [],
      evaluateBase: spec.evaluation.evaluate_base && t.round === 1,
    };
  }

  declineTask(siteId: string, taskId: string, reason: string, code: string): void {
    const side = sideTask(this.store.db, taskId);
    if (side && side.site_id === siteId) {
      if (!isOpen(side)) throw fail('FEDLORA_ERR_ROUND_CLOSED', `task ${taskId} is already ${side.status}`);
      this.store.tx(() => {
        setSideTaskStatus(this.store.db, taskId, 'declined', this.now(), { reason: reason.slice(0, 1000), code: code.slice(0, 100) });
        this.store.audit.append(siteId, 'task_declined', taskId, { code: code.slice(0, 100), reason: reason.slice(0, 1000), kind: side.kind }, new Date(this.now()));
      });
      return;
    }
    const t = this.store.task(taskId);
    if (!t || t.site_id !== siteId) throw fail('FEDLORA_ERR_NOT_FOUND', `DeclineRequest.task_id: no task ${taskId} for site ${siteId}`);
    if (t.status !== 'pending' && t.status !== 'delivered') throw fail('FEDLORA_ERR_ROUND_CLOSED', `task ${taskId} is already ${t.status}`);
    this.store.tx(() => {
      this.store.setTaskStatus(taskId, 'declined', { reason: reason.slice(0, 1000), code: code.slice(0, 100) });
      this.store.audit.append(siteId, 'task_declined', taskId, { code: code.slice(0, 100), reason: reason.slice(0, 1000) }, new Date(this.now()));
    });
    void this.tick().catch((e) => this.emit('error', e));
  }

  /** Store a site's metrics; returns how many rows were stored. For a side task of this site
   *  (EVALUATE / CROSS_EVAL), a metric already stored for the task (same kind, name, owner and
   *  version: the task was done again after the site restarted) is acknowledged, not stored
   *  twice, and the empty TASK_DONE_PHASE report marks the task done. */
  reportMetrics(siteId: string, m: MetricsReport): number {
    if (!this.store.job(m.jobId)) throw fail('FEDLORA_ERR_NOT_FOUND', `MetricsReport.job_id: job ${m.jobId} does not exist`);
    const now = this.now();
    const side = m.taskId ? sideTask(this.store.db, m.taskId) : undefined;
    const mine = side && side.site_id === siteId && side.job_id === m.jobId ? side : undefined;
    const stored = mine ? this.store.db.prepare('SELECT 1 FROM metrics WHERE task_id = ? AND site_id = ? AND kind = ? AND metric = ? AND model_owner = ? AND adapter_version IS ? LIMIT 1') : null;
    let n = 0;
    this.store.tx(() => {
      for (const x of m.metrics) {
        if (!['global', 'local', 'base', 'cross'].includes(x.kind)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `MetricsReport.metrics.kind: "${x.kind}" is not global|local|base|cross`);
        if (!Number.isFinite(x.value)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `MetricsReport.metrics: ${x.name} = ${x.value} is not finite`);
        if (stored?.get(m.taskId, siteId, x.kind, x.name, x.modelOwner, x.adapterVersion)) continue;
        this.store.insertMetric({
          job_id: m.jobId, round: m.round, site_id: siteId, kind: x.kind, metric: x.name, value: x.value, count: x.count, model_owner: x.modelOwner,
          adapter_version: x.adapterVersion, phase: m.phase || null, task_id: m.taskId || null, created_ms: now,
        });
        n++;
      }
      if (mine && m.phase === TASK_DONE_PHASE) setSideTaskStatus(this.store.db, mine.task_id, 'done', now);
    });
    return n;
  }

  /** Resolve when the job leaves 'running' (or reject after timeoutMs). */
  waitForJob(jobId: string, timeoutMs = 600_000): Promise<JobRow> {
    return new Promise((resolve, reject) => {
      const check = (id?: string) => {
        if (id !== undefined && id !== jobId) return;
        const j = this.store.job(jobId);
        if (j && j.status !== 'running') {
          cleanup();
          resolve(j);
        }
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(fail('FEDLORA_ERR_UNAVAILABLE', `job ${jobId} still running after ${timeoutMs} ms`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        this.off('job', check);
      };
      this.on('job', check);
      check();
    });
  }
}
