// Which sites' per-site data a caller sees, from each site's own policy share_site_metrics
// (sent in its heartbeat; site-agent/config.ts):
//   researchers  admins and researchers see the site's per-site metrics;
//   consortium   only admins (the consortium's operators) see them — the default, also for a
//                site that never reported a policy;
//   none         no API reader sees them, admins included: the site counts in aggregates only.
// Per-site data = metric rows, cross-evaluation cells (both the data site and the model owner
// must allow it), and in a round view the examples, norm and reasons of a site's update/task.
// Aggregates: a summary row with exactly one hidden contributor is withheld (its value would be
// n·mean − the visible values); with more, min and max are blanked (each is one site's value);
// a row about a hidden site's adapter (model_owner) is withheld.
import type { Database } from 'better-sqlite3-multiple-ciphers';
import type { MetricRow } from '../store/store.ts';
import { summarizeMetrics, type SummaryRow } from '../metrics/summary.ts';
import { DEFAULT_SHARE_POLICY, type SharePolicy } from '../../shared/metrics-sharing.ts';
import type { Role } from './access.ts';

export { DEFAULT_SHARE_POLICY, type SharePolicy };

export type CanSee = (siteId: string) => boolean;

function roleMaySee(role: Role, policy: SharePolicy): boolean {
  if (policy === 'none') return false;
  if (role === 'admin') return true;
  return role === 'researcher' && policy === 'researchers';
}

/** Each site's policy as last reported (sites that never reported: the default). */
export function sharePolicies(db: Database): Map<string, SharePolicy> {
  const rows = db.prepare('SELECT id, share_site_metrics AS p FROM sites').all() as { id: string; p: SharePolicy | null }[];
  return new Map(rows.map((r) => [r.id, r.p ?? DEFAULT_SHARE_POLICY]));
}

export function siteVisibility(db: Database, role: Role): CanSee {
  const policies = sharePolicies(db);
  return (site) => roleMaySee(role, policies.get(site) ?? DEFAULT_SHARE_POLICY);
}

/** A metric row is per-site data of its reporting site and, when set, of the model owner. */
const rowVisible = (canSee: CanSee) => (r: Pick<MetricRow, 'site_id' | 'model_owner'>) => canSee(r.site_id) && (r.model_owner === '' || canSee(r.model_owner));

export function visibleRows<T extends Pick<MetricRow, 'site_id' | 'model_owner'>>(rows: T[], canSee: CanSee): { rows: T[]; withheldSites: string[] } {
  const ok = rowVisible(canSee);
  const shown = rows.filter(ok);
  const withheld = new Set(rows.filter((r) => !ok(r)).flatMap((r) => [r.site_id, r.model_owner].filter((s) => s !== '' && !canSee(s))));
  return { rows: shown, withheldSites: [...withheld].sort() };
}

export type VisibleSummaryRow = Omit<SummaryRow, 'min' | 'max'> & { min: number | null; max: number | null };

const groupKey = (r: Pick<SummaryRow, 'round' | 'kind' | 'metric' | 'model_owner' | 'subset' | 'eval_set'>) => [r.round, r.kind, r.metric, r.model_owner, r.subset, r.eval_set].join('\u0000');

/** Averages across sites for a caller who may not see every contributor (rules at the top). */
export function visibleSummary(rows: MetricRow[], canSee: CanSee, replicates?: Map<number, Float32Array>): { summary: VisibleSummaryRow[]; withheld: number } {
  const shown = rowVisible(canSee);
  const visibleCount = new Map(summarizeMetrics(rows.filter(shown)).map((r) => [groupKey(r), r.sites]));
  const summary: VisibleSummaryRow[] = [];
  let withheld = 0;
  for (const r of summarizeMetrics(rows, replicates)) {
    const hidden = r.sites - (visibleCount.get(groupKey(r)) ?? 0);
    if (hidden === 0) summary.push(r);
    else if (r.model_owner !== '' && !canSee(r.model_owner)) withheld++;
    else if (hidden === 1) withheld++;
    else summary.push({ ...r, min: null, max: null });
  }
  return { summary, withheld };
}
