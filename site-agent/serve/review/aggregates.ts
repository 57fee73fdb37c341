// What the doctors' review says about each adapter version: on the first doctor's rating of each
// rated case, counts and proportions of correct / partly / wrong and of unsafe answers with 95%
// Wilson intervals and the mean 1-5 score; on cases rated by two doctors, Cohen's kappa between
// the first and the (blind) second rating for correctness and for safety. These aggregates, and
// nothing of a case, are what may leave the site (reviewMetrics), withheld below the site's
// evaluation.min_items.
import type Database from 'better-sqlite3-multiple-ciphers';
import { cohenKappa, type Kappa } from '../../data/labels/kappa.ts';
import { wilson } from '../../eval/safety/stats.ts';
import type { SiteReportMetric } from '../../agent/metrics-report.ts';
import { CORRECTNESS, type Correctness, type Safety } from './ratings.ts';

export interface Proportion {
  count: number;
  n: number;
  rate: number | null;
  /** 95% Wilson interval. */
  ci: [number, number];
}

export interface VersionReview {
  adapter: string;
  jobId: string | null;
  version: number | null;
  /** Cases sampled, rated by at least one doctor, and needing / having two doctors. */
  cases: { sampled: number; rated: number; double: number; doubleRated: number };
  correctness: Record<Correctness, Proportion>;
  unsafe: Proportion;
  meanScore: number | null;
  kappa: { correctness: Kappa; safety: Kappa };
  /** Doctors who rated, and their ratings. */
  reviewers: Record<string, number>;
}

const prop = (count: number, n: number): Proportion => ({ count, n, rate: n ? count / n : null, ci: wilson(count, n) });

type Row = { case_id: number; user_name: string; correctness: Correctness; safety: Safety; score: number; reads_before: number };

export function reviewOf(db: Database.Database, adapter: string): VersionReview {
  const c = db.prepare('SELECT job_id, version, count(*) AS sampled, sum(needed = 2) AS double FROM review_cases WHERE adapter_label = ?').get(adapter) as { job_id: string | null; version: number | null; sampled: number; double: number | null };
  const rows = db.prepare(`SELECT r.case_id, r.user_name, r.correctness, r.safety, r.score, r.reads_before FROM review_ratings r JOIN review_cases c ON c.id = r.case_id
      WHERE c.adapter_label = ? ORDER BY r.case_id, r.id`).all(adapter) as Row[];
  const byCase = new Map<number, Row[]>();
  for (const r of rows) byCase.set(r.case_id, [...(byCase.get(r.case_id) ?? []), r]);
  const first = [...byCase.values()].map((rs) => rs[0]);
  const pairs = [...byCase.values()].filter((rs) => rs.length >= 2);
  const n = first.length;
  const reviewers: Record<string, number> = {};
  for (const r of rows) reviewers[r.user_name] = (reviewers[r.user_name] ?? 0) + 1;
  return {
    adapter, jobId: c.job_id, version: c.version,
    cases: { sampled: c.sampled, rated: n, double: c.double ?? 0, doubleRated: pairs.length },
    correctness: Object.fromEntries(CORRECTNESS.map((k) => [k, prop(first.filter((r) => r.correctness === k).length, n)])) as Record<Correctness, Proportion>,
    unsafe: prop(first.filter((r) => r.safety === 'unsafe').length, n),
    meanScore: n ? first.reduce((s, r) => s + r.score, 0) / n : null,
    kappa: {
      correctness: cohenKappa(pairs.map((rs) => [rs[0].correctness, rs[1].correctness] as const)),
      safety: cohenKappa(pairs.map((rs) => [rs[0].safety, rs[1].safety] as const)),
    },
    reviewers,
  };
}

/** Every version with review cases, in the order they were first sampled. */
export function reviewReport(db: Database.Database): VersionReview[] {
  const labels = db.prepare('SELECT adapter_label FROM review_cases GROUP BY adapter_label ORDER BY min(id)').pluck().all() as string[];
  return labels.map((l) => reviewOf(db, l));
}

/** The figures sent to the coordinator for one version (eval_set 'review', kind 'global'):
 *  proportions with their Wilson intervals and counts, the mean score, and kappa with the number
 *  of double-rated cases; nothing below minItems rated cases (kappa: double-rated cases). */
export function reviewMetrics(r: VersionReview, minItems: number): SiteReportMetric[] {
  if (r.version === null || r.cases.rated < minItems) return [];
  const base = { kind: 'global', adapterVersion: r.version, evalSet: 'review' };
  const p = (name: string, x: Proportion): SiteReportMetric => ({ ...base, name, value: x.rate!, count: x.n, ci: x.ci });
  const out: SiteReportMetric[] = [
    ...CORRECTNESS.map((k) => p(`review_${k}`, r.correctness[k])),
    p('review_unsafe', r.unsafe),
    { ...base, name: 'review_score_mean', value: r.meanScore!, count: r.cases.rated },
  ];
  for (const [name, k] of [['review_kappa_correctness', r.kappa.correctness], ['review_kappa_safety', r.kappa.safety]] as const) {
    if (k.n >= minItems && k.kappa !== null) out.push({ ...base, name, value: k.kappa, count: k.n });
  }
  return out;
}

const pc = (x: Proportion): string => (x.rate === null ? 'n/a' : `${x.count}/${x.n} = ${(100 * x.rate).toFixed(1)}% (95% CI ${(100 * x.ci[0]).toFixed(1)}–${(100 * x.ci[1]).toFixed(1)}%)`);
const kf = (k: Kappa): string => (k.n === 0 ? 'no case rated by two doctors yet' : `${k.kappa === null ? 'n/a (one label throughout)' : k.kappa.toFixed(3)} on ${k.n} cases (observed ${k.observed.toFixed(3)}, chance ${k.expected.toFixed(3)})`);

export function formatReview(r: VersionReview, minItems: number): string {
  const sent = reviewMetrics(r, minItems).length > 0;
  return [
    `doctors' review of ${r.adapter}: ${r.cases.sampled} cases sampled, ${r.cases.rated} rated (${r.cases.doubleRated}/${r.cases.double} of the double-review cases by two doctors); reviewers: ${Object.entries(r.reviewers).map(([u, n]) => `${u} ${n}`).join(', ') || 'none yet'}`,
    `  correct   ${pc(r.correctness.correct)}`,
    `  partly    ${pc(r.correctness.partly)}`,
    `  wrong     ${pc(r.correctness.wrong)}`,
    `  unsafe    ${pc(r.unsafe)}`,
    `  mean score (1-5) ${r.meanScore === null ? 'n/a' : r.meanScore.toFixed(2)}`,
    `  kappa correctness ${kf(r.kappa.correctness)}`,
    `  kappa safety      ${kf(r.kappa.safety)}`,
    `  to the coordinator: ${r.version === null ? 'not sent (not a federated version)' : sent ? 'aggregates only (counts, proportions, mean, kappa)' : `withheld (fewer than evaluation.min_items = ${minItems} rated cases)`}`,
  ].join('\n');
}

/** One line for the release gate's list of candidates. */
export function reviewLine(r: VersionReview): string {
  const p = (x: Proportion) => (x.rate === null ? 'n/a' : `${(100 * x.rate).toFixed(0)}% [${(100 * x.ci[0]).toFixed(0)}–${(100 * x.ci[1]).toFixed(0)}%]`);
  const k = (x: Kappa) => (x.kappa === null ? 'n/a' : x.kappa.toFixed(2));
  return `doctors' review: ${r.cases.rated}/${r.cases.sampled} rated; correct ${p(r.correctness.correct)}, partly ${p(r.correctness.partly)}, unsafe ${p(r.unsafe)}; mean score ${r.meanScore === null ? 'n/a' : r.meanScore.toFixed(2)}; kappa correctness ${k(r.kappa.correctness)}, safety ${k(r.kappa.safety)} (${r.cases.doubleRated} double-rated)`;
}
