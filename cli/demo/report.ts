// The demo's report.json, built from the coordinator's HTTP API (what a researcher sees):
// per round, the participating sites, their example counts, the published adapter version and
// sha256, and each site's held-out metrics for the global adapter and its local-only baseline.

interface RoundView {
  round: number;
  attempt: number;
  state: string;
  duration_ms: number | null;
  updates: { site: string; status: string; examples: number; size: number; norm: number | null }[];
  tasks: { site: string; status: string }[];
}
interface VersionView { version: number; round: number; sha256: string; size: number; manifest: { contributing_sites: number; num_examples: number; strategy: string } }
interface MetricRow { round: number; site_id?: string; site?: string; kind: string; metric: string; value: number; count: number }

export interface DemoReport {
  job: string;
  sites: { site: string; topDepartment: string }[];
  rounds: {
    round: number;
    participants: { site: string; examples: number; update_bytes: number; update_norm: number | null }[];
    adapter: { version: number; sha256: string; size: number; contributing_sites: number; examples: number; strategy: string } | null;
    duration_ms: number | null;
    /** site -> metric -> value; "global" evaluates the adapter published by this round, "local" the site's local-only adapter after this round. */
    heldout: Record<string, { global: Record<string, number>; local: Record<string, number> }>;
  }[];
  initial: Record<string, Record<string, number>>;
  /** {data site x model owner} held-out loss of each site's local-only adapter at every site. */
  crossEval?: unknown;
}

async function get<T>(url: string): Promise<T> {
  const r = await fetch(url);
  if (!r.ok) throw new Error(`GET ${url}: ${r.status} ${await r.text()}`);
  return (await r.json()) as T;
}

export async function buildReport(httpUrl: string, jobId: string, siteNames: string[], sites: { site: string; topDepartment: string }[]): Promise<DemoReport> {
  const base = `${httpUrl}/api/jobs/${encodeURIComponent(jobId)}`;
  const { rounds } = await get<{ rounds: RoundView[] }>(`${base}/rounds`);
  const { versions } = await get<{ versions: VersionView[] }>(`${base}/adapters`);
  const { metrics } = await get<{ metrics: MetricRow[] }>(`${base}/metrics`);
  const siteOf = (m: MetricRow) => m.site_id ?? m.site ?? '?';
  const pick = (round: number, kind: string, site: string) => {
    const o: Record<string, number> = {};
    for (const m of metrics) if (m.round === round && m.kind === kind && siteOf(m) === site && !m.metric.startsWith('train_')) o[m.metric] = m.value;
    return o;
  };
  const published = rounds.filter((r) => r.state === 'published');
  return {
    job: jobId,
    sites,
    initial: Object.fromEntries(siteNames.map((s) => [s, pick(0, 'global', s)])),
    rounds: published.map((r) => {
      const v = versions.find((x) => x.round === r.round) ?? null;
      return {
        round: r.round,
        // Under secure aggregation the coordinator holds no per-site update: participants are the
        // sites whose tasks were answered, and their example counts are known only as a sum.
        participants: r.updates.length
          ? r.updates.filter((u) => u.status === 'accepted' || u.status === 'aggregated').map((u) => ({ site: u.site, examples: u.examples, update_bytes: u.size, update_norm: u.norm }))
          : r.tasks.filter((t) => t.status === 'submitted').map((t) => ({ site: t.site, examples: NaN, update_bytes: NaN, update_norm: null })),
        adapter: v ? { version: v.version, sha256: v.sha256, size: v.size, contributing_sites: v.manifest.contributing_sites, examples: v.manifest.num_examples, strategy: v.manifest.strategy } : null,
        duration_ms: r.duration_ms,
        heldout: Object.fromEntries(siteNames.map((s) => [s, { global: pick(r.round, 'global', s), local: pick(r.round, 'local', s) }])),
      };
    }),
  };
}

export function printReport(rep: DemoReport, log: (l: string) => void): void {
  const f = (x: number | undefined, d = 3) => (x === undefined || !Number.isFinite(x) ? '  -  ' : x.toFixed(d));
  log('');
  log(`held-out loss per site (global adapter of the round vs the site's local-only adapter); round 0 = initial adapter`);
  const head = ['round', 'version', 'sha256', 'sites', 'examples', ...rep.sites.map((s) => `${s.site} (${s.topDepartment}) global / local`)];
  log(head.join(' | '));
  log(`0     | v0      | -            | -     | -        | ` + rep.sites.map((s) => `${f(rep.initial[s.site]?.loss)} /   -  `).join(' | '));
  for (const r of rep.rounds) {
    log(
      [
        String(r.round).padEnd(5),
        `v${r.adapter?.version ?? '?'}`.padEnd(7),
        (r.adapter?.sha256.slice(0, 12) ?? '-').padEnd(12),
        String(r.adapter?.contributing_sites ?? r.participants.length).padEnd(5),
        String(r.adapter?.examples ?? r.participants.reduce((a, p) => a + p.examples, 0)).padEnd(8),
        ...rep.sites.map((s) => `${f(r.heldout[s.site]?.global.loss)} / ${f(r.heldout[s.site]?.local.loss)}`),
      ].join(' | '),
    );
  }
  const ce = rep.crossEval as { data_sites?: string[]; model_owners?: string[]; values?: (number | null)[][] } | undefined;
  if (ce?.data_sites?.length) {
    log('');
    log('cross-site evaluation: held-out loss of each local-only adapter (columns) on each hospital\'s data (rows)');
    log(['data \\ model', ...(ce.model_owners ?? [])].join(' | '));
    ce.data_sites.forEach((d, i) => log([d, ...(ce.values?.[i] ?? []).map((v) => f(v ?? undefined))].join(' | ')));
  }
  log('');
}
