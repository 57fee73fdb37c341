// Plain collection: every selected site uploads its update (rounds/intake.ts stores it under
// <dataDir>/updates/... and marks it accepted). The round closes when every selected site has
// answered (submitted, declined or cancelled) or at its deadline: with at least the plan's
// minUpdates accepted updates it aggregates, else it fails (and the state machine may retry).
// Aggregation streams the accepted update files into the strategy, in site order.
import { rmSync } from 'node:fs';
import type { EventEmitter } from 'node:events';
import type { CoordinatorStore, RoundRow } from '../store/store.ts';
import { storedUpdateRefs } from './stored-updates.ts';
import { roundPlanOf } from './round-plan.ts';
import type { Collector } from './collector.ts';

export interface PlainCollectorDeps {
  store: CoordinatorStore;
  now: () => number;
  events: EventEmitter;
}

export function createPlainCollector(d: PlainCollectorDeps): Collector {
  const { store } = d;
  return {
    payloadKind: (strategy) => strategy.payloadKind,

    async check(r: RoundRow) {
      const now = d.now();
      const tasks = store.roundTasks(r.job_id, r.round, r.attempt);
      const accepted = store.roundUpdates(r.job_id, r.round, r.attempt, 'accepted');
      const allAnswered = tasks.every((t) => t.status === 'declined' || t.status === 'submitted' || t.status === 'cancelled');
      const late = now >= r.deadline_ms;
      if (!allAnswered && !late) return false;
      const need = roundPlanOf(r).minUpdates;
      const enough = accepted.length >= need;
      // Uploads still arriving when the round leaves 'open' can never count (aggregation reads
      // only 'accepted' rows): discard them with their partial bytes, so no 'receiving' row or
      // .part file outlives its round; a site resuming one is told FEDLORA_ERR_ROUND_CLOSED.
      const unfinished = store.roundUpdates(r.job_id, r.round, r.attempt, 'receiving');
      store.tx(() => {
        for (const u of unfinished) {
          store.setUpdateStatus(u.update_id, 'discarded', 'round closed before the upload finished');
          store.audit.append(u.site_id, 'update_rejected', u.update_id, { code: 'FEDLORA_ERR_ROUND_CLOSED', reason: 'round closed before the upload finished', job: r.job_id, round: r.round, attempt: r.attempt, received_bytes: u.received_bytes, size: u.size }, new Date(now));
        }
        for (const t of tasks) if (t.status === 'pending' || t.status === 'delivered') store.setTaskStatus(t.task_id, 'cancelled');
        if (enough) store.setRoundState(r.job_id, r.round, r.attempt, 'aggregating', { now });
        else {
          const why = `${late ? 'deadline passed' : 'all selected sites answered'} with ${accepted.length} accepted update(s), min_sites is ${need}`;
          store.setRoundState(r.job_id, r.round, r.attempt, 'failed', { now, error: why });
          const discarded: string[] = [];
          for (const u of store.roundUpdates(r.job_id, r.round, r.attempt)) {
            if (u.status !== 'rejected' && u.status !== 'discarded') {
              store.setUpdateStatus(u.update_id, 'discarded', 'round attempt failed');
              discarded.push(u.update_id);
            }
          }
          store.audit.append('coordinator', 'round_failed', `${r.job_id}/r${r.round}a${r.attempt}`, { job: r.job_id, round: r.round, attempt: r.attempt, reason: why, discarded_updates: discarded }, new Date(now));
        }
      });
      // After the commit: a crash before this leaves only a stray .part of a discarded row.
      for (const u of unfinished) if (u.path.endsWith('.part')) rmSync(u.path, { force: true });
      const cancelled = tasks.filter((t) => t.status === 'pending' || t.status === 'delivered');
      if (cancelled.length) d.events.emit('cancel', cancelled.map((t) => ({ siteId: t.site_id, taskId: t.task_id })));
      d.events.emit('round', r.job_id, r.round);
      return true;
    },

    async aggregate(r, job, ctx) {
      const accepted = store.roundUpdates(r.job_id, r.round, r.attempt, 'accepted'); // sorted by site id
      // lower-rank sites (job lora.min_site_r): factors to svd as they are, B deltas padded for ffa
      const refs = storedUpdateRefs(accepted, job.layout.update, { reuseBuffer: job.strategy.meanBased === true, siteRanks: job.strategy.payloadKind === 'weights' ? 'layout' : 'pad' });
      return {
        result: await job.strategy.aggregate(refs, ctx),
        contributing: accepted.length,
        examples: accepted.reduce((a, u) => a + u.examples, 0),
        updates: accepted.map((u) => ({ update_id: u.update_id, site: u.site_id, sha256: u.sha256, examples: u.examples })),
      };
    },

    published: () => undefined,
  };
}
