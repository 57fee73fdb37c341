// The global adapter beside the local-only ones in the cross-site matrix: the figure each data
// site reported for the job's global adapter of the version the cross-evaluation used (the final
// one: the sites evaluate it in the job's last EVALUATE task, on the same held-out sets), so a row
// reads "this hospital's data: each hospital's local-only adapter, and the consortium's".
import type { MetricRow } from '../store/store.ts';

export interface GlobalColumn {
  /** Adapter version of the global column (null: no cross-evaluation yet). */
  version: number | null;
  /** values[i]: data_sites[i]'s figure for the global adapter; null = not reported (or withheld). */
  values: (number | null)[];
  cells: { data_site: string; value: number; count: number; ci_low: number | null; ci_high: number | null; round: number }[];
}

/** The global column for `dataSites` from the job's kind-global rows, at the matrix's version. */
export function globalColumn(globalRows: MetricRow[], dataSites: string[], version: number | null, metric: string | null): GlobalColumn {
  if (version === null || metric === null) return { version, values: dataSites.map(() => null), cells: [] };
  const newest = new Map<string, MetricRow>();
  for (const r of [...globalRows].sort((a, b) => a.id - b.id)) {
    if (r.kind === 'global' && r.round === version && r.metric === metric && r.subset === '' && r.eval_set === '') newest.set(r.site_id, r);
  }
  const cells = dataSites.flatMap((d) => {
    const r = newest.get(d);
    return r ? [{ data_site: d, value: r.value, count: r.count, ci_low: r.ci_low, ci_high: r.ci_high, round: r.round }] : [];
  });
  return { version, values: dataSites.map((d) => newest.get(d)?.value ?? null), cells };
}
