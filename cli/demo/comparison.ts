// report.json's comparison: where the global adapter beats local-only training and where it does
// not, after the last round, per hospital, on its own held-out items and on the consortium-wide
// balanced test set (every specialty equally, so a hospital's rare specialties count as much as
// its own), and for the consortium as a whole. Each figure comes with its 95% bootstrap interval;
// a side "wins" only when its interval lies wholly above the other's (a conservative reading: the
// two intervals come from the same items, so a real but small difference may show as overlap).
import { withInterval, type Estimate } from './report-figures.ts';

export type Verdict = 'global better' | 'local-only better' | 'no clear difference';

export interface ComparisonRow {
  site: string;
  /** What the site's data is: "mostly Cardiology", "small (30 records)". */
  note: string;
  /** 'held-out' (the site's own test items) or the shared set's eval set name. */
  eval_set: string;
  metric: string;
  global: Estimate | null;
  local: Estimate | null;
  /** global − local (null when either is missing). */
  difference: number | null;
  verdict: Verdict | null;
}

export interface Comparison {
  round: number;
  metric: string;
  /** Chance for the multiple-choice items (1 / options). */
  chance: number | null;
  rule: string;
  rows: ComparisonRow[];
  /** The consortium figures (all hospitals, weighted by count) per eval set. */
  consortium: { eval_set: string; global: Estimate | null; local: Estimate | null; difference: number | null; verdict: Verdict | null }[];
}

export const COMPARISON_RULE = 'global better / local-only better when its 95% interval lies wholly above the other\'s; otherwise no clear difference';

export function verdictOf(g: Estimate | null | undefined, l: Estimate | null | undefined): Verdict | null {
  if (!g || !l || g.ci_low === null || g.ci_high === null || l.ci_low === null || l.ci_high === null) return null;
  if (g.ci_low > l.ci_high) return 'global better';
  if (l.ci_low > g.ci_high) return 'local-only better';
  return 'no clear difference';
}

type Figures = Record<string, { global: Record<string, Estimate>; local: Record<string, Estimate> }>;

export function buildComparison(o: {
  round: number; metric: string; chance: number | null; sites: { site: string; note: string }[];
  sets: { eval_set: string; figures: Figures; consortium: { global: Record<string, Estimate>; local: Record<string, Estimate> } }[];
}): Comparison {
  const diff = (g: Estimate | null, l: Estimate | null) => (g && l ? g.value - l.value : null);
  const rows: ComparisonRow[] = [];
  for (const set of o.sets) {
    for (const s of o.sites) {
      const g = set.figures[s.site]?.global[o.metric] ?? null, l = set.figures[s.site]?.local[o.metric] ?? null;
      rows.push({ site: s.site, note: s.note, eval_set: set.eval_set, metric: o.metric, global: g, local: l, difference: diff(g, l), verdict: verdictOf(g, l) });
    }
  }
  const consortium = o.sets.map((set) => {
    const g = set.consortium.global[o.metric] ?? null, l = set.consortium.local[o.metric] ?? null;
    return { eval_set: set.eval_set, global: g, local: l, difference: diff(g, l), verdict: verdictOf(g, l) };
  });
  return { round: o.round, metric: o.metric, chance: o.chance, rule: COMPARISON_RULE, rows, consortium };
}

export function printComparison(c: Comparison, log: (l: string) => void): void {
  log(`where the global adapter beats local-only training (${c.metric} after round ${c.round}, 95% intervals${c.chance !== null ? `; chance ${c.chance.toFixed(2)}` : ''}):`);
  log(`  (${c.rule})`);
  const sign = (d: number | null) => (d === null ? '-' : `${d >= 0 ? '+' : ''}${d.toFixed(3)}`);
  for (const r of c.rows) {
    log(`  ${r.site} (${r.note}), ${r.eval_set}: global ${withInterval(r.global ?? undefined)} vs local-only ${withInterval(r.local ?? undefined)} (${sign(r.difference)}) → ${r.verdict ?? 'not reported'}`);
  }
  for (const r of c.consortium) {
    log(`  consortium, ${r.eval_set}: global ${withInterval(r.global ?? undefined)} vs local-only ${withInterval(r.local ?? undefined)} (${sign(r.difference)}) → ${r.verdict ?? 'not reported'}`);
  }
}
