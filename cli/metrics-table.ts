// `fedlora job metrics --format table`: the figures as a clinician reads them — value and 95%
// interval side by side — from the API's rows (per site) or summary (consortium figures).

interface Row { round: number; kind: string; metric: string; subset: string; eval_set: string; count: number; ci_low: number | null; ci_high: number | null }
export type SiteRow = Row & { site_id: string; model_owner: string; value: number };
export type SummaryRow = Row & { model_owner: string; sites: number; weighted_mean: number | null };

const num = (v: number | null | undefined) => (v === null || v === undefined || !Number.isFinite(v) ? '–' : Math.abs(v) >= 1000 ? v.toFixed(0) : Math.abs(v) >= 10 ? v.toFixed(2) : v.toFixed(4));
const interval = (r: Row) => (r.ci_low === null || r.ci_high === null ? '' : `[${num(r.ci_low)}, ${num(r.ci_high)}]`);
const what = (r: Row & { model_owner: string }) => [r.metric, r.subset && `(${r.subset})`, r.eval_set && `@${r.eval_set}`, r.model_owner && `owner ${r.model_owner}`].filter(Boolean).join(' ');

function render(head: string[], body: string[][]): string {
  const w = head.map((h, i) => Math.max(h.length, ...body.map((r) => r[i].length)));
  return [head, ...body].map((r) => r.map((c, i) => c.padEnd(w[i])).join('  ').trimEnd()).join('\n') + '\n';
}

export function siteTable(rows: SiteRow[]): string {
  return render(['round', 'kind', 'site', 'figure', 'value', '95% CI', 'n'], rows.map((r) => [String(r.round), r.kind, r.site_id, what(r), num(r.value), interval(r), String(r.count)]));
}

export function summaryTable(rows: SummaryRow[]): string {
  return render(['round', 'kind', 'figure', 'consortium', '95% CI', 'sites', 'n'], rows.map((r) => [String(r.round), r.kind, what(r), num(r.weighted_mean), interval(r), String(r.sites), String(r.count)]));
}
