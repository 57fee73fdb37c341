// The coordinator side of secure aggregation (see README.md in this folder for the stage flow):
// one state machine per (job, round, attempt), driven by the sites' SecAgg calls and by the
// round engine's tick (stage deadlines). All transitions are synchronous SQLite transactions,
// so a stage message is committed before it is acknowledged and the engine never sees a half
// step. The coordinator never holds one site's update: it sums masked vectors, reconstructs the
// masks from t shares and obtains only the survivors' sum (shared/secagg/protocol.ts).
import { createHash, createPublicKey } from 'node:crypto';
import { fail, isFedloraError } from '../../shared/errors.ts';
import {
  collectAdvertise, routeShares, unmask,
  type AdvertiseMsg, type MaskedAggregate, type Roster, type ShareKeysMsg, type UnmaskSharesMsg,
} from '../../shared/secagg/protocol.ts';
import type { RoundRow } from '../store/store.ts';
import type { RoundEngine } from '../rounds/engine.ts';
import type { JobSpec } from '../jobs/spec.ts';
import type { AggregateResult, RoundContext, Strategy } from '../strategies/types.ts';
import { aggregateSecureSum, unpackTrainable } from '../strategies/secure.ts';
import { registerSecAggHandler, type SecAggStageInput, type SecAggStageOutput } from '../grpc/secagg-seam.ts';
import { SecAggStore, type SecAggRoundRow } from './store.ts';
import {
  DEFAULT_CLIP_RANGE, EXAMPLES_CAP, EXTRA_SLOTS, MASK_CHUNK_ELEMS, SECAGG_STAGES,
  type AdvertisePayload, type MaskedChunkPayload, type SecAggRoundConfig, type SharePayload, type StatusReply, type UnmaskPayload,
} from './messages.ts';

export interface SecAggOptions {
  /** Elements per masked chunk (tests use small values to exercise chunking). */
  chunkElems: number;
  /** Fraction of the round deadline reserved for the key/mask/unmask stages after training. */
  reserveFraction: number;
  /** Lower bound of one stage's timeout. */
  minStageTimeoutMs: number;
}

export interface SecureRoundInput {
  /** The survivors' sum in the job's update layout (zeros outside the masked ranges). */
  sum: Float32Array;
  count: number;
  unclippedCount: number;
  numExamples: number;
}

type Key = { job_id: string; round: number; attempt: number };
const keyOf = (r: { job_id: string; round: number; attempt: number }): Key => ({ job_id: r.job_id, round: r.round, attempt: r.attempt });
const parse = <T>(s: string | null, d: T): T => (s ? (JSON.parse(s) as T) : d);
const isX25519PublicKey = (x: string): boolean => {
  try {
    createPublicKey({ key: { kty: 'OKP', crv: 'X25519', x }, format: 'jwk' });
    return x.length <= 64;
  } catch {
    return false;
  }
};
const ids = (j: string | null) => parse<string[]>(j, []);

/** Threshold t: a majority of the selected sites (and at least min_sites, at least 2). */
export function secAggThreshold(selected: number, minSites: number): number {
  return Math.min(selected, Math.max(2, minSites, Math.floor(selected / 2) + 1));
}

export class SecAggRounds {
  readonly store: SecAggStore;
  readonly options: SecAggOptions = { chunkElems: MASK_CHUNK_ELEMS, reserveFraction: 0.25, minStageTimeoutMs: 500 };
  private readonly unregister: () => void;
  /** Unmasked sums computed when the unmask stage closed, reused by aggregate() (not persisted). */
  private readonly sums = new Map<string, { sum: Float32Array; count: number }>();

  constructor(private readonly engine: RoundEngine, private readonly strategyFor: (spec: JobSpec) => Promise<Strategy>) {
    this.store = new SecAggStore(engine.store.db);
    this.unregister = registerSecAggHandler((m) => this.handle(m), (jobId) => !!engine.store.job(jobId));
  }
  close(): void {
    this.unregister();
  }

  // ---- engine side -----------------------------------------------------------------------

  /** For an open round of a secure-aggregation job: advance the stages (deadlines); true when
   *  the round left 'open' (aggregating or failed). */
  async check(r: RoundRow): Promise<boolean> {
    this.sweep();
    await this.ensure(r);
    this.progress(r);
    return this.engine.store.currentRound(r.job_id)?.state !== 'open';
  }

  /** Finish an aggregating round: unmask the survivors' sum and hand it to the strategy (DP
   *  noise, server optimiser) through aggregateSecureSum. */
  async aggregate(r: RoundRow, strategy: Strategy, ctx: RoundContext): Promise<{ result: AggregateResult; count: number; numExamples: number }> {
    const input = this.roundInput(r, strategy);
    const dp = !!this.engine.jobInfo(r.job_id).spec.privacy.dp;
    const result = await aggregateSecureSum(strategy, input.sum, input.count, ctx, dp ? input.unclippedCount : undefined);
    return { result: { ...result, metrics: { ...result.metrics, secagg_survivors: input.count } }, count: input.count, numExamples: input.numExamples };
  }

  /** The unmasked sum of a round whose stages are done (recomputed from SQLite after a restart). */
  roundInput(r: Key, strategy: Strategy): SecureRoundInput {
    const k = keyOf(r);
    const sa = this.store.round(k);
    if (!sa || sa.stage !== 'done') throw fail('FEDLORA_ERR_SECAGG', `job ${k.job_id} round ${k.round} attempt ${k.attempt}: secure aggregation is ${sa?.stage ?? 'not started'}, not done`);
    const { layout } = this.engine.jobInfo(k.job_id);
    const cfg = parse<SecAggRoundConfig>(sa.config_json, null as never);
    const plain = this.sums.get(JSON.stringify(k)) ?? this.computeSum(sa);
    const P = cfg.dim - EXTRA_SLOTS.length;
    return {
      sum: unpackTrainable(strategy, layout.update, plain.sum.subarray(0, P)),
      count: plain.count,
      unclippedCount: Math.min(plain.count, Math.max(0, Math.round(plain.sum[P] / cfg.clipRange))),
      numExamples: Math.max(0, Math.round((plain.sum[P + 1] / cfg.clipRange) * EXAMPLES_CAP)),
    };
  }

  /** Drop the stage data of a published or failed round. */
  purge(r: Key): void {
    this.sums.delete(JSON.stringify(keyOf(r)));
    this.store.purge(keyOf(r));
  }

  /** Purge every round that is no longer open/aggregating (e.g. a crash between publish and purge). */
  private sweep(): void {
    for (const sa of this.store.unpurged()) {
      const r = this.engine.store.rounds(sa.job_id).find((x) => x.round === sa.round && x.attempt === sa.attempt);
      if (!r || r.state === 'published' || r.state === 'failed') this.purge(sa);
    }
  }

  /** Create the round's secagg row (config fixed from the round row, the job and the strategy). */
  private async ensure(r: RoundRow): Promise<SecAggRoundRow> {
    const existing = this.store.round(keyOf(r));
    if (existing) return existing;
    const { spec, layout } = this.engine.jobInfo(r.job_id);
    const strategy = await this.strategyFor(spec);
    if (!strategy.meanBased || strategy.payloadKind !== 'delta') {
      throw fail('FEDLORA_ERR_CONFIG', `job ${r.job_id}: privacy.secure_aggregation needs a mean-based strategy on deltas (fedavg, fedprox, fedadam, fedyogi, fedadagrad, ffa); ${strategy.name} is not`);
    }
    const ranges = strategy.trainable?.(layout.update) ?? [[0, layout.update.total]];
    const packed = ranges.reduce((a, [s, e]) => a + (e - s), 0);
    const tc = parse<{ strategy_config?: Record<string, string> }>(r.task_config, {});
    const l2Clip = spec.privacy.dp ? Number(tc.strategy_config?.dp_clip_norm ?? spec.privacy.dp.clip_norm) : null;
    const selected = (JSON.parse(r.selected_json) as string[]).length;
    const dim = packed + EXTRA_SLOTS.length;
    const chunkElems = this.options.chunkElems;
    const cfg: SecAggRoundConfig = {
      jobId: r.job_id, round: r.round, attempt: r.attempt, threshold: secAggThreshold(selected, spec.min_sites),
      clipRange: l2Clip ?? DEFAULT_CLIP_RANGE, l2Clip, dim, layoutTotal: layout.update.total, ranges, extraSlots: [...EXTRA_SLOTS],
      chunkElems, chunks: Math.ceil(dim / chunkElems), selected, deadlineMs: r.deadline_ms,
    };
    const reserve = Math.max(4 * this.options.minStageTimeoutMs, this.options.reserveFraction * (r.deadline_ms - r.started_ms));
    this.store.insertRound(keyOf(r), cfg, r.deadline_ms - reserve, Math.max(this.options.minStageTimeoutMs, reserve / 4), this.engine.now());
    return this.store.round(keyOf(r))!;
  }

  // ---- the state machine -----------------------------------------------------------------

  /** Close every stage that can close now (all expected sites answered, or its deadline). Sync. */
  private progress(r: RoundRow): void {
    for (let i = 0; i < 6; i++) {
      const sa = this.store.round(keyOf(r));
      const round = this.engine.store.rounds(r.job_id).find((x) => x.round === r.round && x.attempt === r.attempt);
      if (!sa || !round || round.state !== 'open' || sa.stage === 'done' || sa.stage === 'failed') return;
      const now = this.engine.now();
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
      const expected = this.engine.store.roundTasks(r.job_id, r.round, r.attempt).filter((t) => t.status !== 'declined' && t.status !== 'cancelled').map((t) => t.site_id);
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
      // Unmask now (fails the round on bad or too few shares); the engine reuses the result.
      const plain = this.computeSum(sa); // throws (failing the round) before anything is committed
      this.sums.set(JSON.stringify(k), plain);
      this.store.tx(() => {
        this.store.setStage(k, 'done', now, {});
        const tasks = this.engine.store.roundTasks(r.job_id, r.round, r.attempt);
        for (const t of tasks) if (t.status === 'pending' || t.status === 'delivered') this.engine.store.setTaskStatus(t.task_id, 'cancelled');
        this.engine.store.setRoundState(r.job_id, r.round, r.attempt, 'aggregating', { now });
      });
      this.emitCancelled(r, survivors);
      this.engine.emit('round', r.job_id, r.round);
      void this.engine.tick().catch((e) => this.engine.emit('error', e));
      return true;
    }
    return false;
  }

  private emitCancelled(r: RoundRow, keep: string[]): void {
    const tasks = this.engine.store.roundTasks(r.job_id, r.round, r.attempt).filter((t) => t.status === 'cancelled' && !keep.includes(t.site_id));
    if (tasks.length) this.engine.emit('cancel', tasks.map((t) => ({ siteId: t.site_id, taskId: t.task_id })));
  }

  private failRound(r: RoundRow, why: string): void {
    const now = this.engine.now();
    const tasks = this.engine.store.roundTasks(r.job_id, r.round, r.attempt);
    this.store.tx(() => {
      this.store.setStage(keyOf(r), 'failed', now, { error: why });
      for (const t of tasks) if (t.status === 'pending' || t.status === 'delivered') this.engine.store.setTaskStatus(t.task_id, 'cancelled');
      this.engine.store.setRoundState(r.job_id, r.round, r.attempt, 'failed', { now, error: `FEDLORA_ERR_SECAGG: ${why}` });
    });
    this.purge(r);
    this.emitCancelled(r, []);
    this.engine.emit('round', r.job_id, r.round);
    void this.engine.tick().catch((e) => this.engine.emit('error', e));
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

  // ---- the SecAgg RPC --------------------------------------------------------------------

  async handle(m: SecAggStageInput): Promise<SecAggStageOutput> {
    if (!(SECAGG_STAGES as readonly string[]).includes(m.stage)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `SecAggMessage.stage: "${m.stage}" is not one of ${SECAGG_STAGES.join('|')}`);
    const { spec } = this.engine.jobInfo(m.jobId);
    if (!spec.privacy.secure_aggregation) throw fail('FEDLORA_ERR_SECAGG', `job ${m.jobId} does not use secure aggregation (privacy.secure_aggregation is false)`);
    const attempts = this.engine.store.rounds(m.jobId).filter((x) => x.round === m.round);
    if (!attempts.length) throw fail('FEDLORA_ERR_NOT_FOUND', `SecAggMessage.round: job ${m.jobId} has no round ${m.round}`);
    let body: Record<string, unknown>;
    try {
      body = m.payload.length ? (JSON.parse(m.payload.toString('utf8')) as Record<string, unknown>) : {};
      if (typeof body !== 'object' || body === null || Array.isArray(body)) throw new Error('not a JSON object');
    } catch (e) {
      throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `SecAggMessage.payload (stage ${m.stage}): ${(e as Error).message}`);
    }
    const wanted = typeof body.attempt === 'number' ? body.attempt : attempts[attempts.length - 1].attempt;
    const r = attempts.find((x) => x.attempt === wanted);
    if (!r) throw fail('FEDLORA_ERR_NOT_FOUND', `SecAggMessage: job ${m.jobId} round ${m.round} has no attempt ${wanted}`);
    const task = this.engine.store.roundTasks(r.job_id, r.round, r.attempt).find((t) => t.site_id === m.siteId);
    if (!task) throw fail('FEDLORA_ERR_NOT_SELECTED', `site ${m.siteId} is not selected for job ${m.jobId} round ${m.round} attempt ${r.attempt}`);
    const latest = attempts[attempts.length - 1];
    if (r.attempt !== latest.attempt && m.stage !== 'status') throw fail('FEDLORA_ERR_ROUND_CLOSED', `job ${m.jobId} round ${m.round}: attempt ${r.attempt} is over, attempt ${latest.attempt} runs now`);

    if (r.state === 'open') {
      await this.ensure(r);
      this.progress(r); // deadlines first: a message after a stage's deadline is late
    }
    const sa = this.store.round(keyOf(r));
    if (!sa) throw fail('FEDLORA_ERR_ROUND_CLOSED', `job ${m.jobId} round ${m.round} attempt ${r.attempt} is ${r.state} and never ran secure aggregation`);
    if (m.stage === 'status') return this.reply(this.status(sa), sa.stage === 'done' || sa.stage === 'failed');
    if (sa.stage === 'failed') throw fail('FEDLORA_ERR_SECAGG', `job ${m.jobId} round ${m.round} attempt ${r.attempt}: secure aggregation failed: ${sa.error ?? ''}`);
    if (m.stage === 'config') {
      if (sa.stage !== 'advertise' || r.state !== 'open') throw fail('FEDLORA_ERR_ROUND_CLOSED', `job ${m.jobId} round ${m.round}: the key-advertising stage is closed (stage ${sa.stage})`);
      if (task.status === 'declined' || task.status === 'cancelled') throw fail('FEDLORA_ERR_ROUND_CLOSED', `task ${task.task_id} is ${task.status}`);
      return this.reply(JSON.parse(sa.config_json), true);
    }
    if (body.attempt !== sa.attempt) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `SecAggMessage.payload.attempt: expected ${sa.attempt} (from the config stage), got ${String(body.attempt)}`);
    const handlers = { advertise: () => this.onAdvertise(r, m.siteId, body as unknown as AdvertisePayload),
      share: () => this.onShare(r, m.siteId, body as unknown as SharePayload),
      masked: () => this.onMasked(r, m.siteId, body as unknown as MaskedChunkPayload),
      unmask: () => this.onUnmask(r, m.siteId, body as unknown as UnmaskPayload) } as const;
    return handlers[m.stage as keyof typeof handlers]();
  }

  private reply(o: unknown, ready: boolean): SecAggStageOutput {
    return { payload: Buffer.from(JSON.stringify(o), 'utf8'), ready };
  }
  private current(r: RoundRow): { sa: SecAggRoundRow; cfg: SecAggRoundConfig } {
    const sa = this.store.round(keyOf(r))!;
    if (sa.stage === 'failed') throw fail('FEDLORA_ERR_SECAGG', `job ${r.job_id} round ${r.round} attempt ${r.attempt}: secure aggregation failed: ${sa.error ?? ''}`);
    return { sa, cfg: JSON.parse(sa.config_json) as SecAggRoundConfig };
  }
  private status(sa: SecAggRoundRow): StatusReply {
    return {
      attempt: sa.attempt, stage: sa.stage, roster: parse<Roster | null>(sa.roster_json, null)?.sites.map((s) => s.siteId) ?? [],
      u2: ids(sa.u2_json), survivors: ids(sa.survivors_json), dropped: ids(sa.dropped_json), error: sa.error,
    };
  }

  private onAdvertise(r: RoundRow, siteId: string, p: AdvertisePayload): SecAggStageOutput {
    const msg = p.msg as AdvertiseMsg | undefined;
    if (!msg || msg.siteId !== siteId || typeof msg.cPk !== 'string' || typeof msg.sPk !== 'string') {
      throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `SecAgg advertise: payload.msg must be {siteId: "${siteId}", cPk, sPk}`);
    }
    // Checked here, not only when the stage closes: one site's bad keys there would fail the
    // whole round for every site (collectAdvertise).
    if (!isX25519PublicKey(msg.cPk) || !isX25519PublicKey(msg.sPk) || msg.cPk === msg.sPk) {
      throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `SecAgg advertise: payload.msg.cPk and payload.msg.sPk must be two different base64url X25519 public keys`);
    }
    const k = keyOf(r);
    let { sa } = this.current(r);
    if (sa.stage === 'advertise') {
      // A site that restarted before the roster closed may advertise fresh keys (replaces its row);
      // a poll re-sending the same keys writes nothing.
      const row = JSON.stringify({ attempt: p.attempt, msg: { siteId, cPk: msg.cPk, sPk: msg.sPk } });
      if (this.store.message(k, siteId, 'advertise') !== row) this.store.putMessage(k, siteId, 'advertise', row, this.engine.now());
      this.progress(r);
      sa = this.current(r).sa;
    }
    if (sa.stage === 'advertise') return this.reply({}, false);
    const roster = parse<Roster>(sa.roster_json, null as never);
    const me = roster.sites.find((s) => s.siteId === siteId);
    if (!me) throw fail('FEDLORA_ERR_SECAGG', `site ${siteId} is not in the round's roster: its keys arrived after the key-advertising stage closed`);
    if (me.cPk !== msg.cPk || me.sPk !== msg.sPk) throw fail('FEDLORA_ERR_SECAGG', `site ${siteId} advertised other keys than the roster holds (did the site restart mid-round?)`);
    return this.reply({ roster }, true);
  }

  private onShare(r: RoundRow, siteId: string, p: SharePayload): SecAggStageOutput {
    const msg = p.msg as ShareKeysMsg | undefined;
    if (!msg || msg.siteId !== siteId || !Array.isArray(msg.shares)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `SecAgg share: payload.msg must be {siteId: "${siteId}", shares: [...]}`);
    const k = keyOf(r);
    let { sa } = this.current(r);
    if (sa.stage === 'advertise') throw fail('FEDLORA_ERR_SECAGG', `SecAgg share from ${siteId} before the roster is out (stage advertise)`);
    if (sa.stage === 'share') {
      const roster = parse<Roster>(sa.roster_json, null as never);
      if (!roster.sites.some((s) => s.siteId === siteId)) throw fail('FEDLORA_ERR_SECAGG', `site ${siteId} is not in the round's roster`);
      // Exactly one share for every other roster site, checked now: an incomplete list stored
      // here would fail the whole round when the stage closes (routeShares).
      const peers = new Set(roster.sites.map((s) => s.siteId).filter((id) => id !== siteId));
      const seen = new Set<string>();
      msg.shares.forEach((s: unknown, i: number) => {
        const x = (s && typeof s === 'object' ? s : {}) as Partial<Record<'from' | 'to' | 'ct', unknown>>;
        if (x.from !== siteId || typeof x.to !== 'string' || !peers.has(x.to) || seen.has(x.to) || typeof x.ct !== 'string' || x.ct.length === 0) {
          throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `SecAgg share from ${siteId}: payload.msg.shares[${i}] (from ${String(JSON.stringify(x.from)).slice(0, 80)} to ${String(JSON.stringify(x.to)).slice(0, 80)}) does not fit the roster (one share with a ciphertext for each other site)`);
        }
        seen.add(x.to);
      });
      const missing = [...peers].filter((id) => !seen.has(id));
      if (missing.length) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `SecAgg share from ${siteId}: payload.msg.shares has no share for ${missing.join(', ')}`);
      const row = JSON.stringify({ attempt: p.attempt, msg: { siteId, shares: msg.shares.map((x) => ({ from: x.from, to: x.to, ct: x.ct })) } });
      if (this.store.message(k, siteId, 'share') !== row) this.store.putMessage(k, siteId, 'share', row, this.engine.now());
      this.progress(r);
      sa = this.current(r).sa;
    }
    if (sa.stage === 'share') return this.reply({}, false);
    const u2 = ids(sa.u2_json);
    if (!u2.includes(siteId)) throw fail('FEDLORA_ERR_SECAGG', `site ${siteId} did not share its keys before the share stage closed`);
    const shares = this.store.messages(k, 'share').flatMap((x) => (JSON.parse(x.payload) as SharePayload).msg.shares).filter((s) => s.to === siteId && u2.includes(s.from));
    if (!shares.length && sa.stage === 'done') throw fail('FEDLORA_ERR_ROUND_CLOSED', `job ${r.job_id} round ${r.round}: secure aggregation is finished`);
    return this.reply({ inbox: { round: r.round, u2, shares } }, true);
  }

  private onMasked(r: RoundRow, siteId: string, p: MaskedChunkPayload): SecAggStageOutput {
    const k = keyOf(r);
    const { sa, cfg } = this.current(r);
    if (p.siteId !== siteId) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `SecAgg masked: payload.siteId "${p.siteId}" is not the caller ${siteId}`);
    if (!(Number.isInteger(p.index) && p.index >= 0 && p.index < cfg.chunks)) throw fail('FEDLORA_ERR_CHUNK_ORDER', `SecAgg masked: chunk index ${p.index} outside 0..${cfg.chunks - 1}`);
    const data = Buffer.from(String(p.data ?? ''), 'base64');
    const want = 4 * (Math.min(cfg.dim, (p.index + 1) * cfg.chunkElems) - p.index * cfg.chunkElems);
    if (data.length !== want) throw fail('FEDLORA_ERR_CHUNK_SIZE', `SecAgg masked: chunk ${p.index} from ${siteId} has ${data.length} bytes, expected ${want}`);
    if (createHash('sha256').update(data).digest('hex') !== p.sha256) throw fail('FEDLORA_ERR_CHUNK_HASH', `SecAgg masked: chunk ${p.index} from ${siteId}: sha256 mismatch`);
    const prior = this.store.chunk(k, siteId, p.index);
    if (prior && !prior.equals(data)) throw fail('FEDLORA_ERR_SECAGG', `SecAgg masked: site ${siteId} sent a different chunk ${p.index} than the one acknowledged`);
    if (!prior) {
      if (sa.stage !== 'masked') {
        throw fail('FEDLORA_ERR_ROUND_CLOSED', sa.stage === 'share' || sa.stage === 'advertise'
          ? `SecAgg masked: stage is ${sa.stage}; send masked input after the share inbox is out`
          : `SecAgg masked: the masked-input stage closed; site ${siteId} counts as dropped`);
      }
      if (!ids(sa.u2_json).includes(siteId)) throw fail('FEDLORA_ERR_SECAGG', `site ${siteId} did not share keys in time; it cannot send a masked input`);
      const now = this.engine.now();
      this.store.tx(() => {
        this.store.putChunk(k, siteId, p.index, data, now);
        if ((this.store.chunkCounts(k).get(siteId) ?? 0) === cfg.chunks) {
          const t = this.engine.store.roundTasks(r.job_id, r.round, r.attempt).find((x) => x.site_id === siteId);
          if (t && (t.status === 'pending' || t.status === 'delivered')) this.engine.store.setTaskStatus(t.task_id, 'submitted');
        }
      });
      this.progress(r);
    }
    const received = this.store.chunkCounts(k).get(siteId) ?? 0;
    return this.reply({ received, chunks: cfg.chunks, complete: received === cfg.chunks }, true);
  }

  private onUnmask(r: RoundRow, siteId: string, p: UnmaskPayload): SecAggStageOutput {
    const k = keyOf(r);
    const { sa } = this.current(r);
    if (sa.stage === 'advertise' || sa.stage === 'share' || sa.stage === 'masked') {
      if (p.msg) throw fail('FEDLORA_ERR_SECAGG', `SecAgg unmask: shares from ${siteId} before the survivor list is out (stage ${sa.stage})`);
      return this.reply({}, false);
    }
    const survivors = ids(sa.survivors_json);
    if (!survivors.includes(siteId)) throw fail('FEDLORA_ERR_SECAGG', `site ${siteId} is not a survivor of the masked stage (its masked input was missing when the stage closed)`);
    const request = { round: r.round, survivors, dropped: ids(sa.dropped_json) };
    if (!p.msg) return this.reply({ request }, true);
    const msg = p.msg as UnmaskSharesMsg;
    if (msg.siteId !== siteId || !Array.isArray(msg.selfShares) || !Array.isArray(msg.keyShares)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `SecAgg unmask: payload.msg must be {siteId: "${siteId}", selfShares, keyShares}`);
    const surv = new Set(survivors), drop = new Set(request.dropped);
    if (msg.selfShares.some((s) => !surv.has(s.of)) || msg.keyShares.some((s) => !drop.has(s.of))) {
      throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `SecAgg unmask from ${siteId}: self shares must be of survivors and key shares of dropped sites`);
    }
    if (sa.stage !== 'unmask') return this.reply({ accepted: false, note: `already unmasked (stage ${sa.stage})` }, true);
    this.store.putMessage(k, siteId, 'unmask', JSON.stringify({ attempt: p.attempt, msg }), this.engine.now());
    this.progress(r);
    return this.reply({ accepted: true }, true);
  }
}
