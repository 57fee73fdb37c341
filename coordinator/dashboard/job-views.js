// The views of one job (admins and researchers): what federating does per site, consortium
// averages, the cross-site matrix, the privacy ledger, the rounds and the published versions.
// Each takes data the API already limited to what the caller may see and returns DOM.
import { el, heatMap, timeline, PALETTE } from './svg.js';
import { lineChart } from './line-charts.js';
import { download, postJson } from './api.js';

const enc = encodeURIComponent;
const fmtNum = (v, d = 3) => (v === null || v === undefined ? '–' : Number(v).toFixed(d));
const dur = (ms) => (ms === null || ms === undefined ? '–' : ms < 1000 ? `${ms} ms` : ms < 120_000 ? `${(ms / 1000).toFixed(1)} s` : `${(ms / 60_000).toFixed(1)} min`);

export function table(headers, rows, attrs = {}) {
  return el('table', attrs, el('thead', {}, el('tr', {}, headers.map((h) => el('th', { text: h })))), el('tbody', {}, rows));
}

export function siteColours(metrics) {
  const sites = [...new Set(metrics.filter((m) => m.kind === 'global' || m.kind === 'local' || m.kind === 'personal').map((m) => m.site_id))].sort();
  return { sites, colour: Object.fromEntries(sites.map((s, i) => [s, PALETTE[i % PALETTE.length]])) };
}

/** Whole-set figures on the held-out sets (not a subgroup, a diagnosis or an exam). */
const wholeSet = (m) => m.subset === '' && m.eval_set === '';
const withCi = (x, y, m) => ({ x, y, lo: m.ci_low, hi: m.ci_high });
const ci = (r, d = 3) => (r.ci_low === null || r.ci_low === undefined ? '' : `[${fmtNum(r.ci_low, d)}, ${fmtNum(r.ci_high, d)}]`);
const KIND_LABEL = { global: 'global', local: 'local-only', personal: 'personalised' };

/** One line per site and kind: global dashed, local-only solid, personalised (a few local steps on
 *  each global version, when the site makes one) thin; the newest value per round, with its 95%
 *  interval as an error bar. */
export function globalVsLocal(metrics, name, title, colours) {
  const series = [];
  for (const site of colours.sites) {
    for (const kind of ['global', 'local', 'personal']) {
      const byRound = new Map();
      for (const m of metrics) if (m.site_id === site && m.kind === kind && m.metric === name && wholeSet(m)) byRound.set(m.round, withCi(m.round, m.value, m));
      if (byRound.size === 0) continue;
      series.push({ id: `${site}:${kind}`, label: `${site} ${KIND_LABEL[kind]}`, color: colours.colour[site], dashed: kind === 'global', thin: kind === 'personal', points: [...byRound.values()] });
    }
  }
  const box = lineChart(series, { id: name, title, xLabel: 'round (global: adapter version evaluated)', yLabel: name, empty: `no ${name} reported yet` });
  box.dataset.metric = name;
  return box;
}

/** The consortium figure per round (count-weighted across sites) with its pooled 95% interval. */
export function consortiumChart(summary, name, title) {
  const series = ['global', 'local'].map((kind) => ({
    id: `consortium:${kind}`, label: `consortium ${kind === 'global' ? 'global' : 'local-only'}`, color: kind === 'global' ? '#1f77b4' : '#ff7f0e', dashed: kind === 'global',
    points: summary.filter((s) => s.kind === kind && s.metric === name && s.model_owner === '' && wholeSet(s) && s.weighted_mean !== null).map((s) => withCi(s.round, s.weighted_mean, s)),
  }));
  const box = lineChart(series, { id: `consortium-${name}`, title, xLabel: 'round (global: adapter version evaluated)', yLabel: name, empty: `no consortium ${name} yet` });
  box.dataset.consortium = name;
  return box;
}

export function summaryTable(summary) {
  const rows = summary.filter((s) => ['global', 'local', 'personal'].includes(s.kind) && wholeSet(s) && ['loss', 'accuracy', 'macro_f1', 'perplexity', 'exact_match', 'ece', 'brier', 'latency_p95_ms'].includes(s.metric));
  if (rows.length === 0) return el('p', { class: 'muted', text: 'no evaluation metrics yet' });
  return table(['round', 'kind', 'metric', 'sites', 'mean (unweighted)', 'consortium (weighted by count)', '95% CI', 'min', 'max', 'count'], rows.map((s) =>
    el('tr', { 'data-summary': `${s.round}:${s.kind}:${s.metric}` }, el('td', { text: s.round }), el('td', { text: s.kind }), el('td', { text: s.metric }), el('td', { text: s.sites }),
      el('td', { text: fmtNum(s.mean, 4) }), el('td', { text: fmtNum(s.weighted_mean, 4) }), el('td', { class: 'ci', text: ci(s, 4) }), el('td', { text: fmtNum(s.min, 4) }), el('td', { text: fmtNum(s.max, 4) }), el('td', { text: s.count }))), { class: 'summary' });
}

/** Per diagnosis, the newest global round's consortium figures: recall (sensitivity) with its pooled
 *  interval, precision, specificity, F1 (count-weighted across sites) and support. */
export function diagnosisTable(summary) {
  const dx = summary.filter((s) => s.kind === 'global' && s.model_owner === '' && s.eval_set === '' && s.subset.startsWith('diagnosis=') && !s.subset.includes(';'));
  if (dx.length === 0) return el('p', { class: 'muted', text: 'no per-diagnosis figures yet (sites withhold a diagnosis below their evaluation.min_items)' });
  const round = Math.max(...dx.map((s) => s.round));
  const at = dx.filter((s) => s.round === round);
  const names = [...new Set(at.map((s) => s.subset.slice('diagnosis='.length)))].sort();
  const fig = (d, m) => at.find((s) => s.subset === `diagnosis=${d}` && s.metric === m);
  return el('div', {},
    el('p', { class: 'muted', text: `global adapter v${round}, all sites' held-out items pooled (weighted by each site's count)` }),
    table(['diagnosis', 'recall (sensitivity)', '95% CI', 'precision', 'specificity', 'F1', 'support', 'sites'], names.map((d) => {
      const r = fig(d, 'recall');
      return el('tr', { 'data-diagnosis': d }, el('td', { text: d }), el('td', { text: fmtNum(r?.weighted_mean) }), el('td', { class: 'ci', text: r ? ci(r) : '' }),
        el('td', { text: fmtNum(fig(d, 'precision')?.weighted_mean) }), el('td', { text: fmtNum(fig(d, 'specificity')?.weighted_mean) }), el('td', { text: fmtNum(fig(d, 'f1')?.weighted_mean) }),
        el('td', { text: fig(d, 'support')?.count ?? r?.count ?? '–' }), el('td', { text: r?.sites ?? '–' }));
    }), { class: 'diagnoses' }));
}

/** Exam files the sites scored (eval_set exam:<name>): consortium accuracy with its interval, whole exam and per subject. */
export function examTable(summary) {
  const rows = summary.filter((s) => s.eval_set.startsWith('exam:') && s.metric === 'accuracy' && (s.subset === '' || s.subset.startsWith('subject=')));
  if (rows.length === 0) return el('p', { class: 'muted', text: 'no exam scored yet (fedlora job exam JOB --exam NAME)' });
  return table(['round', 'kind', 'exam', 'subject', 'accuracy', '95% CI', 'sites', 'questions'], rows.map((s) =>
    el('tr', { 'data-exam': `${s.eval_set}:${s.subset}` }, el('td', { text: s.round }), el('td', { text: s.kind }), el('td', { text: s.eval_set.slice(5) }), el('td', { text: s.subset ? s.subset.slice(8) : 'all' }),
      el('td', { text: fmtNum(s.weighted_mean) }), el('td', { class: 'ci', text: ci(s) }), el('td', { text: s.sites }), el('td', { text: s.count }))), { class: 'exams' });
}

/** The matrix; admins also get the button that asks the sites for a cross-evaluation. */
export function crossEvalView(cx, jobId, { canRequest, onError }) {
  const box = el('div', { class: 'cross' });
  if (!cx.available) {
    box.append(el('p', { class: 'muted', 'data-cross': 'unavailable', text: cx.message ?? 'no cross-evaluation yet' }));
  } else {
    const hib = !/loss|perplexity|latency/.test(cx.metric ?? '');
    box.append(el('p', { class: 'muted', text: `${cx.metric}: rows = data site (held-out set), columns = whose local-only adapter; ${hib ? 'green = higher' : 'green = lower'}` }));
    box.append(heatMap(cx.data_sites, cx.model_owners, cx.values, { id: 'cross-eval', title: 'cross-evaluation', higherIsBetter: hib }));
  }
  const pending = (cx.requests ?? []).filter((r) => r.status === 'pending' || r.status === 'dispatched');
  if (pending.length) box.append(el('p', { class: 'muted', text: `${pending.length} request(s) ${pending.map((r) => `#${r.id} ${r.status}`).join(', ')}` }));
  if (canRequest) {
    const btn = el('button', { type: 'button', id: 'cross-request', text: 'Request cross-evaluation' });
    btn.addEventListener('click', async () => {
      try {
        btn.textContent = `requested (#${(await postJson(`/api/jobs/${enc(jobId)}/cross-eval`, {})).id})`;
      } catch (e) {
        onError(`request cross-evaluation: ${e.message}`);
      }
    });
    box.append(btn);
  }
  return box;
}

export function privacyChart(p) {
  if (!p.dp_enabled) return el('p', { class: 'muted', 'data-privacy': 'off', text: 'differential privacy is off for this job: no ε is spent (and none is guaranteed)' });
  const series = [{ id: 'epsilon', label: 'ε spent', color: '#9467bd', points: p.ledger.map((l) => ({ x: l.round, y: l.epsilon })) }];
  return lineChart(series, { id: 'privacy', title: `privacy ledger: ε after each round (δ = ${p.delta})`, xLabel: 'round', yLabel: 'ε', hline: { y: p.budget_epsilon, label: `budget ε = ${p.budget_epsilon}` } });
}

export function roundsTimeline(rounds) {
  const items = rounds.map((r) => {
    const start = Date.parse(r.started);
    const end = r.published ? Date.parse(r.published) : r.state === 'open' ? Date.now() : Date.parse(r.aggregating ?? r.deadline ?? r.started);
    const acc = r.updates.filter((u) => u.status === 'accepted').map((u) => u.site);
    const dec = r.tasks.filter((t) => t.status === 'declined').map((t) => t.site);
    return {
      label: `r${r.round}${r.attempt > 1 ? ` a${r.attempt}` : ''}`, start, end, state: r.state,
      detail: `${r.state} · ${dur(r.duration_ms ?? end - start)} · ${acc.length}/${r.selected.length} sites: ${acc.join(', ') || '–'}${dec.length ? ` · declined: ${dec.join(', ')}` : ''}${r.error ? ` · ${r.error}` : ''}`,
    };
  });
  return timeline(items);
}

const FILES = ['adapter_model.safetensors', 'adapter_config.json', 'manifest.json', 'manifest.sig'];

/** Versions with download buttons when the caller may download (admins; researchers if the job allows). */
export function adapterTable(jobId, versions, { canDownload, onError }) {
  const files = (v) => (canDownload
    ? FILES.map((f) => {
      const b = el('button', { type: 'button', class: 'dl', 'data-file': f, text: f.replace('adapter_', '').replace('.safetensors', '') });
      b.addEventListener('click', () => download(`/api/jobs/${enc(jobId)}/adapters/${v.version}/${f}`, f).catch((e) => onError(`download ${f}: ${e.message}`)));
      return b;
    })
    : [el('span', { class: 'muted', text: 'not for researchers (job spec access.researcher_downloads)' })]);
  return table(['version', 'round', 'sites', 'examples', 'size', 'sha256', 'published', 'download'], versions.map((v) =>
    el('tr', { 'data-version': v.version },
      el('td', { text: `v${v.version}` }), el('td', { text: v.round }), el('td', { text: v.manifest?.contributing_sites ?? '' }), el('td', { text: v.manifest?.num_examples ?? '' }),
      el('td', { text: `${(v.size / 1024).toFixed(1)} KiB` }), el('td', { class: 'mono', title: v.sha256, text: v.sha256.slice(0, 16) + '…' }), el('td', { text: v.created.replace('T', ' ').slice(0, 19) }),
      el('td', {}, files(v)))), { class: 'adapters' });
}

export function exportButtons(jobId, onError) {
  const J = `/api/jobs/${enc(jobId)}`;
  return [['metrics.csv', `${J}/metrics?format=csv`], ['summary.csv', `${J}/metrics/summary?format=csv`], ['cross-eval.csv', `${J}/cross-eval?format=csv`]].map(([name, path]) => {
    const b = el('button', { type: 'button', class: 'dl', 'data-export': name, text: name });
    b.addEventListener('click', () => download(path, `${jobId}-${name}`).catch((e) => onError(`export ${name}: ${e.message}`)));
    return b;
  });
}

/** The version tree around a job: from its lineage's root job, every version in order, and under
 *  a version the jobs that continue it (init_adapter). Nodes from /api/versions. */
export function versionTree(nodes, jobId) {
  const key = (j, v) => `${j}/v${v}`;
  const byKey = new Map(nodes.map((n) => [key(n.job_id, n.version), n]));
  let root = jobId;
  for (let seen = new Set(); !seen.has(root); seen.add(root)) {
    const p = byKey.get(key(root, 0))?.parent;
    if (!p || !byKey.has(key(p.job_id, p.version))) break;
    root = p.job_id;
  }
  const branch = (j) => {
    const versions = nodes.filter((n) => n.job_id === j).sort((a, b) => a.version - b.version);
    const name = versions[0]?.job_name ?? j;
    return el('li', { 'data-tree-job': j, class: j === jobId ? 'current' : '' },
      el('span', { class: 'tree-job', text: `${name} (${j})` }),
      el('ol', { class: 'tree-versions' }, versions.map((v) => {
        const continued = nodes.filter((n) => n.version === 0 && n.parent && n.parent.job_id === j && n.parent.version === v.version).map((n) => n.job_id);
        return el('li', { 'data-tree-version': key(j, v.version), title: `round ${v.round} · ${v.contributing_sites} site(s) · manifest ${v.manifest_sha256.slice(0, 12)}… · ${v.created.replace('T', ' ').slice(0, 19)}` },
          el('span', { class: 'tree-node', text: `v${v.version}` }),
          continued.length ? el('ul', { class: 'tree-children' }, continued.map(branch)) : null);
      })));
  };
  if (!byKey.has(key(root, 0))) return el('p', { class: 'muted', text: 'no published versions yet' });
  return el('ul', { class: 'version-tree', 'data-tree-root': root }, branch(root));
}
