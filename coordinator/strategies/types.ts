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
  /** Adaptive-clipping bit reported by the site (true = the update was NOT clipped), if any. */
  unclippedBit?: number;
}

export interface RoundContext {
  round: number; // 1-based round being aggregated
  layout: AdapterLayout;
  /** The global adapter parameters the round started from (flat). */
  global: Float32Array;
  /** Number of sites selected for the round (the expected denominator for DP). */
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

export interface Strategy {
  readonly name: string;
  /** What sites must send: a delta from the global adapter, their full local weights, or only B. */
  readonly payloadKind: 'delta' | 'weights';
  /** Extra settings sent to sites with the round's task (e.g. FedProx mu, DP clip norm). */
  configureRound(round: number, state: Record<string, Float32Array | number>): Record<string, string>;
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
