// Aggregate and publish one round: the job's collector hands the strategy what the round
// collected, the result is written as version base + 1, and ONE transaction commits the version
// row, the round's publication and strategy state, the job's version, the audit entries and the
// privacy ledger. Killed anywhere before that commit, the coordinator redoes the round from the
// same inputs — accepted updates (or stored masked inputs), seed, strategy state, aggregation
// start time and secret noise key — and commits the same bytes once.
import type { EventEmitter } from 'node:events';
import { fail } from '../../shared/errors.ts';
import { failpoint } from '../../shared/failpoints.ts';
import type { CoordinatorStore, JobRow, RoundRow } from '../store/store.ts';
import type { JobInfo } from '../jobs/job-service.ts';
import { extract, merge } from '../publish/layout.ts';
import { writeVersion, type Signer } from '../publish/publisher.ts';
import { roundNoiseKey } from '../privacy/noise-key.ts';
import { createPrivacyLedger } from '../privacy/ledger.ts';
import type { Collector, CollectedRound } from './collector.ts';
import { roundPlanOf } from './round-plan.ts';
import { decodeState, encodeState } from './strategy-state.ts';

export interface AggregatePublishDeps {
  store: CoordinatorStore;
  dataDir: string;
  signer: Signer;
  now: () => number;
  events: EventEmitter;
  noiseKey?: Buffer;
  loadVersion(jobId: string, version: number): Float32Array;
}

export async function aggregateAndPublish(d: AggregatePublishDeps, job: JobRow, info: JobInfo, collector: Collector, r: RoundRow): Promise<void> {
  const { store } = d;
  const { spec, layout, strategy } = info;
  const baseFull = d.loadVersion(job.id, r.base_version);
  const prev = store.lastPublishedRound(job.id);
  let got: CollectedRound;
  try {
    got = await collector.aggregate(r, info, {
      round: r.round, layout: layout.update, global: extract(baseFull, layout.full, layout.update),
      selected: (JSON.parse(r.selected_json) as string[]).length, state: decodeState(prev?.strategy_state ?? null), seed: r.seed,
      ...(d.noiseKey ? { noiseKey: roundNoiseKey(d.noiseKey, r.job_id, r.round, r.attempt, r.seed) } : {}),
    });
  } catch (e) {
    throw e instanceof Error && 'code' in e ? e : fail('FEDLORA_ERR_AGGREGATION', `job ${job.id} round ${r.round}: ${(e as Error).message}`);
  }
  const { result: res, contributing, examples } = got;
  await failpoint('coordinator.aggregate.computed'); // crash tests: computed, nothing written
  const version = r.base_version + 1;
  const createdMs = r.aggregating_ms ?? d.now();
  // Files first (content-addressed; an orphan after a crash is harmless), then the one commit.
  const { row: pub, stored } = writeVersion(store, d.dataDir, d.signer, {
    jobId: job.id, spec, version, round: r.round, flat: merge(baseFull, layout.full, layout.update, res.global), layout: layout.full,
    contributingSites: contributing, numExamples: examples, createdMs,
  });
  await failpoint('coordinator.publish.written'); // crash tests: files on disk, nothing committed
  const now = d.now();
  const { sampling } = roundPlanOf(r);
  store.tx(() => {
    if (!stored) store.insertAdapterVersion(pub);
    store.setRoundState(r.job_id, r.round, r.attempt, 'published', { now, strategyState: encodeState(res.state), metricsJson: JSON.stringify(res.metrics) });
    store.setJobVersion(job.id, version, now);
    const at = new Date(now);
    const subject = `${job.id}/r${r.round}a${r.attempt}`;
    store.audit.append('coordinator', 'aggregate', subject, {
      job: job.id, round: r.round, attempt: r.attempt, strategy: strategy.name, secure_aggregation: spec.privacy.secure_aggregation, contributing_sites: contributing, num_examples: examples,
      updates: got.updates, // empty under secure aggregation (only the sum is seen)
      metrics: res.metrics, // the strategy's report: for DP dp_clip_norm, dp_clipped (sites clipped), dp_noise_std, dp_unclipped_fraction
    }, at);
    // The Poisson sample is recorded once the round is over (tasks went only to the sampled sites).
    if (sampling) {
      store.audit.append('coordinator', 'round_sampled', subject, {
        job: job.id, round: r.round, attempt: r.attempt, sample_rate: sampling.rate, eligible_sites: sampling.population, denominator: sampling.denominator,
        sampled: JSON.parse(r.selected_json) as string[], contributed: got.updates.map((u) => u.site),
      }, at);
    }
    store.audit.append('coordinator', 'publish', `${job.id}/v${version}`, { job: job.id, version, round: r.round, sha256: pub.sha256, size: pub.size, manifest_sha256: pub.manifest_sha256 }, at);
    const dp = spec.privacy.dp;
    if (dp) {
      // The RDP accountant: epsilon spent once this round is published (every round counts, an
      // empty Poisson sample's noise-only round too).
      const eps = createPrivacyLedger(dp).epsilonAfter(r.round).epsilon;
      store.recordPrivacy({ job_id: job.id, round: r.round, epsilon: eps, delta: dp.delta, noise_multiplier: dp.noise_multiplier, sample_rate: dp.sample_rate, created_ms: now });
      store.audit.append('coordinator', 'privacy_spend', job.id, { round: r.round, epsilon: eps, delta: dp.delta, budget_epsilon: dp.epsilon_budget, noise_multiplier: dp.noise_multiplier, sample_rate: dp.sample_rate }, at);
    }
  });
  collector.published(r);
  d.events.emit('published', job.id, version);
  d.events.emit('round', job.id, r.round);
}
