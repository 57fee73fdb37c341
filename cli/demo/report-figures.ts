// The evaluation figures of report.json, from the coordinator's metric rows and consortium summary:
// each site's whole-set held-out figures with their 95% intervals, the consortium figure per round
// (count-weighted across sites, with the pooled interval: coordinator/metrics/consortium.ts), and
// per-diagnosis recall (sensitivity) of the global adapter, per site and for the consortium.

export interface ApiMetricRow { round: number; site_id: string; kind: string; metric: string; subset: string; eval_set: string; value: number; count: number; ci_low: number | null; ci_high: number | null }
export interface ApiSummaryRow { round: number; kind: string; metric: string; model_owner: string; subset: string; eval_set: string; sites: number; count: number; weighted_mean: number | null; ci_low: number | null; ci_high: number | null }

/** A figure with its 95% interval (null: the site or a contributing site sent none). */
export interface Estimate { value: number; ci_low: number | null; ci_high: number | null; count: number }
export type ConsortiumFigure = Estimate & { sites: number };
export interface DiagnosisRecall { recall: Estimate; support: number }

const wholeSet = (r: { subset: string; eval_set: string }, evalSet = '') => r.subset === '' && r.eval_set === evalSet;
const DX = 'diagnosis=';
const isDiagnosis = (subset: string) => subset.startsWith(DX) && !subset.includes(';');
const estimate = (r: { value: number; ci_low: number | null; ci_high: number | null; count: number }): Estimate => ({ value: r.value, ci_low: r.ci_low, ci_high: r.ci_high, count: r.count });

/** site -> kind -> metric -> value and interval (whole held-out set, or the whole of a shared
 *  eval set; training figures left out); kind personal: the site's
 *  personalised adapter of the round's version. */
export function siteFigures(rows: ApiMetricRow[], round: number, sites: string[], evalSet = ''): Record<string, Record<'global' | 'local' | 'personal', Record<string, Estimate>>> {
  const pick = (site: string, kind: string) => {
    const o: Record<string, Estimate> = {};
    for (const m of rows) if (m.round === round && m.kind === kind && m.site_id === site && wholeSet(m, evalSet) && !m.metric.startsWith('train_')) o[m.metric] = estimate(m);
    return o;
  };
  return Object.fromEntries(sites.map((s) => [s, { global: pick(s, 'global'), local: pick(s, 'local'), personal: pick(s, 'personal') }]));
}

/** kind -> metric -> the consortium figure of a round (whole held-out sets, the job's own adapters). */
export function consortiumFigures(summary: ApiSummaryRow[], round: number, evalSet = ''): Record<'global' | 'local' | 'personal', Record<string, ConsortiumFigure>> {
  const pick = (kind: string) => {
    const o: Record<string, ConsortiumFigure> = {};
    for (const s of summary) {
      if (s.round !== round || s.kind !== kind || s.model_owner !== '' || !wholeSet(s, evalSet) || s.weighted_mean === null || s.metric.startsWith('train_')) continue;
      o[s.metric] = { value: s.weighted_mean, ci_low: s.ci_low, ci_high: s.ci_high, count: s.count, sites: s.sites };
    }
    return o;
  };
  return { global: pick('global'), local: pick('local'), personal: pick('personal') };
}

/** A site's figures of a global version on one part of its held-out set (subset, e.g. data=earlier). */
export function subsetFigures(rows: ApiMetricRow[], round: number, site: string, subset: string): Record<string, number> {
  const o: Record<string, number> = {};
  for (const m of rows) if (m.round === round && m.kind === 'global' && m.site_id === site && m.subset === subset && m.eval_set === '') o[m.metric] = m.value;
  return o;
}

/** Recall (sensitivity) per diagnosis of a round's global adapter: the consortium's and each site's. */
export function diagnosisRecall(rows: ApiMetricRow[], summary: ApiSummaryRow[], round: number, sites: string[]): { consortium: Record<string, DiagnosisRecall & { sites: number }>; sites: Record<string, Record<string, DiagnosisRecall>> } {
  const consortium: Record<string, DiagnosisRecall & { sites: number }> = {};
  const at = summary.filter((s) => s.round === round && s.kind === 'global' && s.model_owner === '' && s.eval_set === '' && isDiagnosis(s.subset));
  for (const s of at) {
    if (s.metric !== 'recall' || s.weighted_mean === null) continue;
    consortium[s.subset.slice(DX.length)] = { recall: { value: s.weighted_mean, ci_low: s.ci_low, ci_high: s.ci_high, count: s.count }, support: s.count, sites: s.sites };
  }
  const perSite = Object.fromEntries(sites.map((site) => {
    const mine = rows.filter((m) => m.round === round && m.kind === 'global' && m.site_id === site && m.eval_set === '' && isDiagnosis(m.subset) && m.metric === 'recall');
    return [site, Object.fromEntries(mine.map((m) => [m.subset.slice(DX.length), { recall: estimate(m), support: m.count }]))];
  }));
  return { consortium, sites: perSite };
}

/** "0.612 [0.551, 0.670]" */
export function withInterval(e: Estimate | undefined, d = 3): string {
  if (!e || !Number.isFinite(e.value)) return '-';
  return e.ci_low === null || e.ci_high === null ? e.value.toFixed(d) : `${e.value.toFixed(d)} [${e.ci_low.toFixed(d)}, ${e.ci_high.toFixed(d)}]`;
}
