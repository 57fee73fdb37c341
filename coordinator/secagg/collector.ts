// Secure-aggregation collection of a round (jobs with privacy.secure_aggregation): sites send
// masked inputs over the SecAgg RPC instead of uploading updates, the stage machine (stages.ts)
// closes the round when the survivors' sum is unmasked, and the aggregation hands only that sum
// to the strategy (DP noise, server optimiser) through aggregateSecureSum. The gRPC service gets
// this collector to answer SecAgg calls (handle).
import { fail } from '../../shared/errors.ts';
import { EXAMPLES_CAP, EXTRA_SLOTS, type SecAggRoundConfig } from '../../shared/secagg/messages.ts';
import type { RoundRow } from '../store/store.ts';
import type { JobInfo } from '../jobs/job-service.ts';
import { aggregateSecureSum, unpackTrainable } from '../strategies/secure.ts';
import type { Collector, CollectedRound } from '../rounds/collector.ts';
import { keyOf, parse, SecAggStages, type Key, type SecAggDeps, type SecAggOptions } from './stages.ts';
import { SecAggRpc, type SecAggStageInput, type SecAggStageOutput } from './rpc.ts';
import type { SecAggStore } from './store.ts';

export type { SecAggDeps, SecAggStageInput, SecAggStageOutput };

interface SecureRoundInput {
  /** The survivors' sum in the job's update layout (zeros outside the masked ranges). */
  sum: Float32Array;
  count: number;
  unclippedCount: number;
  numExamples: number;
}

export class SecAggCollector implements Collector {
  private readonly stages: SecAggStages;
  private readonly rpc: SecAggRpc;

  constructor(private readonly d: SecAggDeps) {
    this.stages = new SecAggStages(d);
    this.rpc = new SecAggRpc(d, this.stages);
  }

  get store(): SecAggStore {
    return this.stages.store;
  }
  get options(): SecAggOptions {
    return this.stages.options;
  }

  payloadKind(): string {
    return 'masked';
  }

  /** Advance the stages of an open round (deadlines); true when the round left 'open'. */
  async check(r: RoundRow): Promise<boolean> {
    this.stages.sweep();
    this.stages.ensure(r);
    this.stages.progress(r);
    return this.d.store.currentRound(r.job_id)?.state !== 'open';
  }

  /** Unmask the survivors' sum and hand it to the strategy; uniform weights. */
  async aggregate(r: RoundRow, job: JobInfo, ctx: Parameters<Collector['aggregate']>[2]): Promise<CollectedRound> {
    const input = this.roundInput(r, job);
    const result = await aggregateSecureSum(job.strategy, input.sum, input.count, ctx, job.spec.privacy.dp ? input.unclippedCount : undefined);
    return {
      result: { ...result, metrics: { ...result.metrics, secagg_survivors: input.count } },
      contributing: input.count, examples: input.numExamples, updates: [], // only the sum is ever seen
    };
  }

  /** The unmasked sum of a round whose stages are done (recomputed from SQLite after a restart). */
  private roundInput(r: Key, job: JobInfo): SecureRoundInput {
    const k = keyOf(r);
    const sa = this.stages.store.round(k);
    if (!sa || sa.stage !== 'done') throw fail('FEDLORA_ERR_SECAGG', `job ${k.job_id} round ${k.round} attempt ${k.attempt}: secure aggregation is ${sa?.stage ?? 'not started'}, not done`);
    const cfg = parse<SecAggRoundConfig>(sa.config_json, null as never);
    const plain = this.stages.plainSum(sa);
    const P = cfg.dim - EXTRA_SLOTS.length;
    return {
      sum: unpackTrainable(job.strategy, job.layout.update, plain.sum.subarray(0, P)),
      count: plain.count,
      unclippedCount: Math.min(plain.count, Math.max(0, Math.round(plain.sum[P] / cfg.clipRange))),
      numExamples: Math.max(0, Math.round((plain.sum[P + 1] / cfg.clipRange) * EXAMPLES_CAP)),
    };
  }

  published(r: RoundRow): void {
    this.stages.purge(r);
  }

  /** One SecAgg RPC call of a site. */
  async handle(m: SecAggStageInput): Promise<SecAggStageOutput> {
    if (!this.d.store.job(m.jobId)) throw fail('FEDLORA_ERR_SECAGG', `secure aggregation is not available for job ${m.jobId} on this coordinator: no such job (round ${m.round}, stage ${m.stage})`);
    return this.rpc.handle(m);
  }
}
