// The demo's report.json, built from the coordinator's HTTP API (what a researcher sees):
// per round, the participating sites, their example counts, the published adapter version and
// sha256, each site's held-out metrics for the global adapter and its local-only baseline, and
// for a DP job the privacy ledger's epsilon after each round (with Poisson sampling also the
// hospitals each round sampled). Evaluation figures carry their 95% bootstrap intervals; each round
// also has the consortium figures (count-weighted across sites, pooled interval) and the global
// adapter's recall per diagnosis (report-figures.ts). A site's personalised adapter of each
// version (a few local steps on it, never sent) is the third kind beside global and local-only.
// A job continued on new records (data periods) also gets, per round, each site's figures on its
// earlier and its new held-out cases, and the forgetting of each continuation: the earlier
// cases' loss and accuracy against the version that period started from.
import { api, type ApiTarget } from '../../coordinator/http/client.ts';
import { consortiumFigures, diagnosisRecall, siteFigures, subsetFigures, withInterval, type ApiMetricRow, type ApiSummaryRow, type ConsortiumFigure, type DiagnosisRecall, type Estimate } from './report-figures.ts';
import { buildComparison, pairedMetricOf, printComparison, type Comparison } from './comparison.ts';

interface RoundView {
  round: number;
  selected: string[];
  attempt: number;
  state: string;
  duration_ms: number | null;
  updates: { site: string; status: string; examples: number; size: number; norm: number | null }[];
  tasks: { site: string; status: string }[];
}
interface VersionView { version: number; round: number; sha256: string; size: number; manifest: { contributing_sites: number; num_examples: number; strategy: string } }
interface PrivacyView { dp_enabled: boolean; delta: number | null; ledger: { round: number; epsilon: number; noise_multiplier: number; sample_rate: number }[] }
interface JobView {
  dp_sampling: { sample_rate: number; eligible_sites: number; expected_sites: number } | null;
  periods?: { period: number; first_round: number; rounds: number; reason: string }[];
}
type Kind = 'global' | 'local' | 'personal';
type Kinds<T> = Record<Kind, Record<string, T>>;

/** A site's held-out figures of one global version on its earlier and its new cases. */
export interface DataAgeFigures { earlier: Record<string, number>; new: Record<string, number> }

/** One continuation at one site: each version of the period against the one it started from. */
export interface Forgetting {
  period: number;
  site: string;
  /** The version the period started from (its earlier cases' figures before the period). */
  from_version: number;
  before: DataAgeFigures;
  rounds: { version: number; earlier_loss_change: number | null; earlier_accuracy_change: number | null; new_loss_change: number | null; figures: DataAgeFigures }[];
}

export interface DemoReport {
  job: string;
  sites: { site: string; topDepartment: string }[];
  /** DP: delta, and with Poisson sampling its rate q and the job's N eligible sites. */
  privacy: { delta: number | null; sample_rate: number; eligible_sites: number | null } | null;
  rounds: {
    round: number;
    /** The sites the round chose (with DP sampling: its Poisson sample); participants are those whose contribution was aggregated. */
    sampled: string[];
    participants: { site: string; examples: number; update_bytes: number; update_norm: number | null }[];
    /** The privacy ledger's epsilon once this round was published (DP jobs). */
    epsilon: number | null;
    adapter: { version: number; sha256: string; size: number; contributing_sites: number; examples: number; strategy: string } | null;
    duration_ms: number | null;
    /** site -> metric -> value; "global" evaluates the adapter published by this round, "local" the site's local-only adapter after this round,
     *  "personal" the site's personalised adapter of this round's version (when the site makes one). */
    heldout: Record<string, Kinds<number>>;
    /** The same figures' 95% bootstrap intervals [low, high] (null: none sent, e.g. for a count). */
    heldout_ci: Record<string, Kinds<[number, number] | null>>;
    /** kind -> metric -> the consortium figure: the sites' figures weighted by count, with the
     *  pooled 95% interval (stratified bootstrap over the sites' replicates). */
    consortium: Kinds<ConsortiumFigure>;
    /** eval set (shared:<name>) -> the consortium-wide test set's figures at each site, and the
     *  consortium figure: the same items everywhere, every diagnosis equally. */
    shared: Record<string, { sites: Record<string, Kinds<Estimate>>; consortium: Kinds<ConsortiumFigure> }>;
    /** Recall (sensitivity) of the round's global adapter per diagnosis, with intervals and support. */
    per_diagnosis: { consortium: Record<string, DiagnosisRecall & { sites: number }>; sites: Record<string, Record<string, DiagnosisRecall>> };
    /** The job's data period of this round (0: its first rounds). */
    period: number;
    /** In a later period: site -> figures of this round's version on earlier and new cases. */
    by_data?: Record<string, DataAgeFigures>;
  }[];
  /** The job's data periods: its first rounds, then each continuation. */
  periods: { period: number; first_round: number; rounds: number; reason: string }[];
  /** Per continuation and site: positive loss change / negative accuracy change on earlier cases is forgetting. */
  forgetting: Forgetting[];
  initial: Record<string, Record<string, number>>;
  /** The consortium figures of the initial adapter (round 0). */
  initial_consortium: Record<string, ConsortiumFigure>;
  /** {data site x model owner} held-out figure of each site's local-only adapter at every site,
   *  with `global`: the final global adapter's figure at each data site beside them. */
  crossEval?: unknown;
  /** After the last round: global vs local-only accuracy with intervals, per site, on its own
   *  held-out items and on each shared set, and for the consortium (comparison.ts). */
  comparison: Comparison | null;
}

export async function buildReport(
  target: ApiTarget, jobId: string, siteNames: string[], sites: { site: string; topDepartment: string; records?: number; small?: boolean }[], o: { chance?: number | null } = {},
): Promise<DemoReport> {
  const base = `/api/jobs/${encodeURIComponent(jobId)}`;
  const get = <T>(path: string) => api<T>(target, 'GET', path);
  const job = await get<JobView>(base);
  const { rounds } = await get<{ rounds: RoundView[] }>(`${base}/rounds`);
  const { versions } = await get<{ versions: VersionView[] }>(`${base}/adapters`);
  const { metrics } = await get<{ metrics: ApiMetricRow[] }>(`${base}/metrics`);
  const { summary } = await get<{ summary: ApiSummaryRow[] }>(`${base}/metrics/summary`);
  const privacy = await get<PrivacyView>(`${base}/privacy`);
  const mapOne = <A, B>(k: Record<string, A>, f: (a: A) => B) => Object.fromEntries(Object.entries(k).map(([m, a]) => [m, f(a)]));
  const mapKinds = <A, B>(k: Kinds<A>, f: (a: A) => B): Kinds<B> => ({ global: mapOne(k.global, f), local: mapOne(k.local, f), personal: mapOne(k.personal, f) });
  const heldout = (round: number) => {
    const figs = siteFigures(metrics, round, siteNames);
    return {
      heldout: Object.fromEntries(siteNames.map((s) => [s, mapKinds(figs[s], (e) => e.value)])),
      heldout_ci: Object.fromEntries(siteNames.map((s) => [s, mapKinds(figs[s], (e): [number, number] | null => (e.ci_low === null || e.ci_high === null ? null : [e.ci_low, e.ci_high]))])),
    };
  };
  const published = rounds.filter((r) => r.state === 'published');
  const byData = (version: number, site: string): DataAgeFigures => ({ earlier: subsetFigures(metrics, version, site, 'data=earlier'), new: subsetFigures(metrics, version, site, 'data=new') });
  const periods = job.periods ?? [{ period: 0, first_round: 1, rounds: rounds.length, reason: 'submitted' }];
  const periodOf = (round: number) => periods.filter((p) => p.first_round <= round).at(-1)?.period ?? 0;
  const change = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined ? null : a - b);
  const forgetting: Forgetting[] = periods.filter((p) => p.period > 0).flatMap((p) => siteNames.map((site) => {
    const before = byData(p.first_round - 1, site);
    return {
      period: p.period, site, from_version: p.first_round - 1, before,
      rounds: published.filter((r) => periodOf(r.round) === p.period).map((r) => {
        const figures = byData(r.round, site);
        return {
          version: r.round, figures,
          earlier_loss_change: change(figures.earlier.loss, before.earlier.loss),
          earlier_accuracy_change: change(figures.earlier.accuracy, before.earlier.accuracy),
          new_loss_change: change(figures.new.loss, before.new.loss),
        };
      }),
    };
  }));
  const sharedSets = [...new Set(metrics.map((m) => m.eval_set).filter((e) => e.startsWith('shared:')))].sort();
  const shared = (round: number) => Object.fromEntries(sharedSets.map((e) => [e, { sites: siteFigures(metrics, round, siteNames, e), consortium: consortiumFigures(summary, round, e) }]));
  const last = published.at(-1);
  const comparison = last
    ? buildComparison({
      round: last.round, metric: 'accuracy', chance: o.chance ?? null,
      sites: sites.map((s) => ({ site: s.site, note: `mostly ${s.topDepartment}${s.records !== undefined ? `, ${s.records} records${s.small ? ', the small one' : ''}` : ''}` })),
      sets: [
        { eval_set: 'held-out', figures: siteFigures(metrics, last.round, siteNames), consortium: consortiumFigures(summary, last.round) },
        ...sharedSets.map((e) => ({ eval_set: e, figures: siteFigures(metrics, last.round, siteNames, e), consortium: consortiumFigures(summary, last.round, e) })),
      ],
    })
    : null;
  return {
    periods,
    forgetting,
    comparison,
    job: jobId,
    sites,
    privacy: privacy.dp_enabled
      ? { delta: privacy.delta, sample_rate: job.dp_sampling?.sample_rate ?? 1, eligible_sites: job.dp_sampling?.eligible_sites ?? null }
      : null,
    initial: Object.fromEntries(Object.entries(heldout(0).heldout).map(([s, k]) => [s, k.global])),
    initial_consortium: consortiumFigures(summary, 0).global,
    rounds: published.map((r) => {
      const v = versions.find((x) => x.round === r.round) ?? null;
      return {
        round: r.round,
        sampled: r.selected,
        // Under secure aggregation the coordinator holds no per-site update: participants are the
        // sites whose tasks were answered, and their example counts are known only as a sum.
        participants: r.updates.length
          ? r.updates.filter((u) => u.status === 'accepted' || u.status === 'aggregated').map((u) => ({ site: u.site, examples: u.examples, update_bytes: u.size, update_norm: u.norm }))
          : r.tasks.filter((t) => t.status === 'submitted').map((t) => ({ site: t.site, examples: NaN, update_bytes: NaN, update_norm: null })),
        epsilon: privacy.ledger.find((l) => l.round === r.round)?.epsilon ?? null,
        adapter: v ? { version: v.version, sha256: v.sha256, size: v.size, contributing_sites: v.manifest.contributing_sites, examples: v.manifest.num_examples, strategy: v.manifest.strategy } : null,
        duration_ms: r.duration_ms,
        ...heldout(r.round),
        consortium: consortiumFigures(summary, r.round),
        shared: shared(r.round),
        per_diagnosis: diagnosisRecall(metrics, summary, r.round, siteNames),
        period: periodOf(r.round),
        ...(periodOf(r.round) > 0 ? { by_data: Object.fromEntries(siteNames.map((s) => [s, byData(r.round, s)])) } : {}),
      };
    }),
  };
}

export function printReport(rep: DemoReport, log: (l: string) => void): void {
  const f = (x: number | undefined, d = 3) => (x === undefined || !Number.isFinite(x) ? '  -  ' : x.toFixed(d));
  log('');
  const personal = rep.rounds.some((r) => Object.values(r.heldout).some((h) => h.personal.loss !== undefined));
  log(`held-out loss per site (global adapter of the round vs the site's local-only adapter${personal ? ' vs its personalised adapter of that version' : ''}); round 0 = initial adapter`);
  const dp = rep.rounds.some((r) => r.epsilon !== null);
  if (rep.privacy) log(`DP: epsilon after each round at delta ${rep.privacy.delta}${rep.privacy.sample_rate < 1 ? `; each round samples each of the ${rep.privacy.eligible_sites} hospitals with probability ${rep.privacy.sample_rate}` : ''}`);
  const head = ['round', 'version', 'sha256', 'sites', 'examples', ...(dp ? ['epsilon'] : []), ...rep.sites.map((s) => `${s.site} (${s.topDepartment}) global / local${personal ? ' / personal' : ''}`)];
  log(head.join(' | '));
  log(`0     | v0      | -            | -     | -        | ${dp ? '-       | ' : ''}` + rep.sites.map((s) => `${f(rep.initial[s.site]?.loss)} /   -  `).join(' | '));
  for (const r of rep.rounds) {
    log(
      [
        String(r.round).padEnd(5),
        `v${r.adapter?.version ?? '?'}`.padEnd(7),
        (r.adapter?.sha256.slice(0, 12) ?? '-').padEnd(12),
        String(r.adapter?.contributing_sites ?? r.participants.length).padEnd(5),
        String(r.adapter?.examples ?? r.participants.reduce((a, p) => a + p.examples, 0)).padEnd(8),
        ...(dp ? [f(r.epsilon ?? undefined, 4).padEnd(7)] : []),
        ...rep.sites.map((s) => `${f(r.heldout[s.site]?.global.loss)} / ${f(r.heldout[s.site]?.local.loss)}${personal ? ` / ${f(r.heldout[s.site]?.personal.loss)}` : ''}`),
      ].join(' | '),
    );
  }
  const figs = ['loss', 'accuracy', 'macro_f1'];
  if (rep.rounds.some((r) => figs.some((m) => r.consortium.global[m]))) {
    log('');
    log('consortium (all hospitals, weighted by count) with 95% intervals: global adapter / local-only adapters');
    for (const r of rep.rounds) log(`round ${r.round}: ` + figs.filter((m) => r.consortium.global[m] || r.consortium.local[m]).map((m) => `${m} ${withInterval(r.consortium.global[m])} / ${withInterval(r.consortium.local[m])}`).join(' | '));
  }
  const last = rep.rounds.at(-1);
  const dx = Object.entries(last?.per_diagnosis.consortium ?? {});
  if (last && dx.length) {
    log('');
    log(`recall (sensitivity) per diagnosis, global adapter v${last.adapter?.version ?? last.round}, all hospitals, 95% intervals:`);
    for (const [d, f] of dx) log(`  ${d}: ${withInterval(f.recall)} (n=${f.support}, ${f.sites} site(s))`);
  }
  const acc = (e: Estimate | undefined) => withInterval(e);
  const sets = Object.keys(rep.rounds.at(-1)?.shared ?? {});
  if (rep.rounds.some((r) => rep.sites.some((s) => r.heldout[s.site]?.global.accuracy !== undefined))) {
    log('');
    const chance = rep.comparison?.chance ?? null;
    log(`multiple-choice accuracy${chance !== null ? ` (chance ${chance.toFixed(2)})` : ''}, 95% intervals: global adapter / local-only adapter, per round; Δ = paired difference global − local-only on the same items`);
    const delta = (e: Estimate | undefined) => (e ? ` (Δ ${withInterval(e)})` : '');
    const paired = pairedMetricOf('accuracy');
    for (const r of rep.rounds) {
      for (const s of rep.sites) {
        const own = `own held-out ${acc(estimateOf(r, s.site, 'global'))} / ${acc(estimateOf(r, s.site, 'local'))}${delta(estimateOf(r, s.site, 'global', paired))}`;
        const sh = sets.map((e) => `${e} ${acc(r.shared[e]?.sites[s.site]?.global.accuracy)} / ${acc(r.shared[e]?.sites[s.site]?.local.accuracy)}${delta(r.shared[e]?.sites[s.site]?.global[paired])}`);
        log(`round ${r.round} ${s.site}: ${[own, ...sh].join(' | ')}`);
      }
    }
  }
  for (const [i, fg] of rep.forgetting.entries()) {
    if (fg.rounds.length === 0) continue;
    if (i === 0 || fg.period !== rep.forgetting[i - 1].period) {
      log('');
      log(`period ${fg.period} (new records, continued from v${fg.from_version}): held-out loss on earlier / new cases; forgetting = rise of the earlier cases' loss`);
    }
    const sign = (x: number | null) => (x === null ? '-' : (x >= 0 ? '+' : '') + x.toFixed(3));
    log(`${fg.site}: v${fg.from_version} ${f(fg.before.earlier.loss)} / ${f(fg.before.new.loss)}   ` + fg.rounds.map((r) => `v${r.version} ${f(r.figures.earlier.loss)} / ${f(r.figures.new.loss)} (earlier ${sign(r.earlier_loss_change)})`).join('   '));
  }
  const ce = rep.crossEval as { metric?: string; data_sites?: string[]; model_owners?: string[]; values?: (number | null)[][]; global?: { version: number | null; values: (number | null)[] } } | undefined;
  if (ce?.data_sites?.length) {
    log('');
    log(`cross-site evaluation: held-out ${ce.metric ?? ''} of each local-only adapter and of the global adapter (columns) on each hospital's data (rows)`);
    log(['data \\ model', ...(ce.model_owners ?? []), `global v${ce.global?.version ?? '?'}`].join(' | '));
    ce.data_sites.forEach((d, i) => log([d, ...(ce.values?.[i] ?? []).map((v) => f(v ?? undefined)), f(ce.global?.values[i] ?? undefined)].join(' | ')));
  }
  if (rep.comparison) {
    log('');
    printComparison(rep.comparison, log);
  }
  log('');
}

/** A site's whole held-out figure of a round (value with its interval) for one kind. */
function estimateOf(r: DemoReport['rounds'][number], site: string, kind: 'global' | 'local', metric = 'accuracy'): Estimate | undefined {
  const v = r.heldout[site]?.[kind][metric];
  if (v === undefined) return undefined;
  const ci = r.heldout_ci[site]?.[kind][metric] ?? null;
  return { value: v, ci_low: ci?.[0] ?? null, ci_high: ci?.[1] ?? null, count: 0 };
}
