// The consortium dashboard: reads the coordinator's JSON API (read routes are open on the
// HTTP listener, which binds to 127.0.0.1 by default) and draws SVG charts. The only write
// (request a cross-evaluation) sends the admin bearer token typed once into the header field;
// it is kept in sessionStorage (gone when the tab closes), never in localStorage or a cookie.
import { el, lineChart, legend, heatMap, timeline, PALETTE } from './charts.js';

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = 'fedlora.adminToken';
const state = { jobId: new URLSearchParams(location.search).get('job'), timer: null };

async function getJson(path) {
  const r = await fetch(path, { headers: { accept: 'application/json' } });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body?.error ? `${body.error.code}: ${body.error.message}` : `${path}: HTTP ${r.status}`);
  return body;
}

async function postJson(path, payload) {
  const token = sessionStorage.getItem(TOKEN_KEY);
  const r = await fetch(path, {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
    body: JSON.stringify(payload ?? {}),
  });
  const body = await r.json().catch(() => ({}));
  if (!r.ok) throw new Error(body?.error ? `${body.error.code}: ${body.error.message}` : `HTTP ${r.status}`);
  return body;
}

const enc = encodeURIComponent;
const fmtNum = (v, d = 3) => (v === null || v === undefined ? '–' : Number(v).toFixed(d));
const dur = (ms) => (ms === null || ms === undefined ? '–' : ms < 1000 ? `${ms} ms` : ms < 120_000 ? `${(ms / 1000).toFixed(1)} s` : `${(ms / 60_000).toFixed(1)} min`);

function setError(msg) {
  $('error').textContent = msg ?? '';
  $('error').hidden = !msg;
}

function card(label, value, sub, id) {
  return el('div', { class: 'card', 'data-card': id }, el('div', { class: 'card-label', text: label }), el('div', { class: 'card-value', text: value }), sub ? el('div', { class: 'card-sub', text: sub }) : null);
}

function table(headers, rows, attrs = {}) {
  return el('table', attrs, el('thead', {}, el('tr', {}, headers.map((h) => el('th', { text: h })))), el('tbody', {}, rows));
}

// ---- consortium overview --------------------------------------------------------------------
async function renderOverview(jobs, sites, privacy) {
  const online = sites.filter((s) => s.online).length;
  const job = jobs.find((j) => j.id === state.jobId);
  const cur = job?.current_round;
  $('overview').replaceChildren(
    card('Sites online', `${online} / ${sites.length}`, sites.filter((s) => s.online).map((s) => s.id).join(', ') || 'none', 'sites'),
    card('Job', job ? job.name : '–', job ? `${job.id} · ${job.status}${job.error ? ' · ' + job.error : ''}` : 'no job yet', 'job'),
    card('Round', cur ? `${cur.round} / ${job.rounds_total}` : '–', cur ? `attempt ${cur.attempt} · ${cur.state} · adapter v${job.current_version}` : '', 'round'),
    card('Privacy ε', privacy?.dp_enabled ? `${fmtNum(privacy.epsilon_spent, 2)} / ${privacy.budget_epsilon}` : 'no DP', privacy?.dp_enabled ? `δ = ${privacy.delta}` : 'this job adds no noise', 'epsilon'),
  );
  $('sites').replaceChildren(table(['site', 'online', 'status', 'state', 'last seen', 'agent'], sites.map((s) =>
    el('tr', { 'data-site': s.id }, el('td', { text: s.id }), el('td', {}, el('span', { class: s.online ? 'dot on' : 'dot off', text: s.online ? 'online' : 'offline' })),
      el('td', { text: s.status }), el('td', { text: s.state ?? '' }), el('td', { text: s.last_seen ?? 'never' }), el('td', { text: s.agent_version ?? '' })))));
}

// ---- per-job charts -------------------------------------------------------------------------
function siteColours(metrics) {
  const sites = [...new Set(metrics.filter((m) => m.kind === 'global' || m.kind === 'local').map((m) => m.site_id))].sort();
  return { sites, colour: Object.fromEntries(sites.map((s, i) => [s, PALETTE[i % PALETTE.length]])) };
}

/** One line per site and kind: global dashed, local-only solid; newest value per round. */
function globalVsLocal(metrics, name, title, colours) {
  const series = [];
  for (const site of colours.sites) {
    for (const kind of ['global', 'local']) {
      const byRound = new Map();
      for (const m of metrics) if (m.site_id === site && m.kind === kind && m.metric === name) byRound.set(m.round, m);
      if (byRound.size === 0) continue;
      series.push({
        id: `${site}:${kind}`, label: `${site} ${kind === 'global' ? 'global' : 'local-only'}`, color: colours.colour[site], dashed: kind === 'global',
        points: [...byRound.values()].map((m) => ({ x: m.round, y: m.value, tip: `${site} ${kind} ${name} = ${m.value.toFixed(4)} (round ${m.round}, n=${m.count})` })),
      });
    }
  }
  const box = el('figure', { class: 'chart-box', 'data-metric': name });
  box.append(lineChart(series, { id: `${name}`, title, xLabel: 'round (global: adapter version evaluated)', yLabel: name, integerX: true, empty: `no ${name} reported yet` }));
  if (series.length) box.append(legend(series.map((s) => ({ id: s.id, color: s.color, dashed: s.dashed, label: s.label }))));
  return box;
}

function summaryTable(summary) {
  const rows = summary.filter((s) => (s.kind === 'global' || s.kind === 'local') && ['loss', 'accuracy', 'macro_f1', 'perplexity', 'exact_match'].includes(s.metric));
  if (rows.length === 0) return el('p', { class: 'muted', text: 'no evaluation metrics yet' });
  return table(['round', 'kind', 'metric', 'sites', 'mean (unweighted)', 'weighted mean (by count)', 'min', 'max', 'count'], rows.map((s) =>
    el('tr', {}, el('td', { text: s.round }), el('td', { text: s.kind }), el('td', { text: s.metric }), el('td', { text: s.sites }),
      el('td', { text: fmtNum(s.mean, 4) }), el('td', { text: fmtNum(s.weighted_mean, 4) }), el('td', { text: fmtNum(s.min, 4) }), el('td', { text: fmtNum(s.max, 4) }), el('td', { text: s.count }))), { class: 'summary' });
}

function crossEvalView(cx, jobId) {
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
  const btn = el('button', { type: 'button', id: 'cross-request', text: 'Request cross-evaluation' });
  btn.addEventListener('click', async () => {
    try {
      const r = await postJson(`/api/jobs/${enc(jobId)}/cross-eval`, {});
      setError(null);
      btn.textContent = `requested (#${r.id})`;
    } catch (e) {
      setError(`request cross-evaluation: ${e.message} (enter the admin token at the top)`);
    }
  });
  box.append(btn);
  return box;
}

function privacyChart(p) {
  if (!p.dp_enabled) return el('p', { class: 'muted', 'data-privacy': 'off', text: 'differential privacy is off for this job: no ε is spent (and none is guaranteed)' });
  const series = [{ id: 'epsilon', label: 'ε spent', color: '#9467bd', points: p.ledger.map((l) => ({ x: l.round, y: l.epsilon, tip: `round ${l.round}: ε = ${l.epsilon.toFixed(4)} (σ = ${l.noise_multiplier}, q = ${l.sample_rate})` })) }];
  return el('figure', { class: 'chart-box' }, lineChart(series, { id: 'privacy', title: `privacy ledger: ε after each round (δ = ${p.delta})`, xLabel: 'round', yLabel: 'ε', integerX: true, hline: { y: p.budget_epsilon, label: `budget ε = ${p.budget_epsilon}` } }));
}

function roundsTimeline(rounds) {
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

function adapterTable(jobId, versions) {
  const files = ['adapter_model.safetensors', 'adapter_config.json', 'manifest.json', 'manifest.sig'];
  return table(['version', 'round', 'sites', 'examples', 'size', 'sha256', 'published', 'download'], versions.map((v) =>
    el('tr', { 'data-version': v.version },
      el('td', { text: `v${v.version}` }), el('td', { text: v.round }), el('td', { text: v.manifest?.contributing_sites ?? '' }), el('td', { text: v.manifest?.num_examples ?? '' }),
      el('td', { text: `${(v.size / 1024).toFixed(1)} KiB` }), el('td', { class: 'mono', title: v.sha256, text: v.sha256.slice(0, 16) + '…' }), el('td', { text: v.created.replace('T', ' ').slice(0, 19) }),
      el('td', {}, files.map((f) => el('a', { href: `/api/jobs/${enc(jobId)}/adapters/${v.version}/${f}`, download: f, 'data-file': f, class: 'dl', text: f.replace('adapter_', '').replace('.safetensors', '') }))))), { class: 'adapters' });
}

async function renderJob(jobId) {
  const J = `/api/jobs/${enc(jobId)}`;
  const [metrics, summary, cx, privacy, rounds, adapters] = await Promise.all([
    getJson(`${J}/metrics`), getJson(`${J}/metrics/summary`), getJson(`${J}/cross-eval`), getJson(`${J}/privacy`), getJson(`${J}/rounds`), getJson(`${J}/adapters`),
  ]);
  const colours = siteColours(metrics.metrics);
  $('charts').replaceChildren(
    globalVsLocal(metrics.metrics, 'loss', 'held-out loss per site: global (dashed) vs local-only (solid)', colours),
    globalVsLocal(metrics.metrics, 'accuracy', 'held-out accuracy per site: global (dashed) vs local-only (solid)', colours),
  );
  $('summary').replaceChildren(summaryTable(summary.summary));
  $('cross').replaceChildren(crossEvalView(cx, jobId));
  $('privacy').replaceChildren(privacyChart(privacy));
  $('timeline').replaceChildren(roundsTimeline(rounds.rounds));
  $('adapters').replaceChildren(adapterTable(jobId, adapters.versions));
  $('exports').replaceChildren(
    ...[['metrics.csv', `${J}/metrics?format=csv`], ['metrics.json', `${J}/metrics`], ['summary.csv', `${J}/metrics/summary?format=csv`], ['cross-eval.csv', `${J}/cross-eval?format=csv`]]
      .map(([label, href]) => el('a', { href, class: 'dl', text: label })),
  );
  return privacy;
}

async function refresh() {
  try {
    const [{ jobs }, { sites }] = await Promise.all([getJson('/api/jobs'), getJson('/api/sites')]);
    if (!state.jobId || !jobs.some((j) => j.id === state.jobId)) state.jobId = (jobs.find((j) => j.status === 'running') ?? jobs[jobs.length - 1])?.id ?? null;
    const sel = $('job-select');
    sel.replaceChildren(...jobs.map((j) => el('option', { value: j.id, selected: j.id === state.jobId, text: `${j.name} (${j.id}, ${j.status})` })));
    let privacy = null;
    $('job').hidden = !state.jobId;
    if (state.jobId) privacy = await renderJob(state.jobId);
    await renderOverview(jobs, sites, privacy);
    setError(null);
    $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.ready = 'true';
  } catch (e) {
    setError(e.message);
  }
}

function init() {
  const tok = $('token');
  tok.value = sessionStorage.getItem(TOKEN_KEY) ?? '';
  tok.addEventListener('change', () => (tok.value ? sessionStorage.setItem(TOKEN_KEY, tok.value.trim()) : sessionStorage.removeItem(TOKEN_KEY)));
  $('job-select').addEventListener('change', (e) => {
    state.jobId = e.target.value;
    history.replaceState(null, '', `?job=${enc(state.jobId)}`);
    void refresh();
  });
  void refresh();
  state.timer = setInterval(() => void refresh(), 10_000);
}

init();
