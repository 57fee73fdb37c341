// What researchers ask of the metrics table: "does federating help, round by round?"
//
// * summarizeMetrics: per (round, kind, metric, model_owner, subset, eval_set) the average across
//   sites, unweighted (every site counts once) and weighted by `count` (items/tokens behind each
//   value) — the consortium figure — with its 95% interval from the sites' bootstrap replicates
//   (consortium.ts). A site that reported the same figure twice (a retried evaluation) counts
//   once, with its newest value.
// * crossEvalMatrix: {data site x model owner} from kind `cross` (site_id evaluated
//   model_owner's local-only adapter on its own held-out data); the newest round per cell.
//
// Rounds: the coordinator stores MetricsReport.round as sent. The site agent reports a
// `global` metric with round = the adapter version it evaluated (= the round that produced
// it) and a `local` metric with round = the round whose training produced the local-only
// adapter, so `round` lines the two up directly: global(r) vs local(r).
import type { MetricRow } from '../store/store.ts';
import { pooledInterval } from './consortium.ts';

export interface SummaryRow {
  round: number;
  kind: string;
  metric: string;
  model_owner: string;
  subset: string;
  eval_set: string;
  sites: number;
  count: number;
  mean: number;
  /** The consortium figure: weighted by count (null when no site reported a count). */
  weighted_mean: number | null;
  /** 95% interval of weighted_mean (stratified bootstrap over the sites' replicates); null when a site sent none. */
  ci_low: number | null;
  ci_high: number | null;
  min: number;
  max: number;
}

const key = (...p: (string | number)[]) => p.join('\u0000');

/** Newest row per (round, site, kind, metric, owner). Rows must be in insertion order (id). */
function latestPerSite(rows: MetricRow[]): MetricRow[] {
  const m = new Map<string, MetricRow>();
  for (const r of [...rows].sort((a, b) => a.id - b.id)) m.set(key(r.round, r.site_id, r.kind, r.metric, r.model_owner, r.subset, r.eval_set), r);
  return [...m.values()];
}

/** `replicates`: the sites' bootstrap replicates by metric row id (consortium.ts replicatesOf). */
export function summarizeMetrics(rows: MetricRow[], replicates: Map<number, Float32Array> = new Map()): SummaryRow[] {
  const groups = new Map<string, MetricRow[]>();
  for (const r of latestPerSite(rows)) {
    const k = key(r.round, r.kind, r.metric, r.model_owner, r.subset, r.eval_set);
    const g = groups.get(k);
    if (g) g.push(r);
    else groups.set(k, [r]);
  }
  const out: SummaryRow[] = [];
  for (const g of groups.values()) {
    const count = g.reduce((a, r) => a + r.count, 0);
    const ci = count > 0 ? pooledInterval(g.map((r) => ({ count: r.count, replicates: replicates.get(r.id) }))) : null;
    out.push({
      round: g[0].round, kind: g[0].kind, metric: g[0].metric, model_owner: g[0].model_owner, subset: g[0].subset, eval_set: g[0].eval_set, sites: g.length, count,
      mean: g.reduce((a, r) => a + r.value, 0) / g.length,
      // No counts reported (all 0): a weighted mean is undefined, not the unweighted one.
      weighted_mean: count > 0 ? g.reduce((a, r) => a + r.value * r.count, 0) / count : null,
      ci_low: ci?.[0] ?? null, ci_high: ci?.[1] ?? null,
      min: Math.min(...g.map((r) => r.value)), max: Math.max(...g.map((r) => r.value)),
    });
  }
  return out.sort((a, b) => a.round - b.round || a.kind.localeCompare(b.kind) || a.metric.localeCompare(b.metric) || a.model_owner.localeCompare(b.model_owner)
    || a.eval_set.localeCompare(b.eval_set) || a.subset.localeCompare(b.subset));
}

export interface CrossEvalCell { data_site: string; model_owner: string; value: number; count: number; ci_low: number | null; ci_high: number | null; round: number; adapter_version: number | null }
export interface CrossEvalMatrix {
  available: boolean;
  metric: string | null;
  /** metrics present among the cross rows (pick one with ?metric=) */
  metrics: string[];
  data_sites: string[];
  model_owners: string[];
  /** values[i][j]: data_sites[i] evaluating model_owners[j]'s adapter; null = not evaluated */
  values: (number | null)[][];
  cells: CrossEvalCell[];
}

/** Prefer accuracy, then loss, then whatever came first, when no metric is asked for. Whole-set
 *  figures on the held-out sets only. */
export function crossEvalMatrix(rows: MetricRow[], metric?: string): CrossEvalMatrix {
  const cross = rows.filter((r) => r.kind === 'cross' && r.subset === '' && r.eval_set === '');
  const metrics = [...new Set(cross.map((r) => r.metric))].sort();
  const chosen = metric ?? (metrics.includes('accuracy') ? 'accuracy' : metrics.includes('loss') ? 'loss' : metrics[0]);
  const newest = new Map<string, MetricRow>();
  for (const r of [...cross].sort((a, b) => a.round - b.round || a.id - b.id)) {
    if (r.metric === chosen) newest.set(key(r.site_id, r.model_owner), r);
  }
  const cells = [...newest.values()].map((r) => ({ data_site: r.site_id, model_owner: r.model_owner, value: r.value, count: r.count, ci_low: r.ci_low, ci_high: r.ci_high, round: r.round, adapter_version: r.adapter_version }));
  const dataSites = [...new Set(cells.map((c) => c.data_site))].sort();
  const owners = [...new Set(cells.map((c) => c.model_owner))].sort();
  const values = dataSites.map((d) => owners.map((o) => cells.find((c) => c.data_site === d && c.model_owner === o)?.value ?? null));
  return { available: cells.length > 0, metric: cells.length ? chosen ?? null : (metric ?? null), metrics, data_sites: dataSites, model_owners: owners, values, cells };
}

function csvField(v: unknown): string {
  const s = v === null || v === undefined ? '' : String(v);
  // Quote when needed; a leading =,+,-,@ is prefixed so spreadsheets do not run it as a formula.
  const safe = /^[=+\-@]/.test(s) && typeof v === 'string' ? `'${s}` : s;
  return /[",\n\r]/.test(safe) ? `"${safe.replace(/"/g, '""')}"` : safe;
}

export function toCsv<T extends object>(columns: readonly (keyof T & string)[], rows: T[]): string {
  return [columns.join(','), ...rows.map((r) => columns.map((c) => csvField(r[c])).join(','))].join('\n') + '\n';
}

export const SUMMARY_COLUMNS = ['round', 'kind', 'metric', 'model_owner', 'subset', 'eval_set', 'sites', 'count', 'mean', 'weighted_mean', 'ci_low', 'ci_high', 'min', 'max'] as const;
export const CROSS_COLUMNS = ['data_site', 'model_owner', 'value', 'count', 'ci_low', 'ci_high', 'round', 'adapter_version'] as const;
