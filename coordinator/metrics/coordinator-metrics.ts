// The coordinator's Prometheus /metrics, computed at scrape time from SQLite (the only source
// of truth, so counters survive restarts and agree with the API; the one exception is
// fedlora_errors_total, counted by the process). Counters only count rows
// in terminal or monotone states, so they never go down:
//   received = updates whose bytes all arrived (status left 'receiving');
//   accepted = 'accepted', plus fully received updates later 'discarded' by a failed attempt;
//   rejected = 'rejected' (terminal).
import type { CoordinatorStore } from '../store/store.ts';
import { Exposition } from '../../shared/prometheus.ts';
import type { SurvivedErrorKind } from './survived-errors.ts';

const AGGREGATION_BUCKETS_S = [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300];
const ROUND_BUCKETS_S = [1, 5, 15, 30, 60, 120, 300, 600, 1800, 3600, 7200];

export interface CoordinatorMetricsDeps {
  store: CoordinatorStore;
  now: () => number;
  heartbeatTimeoutMs: number;
  /** Errors survived by this process so far, per kind (coordinator/metrics/survived-errors.ts). */
  survivedErrors?: Record<SurvivedErrorKind, number>;
}

export function coordinatorMetrics(d: CoordinatorMetricsDeps): string {
  const db = d.store.db;
  const e = new Exposition();
  const now = d.now();
  const since = now - d.heartbeatTimeoutMs;

  // ---- errors survived (logged, counted; the only counters not from SQLite: they restart at 0) ----
  if (d.survivedErrors) {
    e.declare('fedlora_errors_total', 'Errors the coordinator survived (logged): failed audit writes, failed engine ticks', 'counter');
    for (const [kind, n] of Object.entries(d.survivedErrors)) e.counter('fedlora_errors_total', '', n, { kind });
  }

  // ---- sites ----
  const online = d.store.onlineSites(since);
  e.gauge('fedlora_sites_connected', 'Active sites whose last heartbeat is within the heartbeat timeout', online.length);
  e.declare('fedlora_sites', 'Enrolled sites by status', 'gauge');
  for (const r of db.prepare('SELECT status, COUNT(*) AS n FROM sites GROUP BY status ORDER BY status').all() as { status: string; n: number }[]) {
    e.gauge('fedlora_sites', 'Enrolled sites by status', r.n, { status: r.status });
  }
  const sites = db.prepare('SELECT id, last_seen_ms, training_tokens_per_s, training_tokens_at_ms FROM sites ORDER BY id').all() as
    { id: string; last_seen_ms: number | null; training_tokens_per_s: number | null; training_tokens_at_ms: number | null }[];
  e.declare('fedlora_site_last_seen_timestamp_seconds', 'Unix time of the last heartbeat or call of a site', 'gauge');
  e.declare('fedlora_site_up', '1 when the site is online (heartbeat within the timeout), else 0', 'gauge');
  e.declare('fedlora_site_training_tokens_per_second', 'Training throughput a site reported (heartbeat when stored, else its newest tokens_per_s metric)', 'gauge');
  const tpsMetric = db.prepare(`SELECT value FROM metrics WHERE site_id = ? AND metric IN ('tokens_per_s', 'train_tokens_per_s') ORDER BY id DESC LIMIT 1`);
  for (const s of sites) {
    if (s.last_seen_ms !== null) e.gauge('fedlora_site_last_seen_timestamp_seconds', '', s.last_seen_ms / 1000, { site: s.id });
    e.gauge('fedlora_site_up', '', online.includes(s.id) ? 1 : 0, { site: s.id });
    const tps = s.training_tokens_per_s ?? (tpsMetric.get(s.id) as { value: number } | undefined)?.value;
    if (tps !== undefined) e.gauge('fedlora_site_training_tokens_per_second', '', tps, { site: s.id });
  }

  // ---- jobs and rounds ----
  e.declare('fedlora_jobs', 'Jobs by status', 'gauge');
  for (const r of db.prepare('SELECT status, COUNT(*) AS n FROM jobs GROUP BY status ORDER BY status').all() as { status: string; n: number }[]) {
    e.gauge('fedlora_jobs', '', r.n, { status: r.status });
  }
  const names = {
    completed: ['fedlora_rounds_completed_total', 'Rounds aggregated and published'],
    failed: ['fedlora_round_attempts_failed_total', 'Round attempts that failed (too few accepted updates)'],
    received: ['fedlora_updates_received_total', 'Updates received whole (all chunks persisted)'],
    accepted: ['fedlora_updates_accepted_total', 'Updates accepted after hash, signature and content checks'],
    rejected: ['fedlora_updates_rejected_total', 'Updates rejected (bad hash, signature, shape or non-finite values)'],
    bytes: ['fedlora_update_bytes_received_total', 'Update bytes persisted by the coordinator'],
  } as const;
  for (const [n, h] of Object.values(names)) e.declare(n, h, 'counter');
  e.declare('fedlora_job_current_round', 'Newest round of a job (0 before the first)', 'gauge');
  e.declare('fedlora_job_adapter_version', 'Newest published adapter version of a job', 'gauge');
  e.declare('fedlora_privacy_epsilon_spent', 'Differential-privacy epsilon spent by a job (RDP accountant)', 'gauge');
  e.declare('fedlora_privacy_epsilon_budget', 'Differential-privacy epsilon budget of a job', 'gauge');
  e.declare('fedlora_aggregation_duration_seconds', 'Time from the end of collection to publication of a round', 'histogram');
  e.declare('fedlora_round_duration_seconds', 'Time from opening to publication of a round attempt', 'histogram');

  const roundQ = db.prepare(`SELECT SUM(state = 'published') AS completed, SUM(state = 'failed') AS failed FROM rounds WHERE job_id = ?`);
  const updQ = db.prepare(`SELECT SUM(status != 'receiving') AS received,
      SUM(status = 'accepted' OR (status = 'discarded' AND received_bytes = size)) AS accepted,
      SUM(status = 'rejected') AS rejected, COALESCE(SUM(received_bytes), 0) AS bytes FROM updates WHERE job_id = ?`);
  const aggQ = db.prepare(`SELECT (published_ms - aggregating_ms) AS agg, (published_ms - started_ms) AS dur FROM rounds
      WHERE job_id = ? AND state = 'published' AND published_ms IS NOT NULL`);
  for (const j of d.store.jobs()) {
    const L = { job: j.id };
    const r = roundQ.get(j.id) as { completed: number | null; failed: number | null };
    const u = updQ.get(j.id) as { received: number | null; accepted: number | null; rejected: number | null; bytes: number };
    e.counter(names.completed[0], '', r.completed ?? 0, L).counter(names.failed[0], '', r.failed ?? 0, L);
    e.counter(names.received[0], '', u.received ?? 0, L).counter(names.accepted[0], '', u.accepted ?? 0, L)
      .counter(names.rejected[0], '', u.rejected ?? 0, L).counter(names.bytes[0], '', u.bytes, L);
    e.gauge('fedlora_job_current_round', '', d.store.currentRound(j.id)?.round ?? 0, L);
    e.gauge('fedlora_job_adapter_version', '', j.current_version, L);
    const dp = (JSON.parse(j.spec_json) as { privacy?: { dp?: { epsilon_budget?: number } | null } }).privacy?.dp;
    if (dp) {
      const spent = d.store.privacyLedger(j.id).reduce((a, l) => Math.max(a, l.epsilon), 0);
      e.gauge('fedlora_privacy_epsilon_spent', '', spent, L);
      if (typeof dp.epsilon_budget === 'number') e.gauge('fedlora_privacy_epsilon_budget', '', dp.epsilon_budget, L);
    }
    const t = aggQ.all(j.id) as { agg: number | null; dur: number }[];
    e.histogram('fedlora_aggregation_duration_seconds', '', AGGREGATION_BUCKETS_S, t.filter((x) => x.agg !== null).map((x) => x.agg! / 1000), L);
    e.histogram('fedlora_round_duration_seconds', '', ROUND_BUCKETS_S, t.map((x) => x.dur / 1000), L);
  }
  return e.render();
}
