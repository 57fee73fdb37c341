// How a round's contributions are collected and turned into the strategy's result. Two kinds:
// plain collection (rounds/plain-collector.ts: each site uploads its update, the coordinator
// holds the files) and secure aggregation (secagg/collector.ts: sites send masked inputs, only
// the survivors' sum is ever unmasked). The round state machine and the aggregate-and-publish
// step use a job's collector without knowing which it is.
import type { RoundRow } from '../store/store.ts';
import type { JobInfo } from '../jobs/job-service.ts';
import type { AggregateResult, RoundContext, Strategy } from '../strategies/types.ts';

/** An accepted update as the aggregate audit entry lists it (none under secure aggregation). */
export interface AuditedUpdate {
  update_id: string;
  site: string;
  sha256: string;
  examples: number;
}

export interface CollectedRound {
  result: AggregateResult;
  /** Sites whose contribution is in the result, and their examples. */
  contributing: number;
  examples: number;
  updates: AuditedUpdate[];
}

export interface Collector {
  /** What the round's tasks ask sites to send. */
  payloadKind(strategy: Strategy): string;
  /** Advance an open round (answers, deadlines); true when it left 'open' (aggregating or failed). */
  check(r: RoundRow, job: JobInfo): Promise<boolean>;
  /** The strategy's result from what the round collected (redone identically after a crash). */
  aggregate(r: RoundRow, job: JobInfo, ctx: RoundContext): Promise<CollectedRound>;
  /** The round is published: drop what collecting kept. */
  published(r: RoundRow): void;
}
