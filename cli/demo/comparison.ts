// report.json's comparison: where the global adapter beats local-only training and where it does
// not, after the last round, per hospital, on its own held-out items and on the consortium-wide
// balanced test set (every specialty equally, so a hospital's rare specialties count as much as
// its own), and for the consortium as a whole. Both adapters are scored on the same items, so
// the verdict reads the paired difference each site reports (accuracy_minus_local: global −
// local-only, the items resampled once for both; site-agent/agent/paired-comparison.ts) and its
// 95% interval: global better when the interval lies above 0, local-only better when below. The
// consortium's difference is the sites' pooled (count-weighted, stratified bootstrap). Where a
// site sent no paired difference (an older agent), the rule falls back to the separate
// intervals: a side wins only when its interval lies wholly above the other's.
import { withInterval, type Estimate } from './report-figures.ts';

export type Verdict = 'global better' | 'local-only better' | 'no clear difference';

/** The site's paired difference of the comparison metric (global − local-only, same items). */
export const pairedMetricOf = (metric: string): string => `${metric}_minus_local`;

/** The consortium's line for one evaluation set: the global adapter against local-only training. */
export interface ConsortiumRow {
  /** 'held-out' (the site's own test items) or the shared set's eval set name. */
  eval_set: string;
  global: Estimate | null;
  local: Estimate | null;
  /** global − local (null when either is missing). */
  difference: number | null;
  /** The paired difference global − local-only with its 95% interval (null: not reported). */
  paired: Estimate | null;
  /** The global adapter's interval lies above chance (null: no interval or no chance level). */
  global_above_chance: boolean | null;
  verdict: Verdict | null;
  /** What the verdict read: the paired difference's interval, or (without one) the two separate intervals. */
  basis: 'paired difference' | 'separate intervals' | null;
}

/** One hospital's line: the same figures, for its site, with what its data is and the metric. */
export interface ComparisonRow extends ConsortiumRow {
  site: string;
  /** What the site's data is: "mostly Cardiology", "small (30 records)". */
  note: string;
  metric: string;
}

export interface Comparison {
  round: number;
  metric: string;
  /** Chance for the multiple-choice items (1 / options). */
  chance: number | null;
  rule: string;
  rows: ComparisonRow[];
  /** The consortium figures (all hospitals, weighted by count) per eval set. */
  consortium: ConsortiumRow[];
}

export const COMPARISON_RULE = 'global better / local-only better when the 95% interval of the paired difference global − local-only (the same items, resampled together) lies above / below 0; otherwise no clear difference (without a paired difference: when one side\'s 95% interval lies wholly above the other\'s)';

/** The conservative reading of two separate intervals (no paired difference reported). */
export function verdictOf(g: Estimate | null | undefined, l: Estimate | null | undefined): Verdict | null {
  if (!g || !l || g.ci_low === null || g.ci_high === null || l.ci_low === null || l.ci_high === null) return null;
  if (g.ci_low > l.ci_high) return 'global better';
  if (l.ci_low > g.ci_high) return 'local-only better';
  return 'no clear difference';
}

/** The verdict of a paired difference global − local-only: its interval excludes 0, or not. */
export function pairedVerdict(d: Estimate | null | undefined): Verdict | null {
  if (!d || d.ci_low === null || d.ci_high === null) return null;
  if (d.ci_low > 0) return 'global better';
  if (d.ci_high < 0) return 'local-only better';
  return 'no clear difference';
}

function judge(g: Estimate | null, l: Estimate | null, paired: Estimate | null): Pick<ComparisonRow, 'verdict' | 'basis'> {
  const p = pairedVerdict(paired);
  if (p) return { verdict: p, basis: 'paired difference' };
  const s = verdictOf(g, l);
  return { verdict: s, basis: s ? 'separate intervals' : null };
}

const aboveChance = (g: Estimate | null, chance: number | null) => (g && g.ci_low !== null && chance !== null ? g.ci_low > chance : null);

type Figures = Record<string, { global: Record<string, Estimate>; local: Record<string, Estimate> }>;

export function buildComparison(o: {
  round: number; metric: string; chance: number | null; sites: { site: string; note: string }[];
  sets: { eval_set: string; figures: Figures; consortium: { global: Record<string, Estimate>; local: Record<string, Estimate> } }[];
}): Comparison {
  const diff = (g: Estimate | null, l: Estimate | null) => (g && l ? g.value - l.value : null);
  const pm = pairedMetricOf(o.metric);
  const rows: ComparisonRow[] = [];
  for (const set of o.sets) {
    for (const s of o.sites) {
      const f = set.figures[s.site];
      const g = f?.global[o.metric] ?? null, l = f?.local[o.metric] ?? null, paired = f?.global[pm] ?? null;
      rows.push({ site: s.site, note: s.note, eval_set: set.eval_set, metric: o.metric, global: g, local: l, difference: diff(g, l), paired, global_above_chance: aboveChance(g, o.chance), ...judge(g, l, paired) });
    }
  }
  const consortium = o.sets.map((set) => {
    const g = set.consortium.global[o.metric] ?? null, l = set.consortium.local[o.metric] ?? null, paired = set.consortium.global[pm] ?? null;
    return { eval_set: set.eval_set, global: g, local: l, difference: diff(g, l), paired, global_above_chance: aboveChance(g, o.chance), ...judge(g, l, paired) };
  });
  return { round: o.round, metric: o.metric, chance: o.chance, rule: COMPARISON_RULE, rows, consortium };
}

export function printComparison(c: Comparison, log: (l: string) => void): void {
  log(`where the global adapter beats local-only training (${c.metric} after round ${c.round}, 95% intervals${c.chance !== null ? `; chance ${c.chance.toFixed(2)}` : ''}):`);
  log(`  (${c.rule})`);
  const sign = (d: number | null) => (d === null ? '-' : `${d >= 0 ? '+' : ''}${d.toFixed(3)}`);
  const signed = (e: Estimate) => `${sign(e.value)}${e.ci_low !== null && e.ci_high !== null ? ` [${sign(e.ci_low)}, ${sign(e.ci_high)}]` : ''}`;
  const chance = (r: { global_above_chance: boolean | null }) => (r.global_above_chance === null ? '' : r.global_above_chance ? ', above chance' : ', not clearly above chance');
  const line = (who: string, r: ConsortiumRow) => {
    const d = r.paired ? `paired difference ${signed(r.paired)}` : `difference ${sign(r.difference)}`;
    log(`  ${who}, ${r.eval_set}: global ${withInterval(r.global ?? undefined)}${chance(r)} vs local-only ${withInterval(r.local ?? undefined)}; ${d} → ${r.verdict ?? 'not reported'}`);
  };
  for (const r of c.rows) line(`${r.site} (${r.note})`, r);
  for (const r of c.consortium) line('consortium', r);
}
