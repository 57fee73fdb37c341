// Opening a round attempt: the job's strategy chooses the sites among the candidates and the
// settings their tasks carry (Strategy.configureRound); the round row, its plan and one TRAIN
// task per chosen site are committed in one transaction, each task in the audit log.
import { randomBytes } from 'node:crypto';
import type { EventEmitter } from 'node:events';
import type { CoordinatorStore, JobRow } from '../store/store.ts';
import type { JobInfo } from '../jobs/job-service.ts';
import type { Candidate } from '../strategies/types.ts';
import { roundSamplingKey } from '../privacy/noise-key.ts';
import type { Collector } from './collector.ts';
import { encodeRoundPlan, selectionSeed } from './round-plan.ts';
import { decodeState } from './strategy-state.ts';

export interface OpenRoundDeps {
  store: CoordinatorStore;
  now: () => number;
  heartbeatTimeoutMs: number;
  events: EventEmitter;
  /** The coordinator's secret key (privacy/noise-key.ts); absent = fresh sampling randomness. */
  noiseKey?: Buffer;
  candidates(jobId: string, onlineSince: number): Candidate[];
}

/** Open round `round` attempt `attempt`; false (nothing written) while fewer than min_sites
 *  candidates are online. */
export function openRound(d: OpenRoundDeps, job: JobRow, info: JobInfo, collector: Collector, round: number, attempt: number): boolean {
  const { store } = d;
  const { spec, strategy } = info;
  const now = d.now();
  const candidates = d.candidates(job.id, now - d.heartbeatTimeoutMs);
  if (candidates.filter((c) => c.online).length < spec.min_sites) return false; // wait for sites
  const seed = selectionSeed(spec, job.id, round, attempt);
  const samplingKey = d.noiseKey ? roundSamplingKey(d.noiseKey, job.id, round, attempt) : randomBytes(32);
  const prevState = decodeState(store.lastPublishedRound(job.id)?.strategy_state ?? null);
  const plan = strategy.configureRound({ round, attempt, seed, samplingKey }, candidates, prevState);
  const selected = [...plan.sites].sort();
  const deadline = now + spec.round_deadline_s * 1000;
  const taskConfig = encodeRoundPlan({
    payloadKind: collector.payloadKind(strategy), config: plan.config, minUpdates: plan.minUpdates ?? spec.min_sites,
    ...(plan.sampling ? { sampling: plan.sampling } : {}),
  });
  store.tx(() => {
    store.insertRound({
      job_id: job.id, round, attempt, state: 'open', base_version: job.current_version, selected_json: JSON.stringify(selected),
      seed, deadline_ms: deadline, started_ms: now, task_config: taskConfig,
    });
    for (const s of selected) {
      const taskId = `${job.id}.r${round}.a${attempt}.${s}`;
      store.insertTask({ task_id: taskId, job_id: job.id, round, attempt, site_id: s, kind: 'TASK_KIND_TRAIN', status: 'pending', created_ms: now });
      store.audit.append('coordinator', 'task', taskId, { job: job.id, round, attempt, site: s, kind: 'TASK_KIND_TRAIN', base_version: job.current_version, deadline: new Date(deadline).toISOString() }, new Date(now));
    }
  });
  d.events.emit('tasks', selected);
  d.events.emit('round', job.id, round);
  return true;
}
