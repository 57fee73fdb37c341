// The site agent's Prometheus /metrics (text format 0.0.4). Egress counters are recomputed
// from the audit log (persisted, so they do not reset on restart); rounds done, throughput and
// connectivity come from the running agent.
import type { Database } from 'better-sqlite3-multiple-ciphers';
import { Exposition } from '../../shared/prometheus.ts';
import { egressTotals } from './site-view.ts';

const STATES = ['starting', 'connecting', 'idle', 'training', 'uploading', 'evaluating', 'stopped'];

export function siteMetricsText(status: Record<string, unknown>, db: Database): string {
  const e = new Exposition();
  const rounds = Array.isArray(status.rounds) ? (status.rounds as { status: string }[]) : [];
  const t = egressTotals(db);
  e.counter('fedlora_site_rounds_done_total', 'Tasks (rounds) this agent finished since it started', rounds.filter((r) => r.status === 'done').length);
  e.counter('fedlora_site_rounds_failed_total', 'Tasks (rounds) that failed at this site since the agent started', rounds.filter((r) => r.status !== 'done').length);
  e.counter('fedlora_site_updates_sent_total', 'Adapter updates sent to the coordinator (from the audit log)', t.updates);
  e.counter('fedlora_site_update_bytes_sent_total', 'Bytes of adapter updates sent to the coordinator (from the audit log)', t.update_bytes);
  e.counter('fedlora_site_metric_reports_sent_total', 'Aggregate metric reports sent to the coordinator (from the audit log)', t.metric_reports);
  e.gauge('fedlora_site_training_tokens_per_second', 'Training throughput of the current or last local training', Number(status.trainingTokensPerSecond ?? 0) || 0);
  e.gauge('fedlora_site_connected', '1 when the agent reaches the coordinator (last heartbeat or task stream succeeded)', status.connected === true ? 1 : 0);
  const state = String(status.state ?? '');
  for (const s of STATES) e.gauge('fedlora_site_state', 'Current agent state (1 for the current one)', s === state ? 1 : 0, { state: s });
  return e.render();
}
