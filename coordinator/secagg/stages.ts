// The coordinator's secure-aggregation state machine, one per (job, round, attempt) (see
// README.md in this folder for the stage flow): stages close when every expected site answered
// or at their deadlines; all transitions are synchronous SQLite transactions, so a stage message
// is committed before it is acknowledged and the round state machine never sees a half step.
// The coordinator never holds one site's update: it sums masked vectors, reconstructs the masks
// from t shares and obtains only the survivors' sum (shared/secagg/protocol.ts).
import type { EventEmitter } from 'node:events';
import { fail, isFedloraError } from '../../shared/errors.ts';
import { collectAdvertise, routeShares, unmask, type MaskedAggregate, type Roster } from '../../shared/secagg/protocol.ts';
import {
  DEFAULT_CLIP_RANGE, EXTRA_SLOTS, MASK_CHUNK_ELEMS,
  type AdvertisePayload, type SecAggRoundConfig, type SharePayload, type UnmaskPayload,
} from '../../shared/secagg/messages.ts';
import type { CoordinatorStore, RoundRow } from '../store/store.ts';
import type { JobInfo } from '../jobs/job-service.ts';
import { roundPlanOf } from '../rounds/round-plan.ts';
import { SecAggStore, type SecAggRoundRow } from './store.ts';

export interface SecAggDeps {
  store: CoordinatorStore;
  now: () => number;
  events: EventEmitter;
  jobInfo(jobId: string): JobInfo;
  /** Advance the rounds (a round left 'open'). */
  kick(): void;
}

export interface SecAggOptions {
  /** Elements per masked chunk (tests use small values to exercise chunking). */
  chunkElems: number;
  /** Fraction of the round deadline reserved for the key/mask/unmask stages after training. */
  reserveFraction: number;
  /** Lower bound of one stage's timeout. */
  minStageTimeoutMs: number;
}

export type Key = { job_id: string; round: number; attempt: number };
export const keyOf = (r: Key): Key => ({ job_id: r.job_id, round: r.round, attempt: r.attempt });
export const parse = <T>(s: string | null, d: T): T => (s ? (JSON.parse(s) as T) : d);
export const ids = (j: string | null) => parse<string[]>(j, []);

/** Threshold t: a majority of the selected sites (and at least min_sites, at least 2). */
function secAggThreshold(selected: number, minSites: number): number {
  return Math.min(selected, Math.max(2, minSites, Math.floor(selected / 2) + 1));
}

export class SecAggStages {
  readonly store: SecAggStore;
  readonly options: SecAggOptions = { chunkElems: MASK_CHUNK_ELEMS, reserveFraction: 0.25, minStageTimeoutMs: 500 };
  /** Unmasked sums computed when the unmask stage closed, reused by the aggregation (not persisted). */
  private readonly sums = new Map<string, { sum: Float32Array; count: number }>();

  constructor(private readonly d: SecAggDeps) {
    this.store = new SecAggStore(d.store.db);
  }

  /** The survivors' sum of a round whose stages are done: computed when the unmask stage closed,
   *  or recomputed from SQLite after a restart. */
  plainSum(sa: SecAggRoundRow): { sum: Float32Array; count: number } {
    return this.sums.get(JSON.stringify(keyOf(sa))) ?? this.computeSum(sa);
  }

  /** Drop the stage data of a published or failed round. */
  purge(r: Key): void {
    this.sums.delete(JSON.stringify(keyOf(r)));
    this.store.purge(keyOf(r));
  }

  /** Purge every round that is no longer open/aggregating (e.g. a crash between publish and purge). */
  sweep(): void {
    for (const sa of this.store.unpurged()) {
      const r = this.d.store.rounds(sa.job_id).find((x) => x.round === sa.round && x.attempt === sa.attempt);
      if (!r || r.state === 'published' || r.state === 'failed') this.purge(sa);
    }
  }

  /** Create the round's secagg row (config fixed from the round row, the job and the strategy). */
  ensure(r: RoundRow): SecAggRoundRow {
    const existing = this.store.round(keyOf(r));
    if (existing) return existing;
    const { spec, layout, strategy } = this.d.jobInfo(r.job_id);
    if (!strategy.meanBased || strategy.payloadKind !== 'delta') {
      throw fail('FEDLORA_ERR_CONFIG', `job ${r.job_id}: privacy.secure_aggregation needs a mean-based strategy on deltas (fedavg, fedprox, fedadam, fedyogi, fedadagrad, ffa); ${strategy.name} is not`);
    }
    const ranges = strategy.trainable?.(layout.update) ?? [[0, layout.update.total]];
    const packed = ranges.reduce((a, [s, e]) => a + (e - s), 0);
    const l2Clip = spec.privacy.dp ? roundPlanOf(r).config.dpClipNorm ?? spec.privacy.dp.clip_norm : null;
    const selected = (JSON.parse(r.selected_json) as string[]).length;
    const dim = packed + EXTRA_SLOTS.length;
    const chunkElems = this.options.chunkElems;
    const cfg: SecAggRoundConfig = {
      jobId: r.job_id, round: r.round, attempt: r.attempt, threshold: secAggThreshold(selected, spec.min_sites),
      clipRange: l2Clip ?? DEFAULT_CLIP_RANGE, l2Clip, dim, layoutTotal: layout.update.total, ranges, extraSlots: [...EXTRA_SLOTS],
      chunkElems, chunks: Math.ceil(dim / chunkElems), selected, deadlineMs: r.deadline_ms,
    };
    const reserve = Math.max(4 * this.options.minStageTimeoutMs, this.options.reserveFraction * (r.deadline_ms - r.started_ms));
    this.store.insertRound(keyOf(r), cfg, r.deadline_ms - reserve, Math.max(this.options.minStageTimeoutMs, reserve / 4), this.d.now());
    return this.store.round(keyOf(r))!;
  }

  /** Close every stage that can close now (all expected sites answered, or its deadline). Sync. */
  progress(r: RoundRow): void {
    for (let i = 0; i < 6; i++) {
      const sa = this.store.round(keyOf(r));
      const round = this.d.store.rounds(r.job_id).find((x) => x.round === r.round && x.attempt === r.attempt);
      if (!sa || !round || round.state !== 'open' || sa.stage === 'done' || sa.stage === 'failed') return;
      const now = this.d.now();
      let moved: boolean;
      try {
        moved = this.step(round, sa, now);
      } catch (e) {
        this.failRound(round, isFedloraError(e) ? e.message : String((e as Error)?.message ?? e));
        return;
      }
      if (!moved) {
        if (now >= round.deadline_ms) this.failRound(round, `round deadline passed during the ${sa.stage} stage`);
        return;
      }
    }
  }

  private step(r: RoundRow, sa: SecAggRoundRow, now: number): boolean {
    const k = keyOf(r);
    const cfg = parse<SecAggRoundConfig>(sa.config_json, null as never);
    const next = now + sa.stage_timeout_ms;
    if (sa.stage === 'advertise') {
      const expected = this.d.store.roundTasks(r.job_id, r.round, r.attempt).filter((t) => t.status !== 'declined' && t.status !== 'cancelled').map((t) => t.site_id);
      const msgs = this.store.messages(k, 'advertise').map((m) => (JSON.parse(m.payload) as AdvertisePayload).msg);
      const have = new Set(msgs.map((m) => m.siteId));
      if (!(expected.every((s) => have.has(s)) || now >= sa.advertise_deadline_ms)) return false;
      const roster = collectAdvertise({ round: r.round, threshold: cfg.threshold, clipRange: cfg.clipRange, dim: cfg.dim }, msgs);
      this.store.setStage(k, 'share', now, { deadline: next, roster });
      return true;
    }
    const roster = parse<Roster>(sa.roster_json, null as never);
    if (sa.stage === 'share') {
      const msgs = this.store.messages(k, 'share').map((m) => (JSON.parse(m.payload) as SharePayload).msg);
      if (!(msgs.length === roster.sites.length || now >= (sa.stage_deadline_ms ?? 0))) return false;
      const { u2 } = routeShares(roster, msgs);
      this.store.setStage(k, 'masked', now, { deadline: next, u2 });
      return true;
    }
    if (sa.stage === 'masked') {
      const u2 = ids(sa.u2_json);
      const counts = this.store.chunkCounts(k);
      const complete = u2.filter((s) => counts.get(s) === cfg.chunks);
      if (!(complete.length === u2.length || now >= (sa.stage_deadline_ms ?? 0))) return false;
      const dropped = u2.filter((s) => !complete.includes(s));
      if (complete.length < cfg.threshold) {
        throw fail('FEDLORA_ERR_SECAGG', `secagg: only ${complete.length} of ${u2.length} sites sent their masked input (${dropped.join(', ') || 'none'} dropped); threshold ${cfg.threshold}`);
      }
      this.store.tx(() => {
        this.store.deleteChunksOf(k, dropped); // partial inputs of dropped sites are never summed
        this.store.setStage(k, 'unmask', now, { deadline: next, survivors: complete, dropped });
      });
      return true;
    }
    if (sa.stage === 'unmask') {
      const survivors = ids(sa.survivors_json);
      const answered = new Set(this.store.messages(k, 'unmask').map((m) => m.site_id));
      if (!(survivors.every((s) => answered.has(s)) || now >= (sa.stage_deadline_ms ?? 0))) return false;
      // Unmask now (fails the round on bad or too few shares); the aggregation reuses the result.
      const plain = this.computeSum(sa); // throws (failing the round) before anything is committed
      this.sums.set(JSON.stringify(k), plain);
      this.store.tx(() => {
        this.store.setStage(k, 'done', now, {});
        const tasks = this.d.store.roundTasks(r.job_id, r.round, r.attempt);
        for (const t of tasks) if (t.status === 'pending' || t.status === 'delivered') this.d.store.setTaskStatus(t.task_id, 'cancelled');
        this.d.store.setRoundState(r.job_id, r.round, r.attempt, 'aggregating', { now });
      });
      this.emitCancelled(r, survivors);
      this.d.events.emit('round', r.job_id, r.round);
      this.d.kick();
      return true;
    }
    return false;
  }

  private emitCancelled(r: RoundRow, keep: string[]): void {
    const tasks = this.d.store.roundTasks(r.job_id, r.round, r.attempt).filter((t) => t.status === 'cancelled' && !keep.includes(t.site_id));
    if (tasks.length) this.d.events.emit('cancel', tasks.map((t) => ({ siteId: t.site_id, taskId: t.task_id })));
  }

  private failRound(r: RoundRow, why: string): void {
    const now = this.d.now();
    const tasks = this.d.store.roundTasks(r.job_id, r.round, r.attempt);
    this.store.tx(() => {
      this.store.setStage(keyOf(r), 'failed', now, { error: why });
      for (const t of tasks) if (t.status === 'pending' || t.status === 'delivered') this.d.store.setTaskStatus(t.task_id, 'cancelled');
      this.d.store.setRoundState(r.job_id, r.round, r.attempt, 'failed', { now, error: `FEDLORA_ERR_SECAGG: ${why}` });
    });
    this.purge(r);
    this.emitCancelled(r, []);
    this.d.events.emit('round', r.job_id, r.round);
    this.d.kick();
  }

  /** Sum the survivors' masked chunks (mod 2^32, streamed) and remove the masks. */
  private computeSum(sa: SecAggRoundRow): { sum: Float32Array; count: number } {
    const k = keyOf(sa);
    const cfg = parse<SecAggRoundConfig>(sa.config_json, null as never);
    const roster = parse<Roster>(sa.roster_json, null as never);
    const survivors = ids(sa.survivors_json);
    const dropped = ids(sa.dropped_json);
    const maskedSum = new Uint32Array(cfg.dim);
    for (const s of survivors) {
      let n = 0;
      for (const { idx, data } of this.store.chunks(k, s)) {
        const y = new Uint32Array(data.buffer.slice(data.byteOffset, data.byteOffset + data.length));
        const off = idx * cfg.chunkElems;
        for (let i = 0; i < y.length; i++) maskedSum[off + i] = (maskedSum[off + i] + y[i]) >>> 0;
        n++;
      }
      if (n !== cfg.chunks) throw fail('FEDLORA_ERR_SECAGG', `secagg: ${n} of ${cfg.chunks} masked chunks of survivor ${s} are stored (purged round?)`);
    }
    const agg: MaskedAggregate = { round: sa.round, survivors, dropped, maskedSum, request: { round: sa.round, survivors, dropped } };
    const answers = this.store.messages(k, 'unmask').map((m) => (JSON.parse(m.payload) as UnmaskPayload).msg!).filter((m) => survivors.includes(m.siteId));
    return unmask(roster, agg, answers);
  }
}
