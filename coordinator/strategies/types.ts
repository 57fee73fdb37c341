// The aggregation-strategy interface (after Flower's Strategy): configure a round, aggregate
// the round's updates. Strategies are small pure functions over Float32Arrays in the
// canonical flat layout (shared/tensors.ts); state that must survive a coordinator restart
// (server-optimizer moments, adaptive clip norm) goes in and out explicitly.

import type { AdapterLayout } from '../../shared/tensors.ts';

/** One site's update as the coordinator holds it: on disk, loaded only when the strategy asks,
 *  so that streaming strategies keep O(adapter) memory instead of O(sites x adapter). */
export interface UpdateRef {
  siteId: string;
  numExamples: number;
  /** The flat vector (a delta from the round's global adapter, unless payloadKind says otherwise). */
  load(): Promise<Float32Array>;
  /** Optional: the same values read into `dst` (layout.total elements, owned by the caller).
   *  Lets a streaming strategy read straight into its kernel's memory, and read the next
   *  update while it adds this one. Resolves with `dst`. */
  loadInto?(dst: Float32Array): Promise<Float32Array>;
  /** Adaptive-clipping bit reported by the site (true = the update was NOT clipped), if any. */
  unclippedBit?: number;
  /** The update's own layout when the site trained a lower LoRA rank than the job's (same
   *  tensor names, rank r_k <= r); absent = the round's layout. Only svd takes such updates. */
  layout?: AdapterLayout;
}

export interface RoundContext {
  round: number; // 1-based round being aggregated
  layout: AdapterLayout;
  /** The global adapter parameters the round started from (flat). */
  global: Float32Array;
  /** Number of sites selected for the round (DP's fixed denominator unless the round was
   *  Poisson-sampled: then rate x population, RoundSampling). */
  selected: number;
  /** Persisted strategy state from the previous round (empty on round 1). */
  state: Record<string, Float32Array | number>;
  /** Deterministic randomness for this round (DP noise, stochastic rounding). */
  seed: number;
  /** Secret per-round key for DP noise (coordinator/privacy/noise-key.ts): the noise is derived
   *  from it, so a round redone after a crash adds the same noise, while nobody without the
   *  coordinator's key can recompute it. Absent = fresh randomness (in-process uses). */
  noiseKey?: Buffer;
}

export interface AggregateResult {
  /** The new global adapter parameters (flat, same layout). */
  global: Float32Array;
  state: Record<string, Float32Array | number>;
  metrics: Record<string, number>;
}

/** The round attempt being opened, as a strategy sees it when it chooses the sites. */
export interface RoundInfo {
  round: number; // 1-based
  attempt: number; // 1-based; a failed attempt is re-run with a fresh selection
  /** Public per-attempt seed (from the job's selection_seed): the seeded subset selection. */
  seed: number;
  /** Secret per-attempt key (privacy/noise-key.ts roundSamplingKey): DP Poisson sampling draws
   *  from it, so no site can predict or steer the sample. Absent = fresh randomness. */
  samplingKey?: Buffer;
}

/** A site the job may select this round: eligible for the job, online or not. */
export interface Candidate {
  siteId: string;
  online: boolean;
}

/** What the round's tasks tell sites beyond the job spec (sent as Task.strategy_config). */
export interface RoundConfig {
  /** FedProx proximal coefficient mu. */
  proxMu?: number;
  /** DP: the L2 norm sites clip their delta to this round (adaptive clipping moves it). */
  dpClipNorm?: number;
  /** FFA: A stays frozen at its shared-seed initialisation, only B is trained and sent. */
  freezeA?: boolean;
  /** What sites send when it is not a delta (SVD: their full local factors). */
  payload?: 'delta' | 'weights';
}

/** DP Poisson sampling of a round: each of the job's `population` eligible sites taken
 *  independently with probability `rate`; the noised mean divides by `denominator` = rate x
 *  population whatever the sample's size. */
export interface RoundSampling {
  rate: number;
  population: number;
  denominator: number;
}

/** A strategy's answer for a round: the sites, their settings, and when the round may publish. */
export interface RoundPlan {
  sites: string[];
  config: RoundConfig;
  /** Fewest accepted updates that publish the round; absent = the job's min_sites. 0 for a
   *  Poisson-sampled DP round: an empty sample publishes noise only (what the accountant charges). */
  minUpdates?: number;
  sampling?: RoundSampling;
}

export interface Strategy {
  readonly name: string;
  /** What sites must send: a delta from the global adapter, their full local weights, or only B. */
  readonly payloadKind: 'delta' | 'weights';
  /** Choose the round's sites among the candidates and the settings their tasks carry. */
  configureRound(round: RoundInfo, candidates: readonly Candidate[], state: Record<string, Float32Array | number>): RoundPlan;
  aggregate(updates: UpdateRef[], ctx: RoundContext): Promise<AggregateResult>;
  /** Optional (added by the strategies area): the [start, end) element ranges sites actually
   *  train and send (e.g. only the lora_B tensors for FFA-LoRA). DP clips and noises only
   *  these, and secure aggregation only masks these. Absent = the whole layout. */
  trainable?(layout: AdapterLayout): Array<[number, number]>;
  /** True for strategies that aggregate by a (weighted) mean and stream one update at a time
   *  (FedAvg family); the DP wrapper only wraps these. */
  readonly meanBased?: boolean;
}

/** A strategy that can also finish a round from a secure-aggregation SUM (the coordinator only
 *  learns sum_k x_k of the surviving sites, never one site's update). Sites must have clipped
 *  their deltas to the round's dp_clip_norm before masking. */
export interface SecureSumStrategy extends Strategy {
  aggregateSum(sum: Float32Array, count: number, ctx: RoundContext, unclippedCount?: number): Promise<AggregateResult>;
}
