// What a round attempt was opened with, stored in its row (rounds.task_config) so a task re-sent
// after a restart is the same task and the round closes and aggregates by the same rules: what
// sites send, the strategy's typed settings, how many updates publish it, and for a DP round its
// Poisson sampling. Also the public per-attempt seed of the seeded selection.
import { createHash } from 'node:crypto';
import type { RoundRow } from '../store/store.ts';
import type { RoundConfig, RoundSampling } from '../strategies/types.ts';
import type { JobSpec } from '../jobs/spec.ts';

export interface StoredRoundPlan {
  /** What sites send: the strategy's payload kind, or 'masked' under secure aggregation. */
  payloadKind: string;
  config: RoundConfig;
  minUpdates: number;
  sampling?: RoundSampling;
}

export function encodeRoundPlan(p: StoredRoundPlan): string {
  return JSON.stringify(p);
}

export function roundPlanOf(r: Pick<RoundRow, 'task_config'>): StoredRoundPlan {
  const p = (r.task_config ? JSON.parse(r.task_config) : {}) as Partial<StoredRoundPlan>;
  return { payloadKind: p.payloadKind ?? 'delta', config: p.config ?? {}, minUpdates: p.minUpdates ?? 1, ...(p.sampling ? { sampling: p.sampling } : {}) };
}

/** Task.strategy_config: the settings as the wire carries them (strings). */
export function wireConfig(c: RoundConfig): Record<string, string> {
  const o: Record<string, string> = {};
  if (c.proxMu !== undefined) o.prox_mu = String(c.proxMu);
  if (c.freezeA !== undefined) o.freeze_a = String(c.freezeA);
  if (c.payload !== undefined) o.payload = c.payload;
  if (c.dpClipNorm !== undefined) o.dp_clip_norm = String(c.dpClipNorm);
  return o;
}

/** The public seed of a round attempt (seeded selection; also keys DP noise with the secret key). */
export function selectionSeed(spec: Pick<JobSpec, 'selection_seed'>, jobId: string, round: number, attempt: number): number {
  return createHash('sha256').update(`${spec.selection_seed}:${jobId}:${round}:${attempt}`).digest().readUInt32LE(0);
}
