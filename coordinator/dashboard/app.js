// The consortium dashboard: asks for an API token, learns its role (/api/whoami) and shows only
// what that role may read — observers the overview, researchers and admins the job views with
// the per-site data the sites' policies let them see (the API filters it). Refreshed every 15 s.
// A new view of a job is one entry in JOB_VIEWS; a new panel for some roles, an element with
// data-roles in index.html.
import { el } from './svg.js';
import { AuthError, getJson, token } from './api.js';
import * as V from './job-views.js';

const $ = (id) => document.getElementById(id);
const enc = encodeURIComponent;
const READERS = ['admin', 'researcher'];
const SHARED_WITH = { consortium: 'admins', researchers: 'admins, researchers', none: 'no one' };
const state = { jobId: new URLSearchParams(location.search).get('job'), me: null, timer: null };

function setError(msg) {
  $('error').textContent = msg ?? '';
  $('error').hidden = !msg;
}

/** The views of the selected job: the API reads each needs (paths under /api/jobs/:id, or from /
 *  for a read across jobs) and what it draws where. */
const JOB_VIEWS = [
  {
    target: 'charts', reads: ['metrics'],
    render: ({ metrics }) => {
      const colours = V.siteColours(metrics.metrics);
      return [
        V.globalVsLocal(metrics.metrics, 'loss', 'held-out loss per site: global (dashed) vs local-only (solid) vs personalised (thin)', colours),
        V.globalVsLocal(metrics.metrics, 'accuracy', 'held-out accuracy per site: global (dashed) vs local-only (solid) vs personalised (thin)', colours),
      ];
    },
  },
  {
    target: 'withheld', reads: ['metrics'],
    render: ({ metrics }) => {
      $('withheld').hidden = metrics.withheld_sites.length === 0;
      return [`Not shown per site (their policy share_site_metrics keeps it from a ${state.me.role}): ${metrics.withheld_sites.join(', ')}; they still count in the averages.`];
    },
  },
  {
    target: 'consortium', reads: ['metrics/summary'],
    render: (d) => [V.consortiumChart(d['metrics/summary'].summary, 'accuracy', 'consortium held-out accuracy (weighted by count) with 95% intervals')],
  },
  { target: 'summary', reads: ['metrics/summary'], render: (d) => [V.summaryTable(d['metrics/summary'].summary)] },
  { target: 'diagnoses', reads: ['metrics/summary'], render: (d) => [V.diagnosisTable(d['metrics/summary'].summary)] },
  { target: 'exams', reads: ['metrics/summary'], render: (d) => [V.examTable(d['metrics/summary'].summary)] },
  { target: 'cross', reads: ['cross-eval'], render: (d) => [V.crossEvalView(d['cross-eval'], state.jobId, { canRequest: state.me.role === 'admin', onError: setError })] },
  { target: 'privacy', reads: ['privacy'], render: (d) => [V.privacyChart(d.privacy)] },
  { target: 'timeline', reads: ['rounds'], render: (d) => [V.roundsTimeline(d.rounds.rounds)] },
  {
    target: 'adapters', reads: ['adapters'],
    render: (d, job) => [V.adapterTable(state.jobId, d.adapters.versions, { canDownload: state.me.role === 'admin' || job.spec.access?.researcher_downloads === true, onError: setError })],
  },
  { target: 'exports', reads: [], render: () => V.exportButtons(state.jobId, setError) },
  { target: 'tree', reads: ['/api/versions'], render: (d) => [V.versionTree(d['/api/versions'].versions, state.jobId)] },
];

async function renderJob(job) {
  const J = `/api/jobs/${enc(job.id)}`;
  const reads = [...new Set(JOB_VIEWS.flatMap((v) => v.reads))];
  const data = Object.fromEntries(await Promise.all(reads.map(async (r) => [r, await getJson(r.startsWith('/') ? r : `${J}/${r}`)])));
  for (const v of JOB_VIEWS) $(v.target).replaceChildren(...v.render(data, job));
  return data.privacy;
}

function card(label, value, sub, id) {
  return el('div', { class: 'card', 'data-card': id }, el('div', { class: 'card-label', text: label }), el('div', { class: 'card-value', text: value }), sub ? el('div', { class: 'card-sub', text: sub }) : null);
}

function renderOverview(health, jobs, sites, privacy) {
  const job = jobs.find((j) => j.id === state.jobId);
  const cur = job?.current_round;
  const dp = job?.spec?.privacy?.dp;
  $('overview').replaceChildren(
    card('Sites online', `${health.sites_online} / ${health.sites_total}`, sites ? sites.filter((s) => s.online).map((s) => s.id).join(', ') || 'none' : `${health.jobs_running} job(s) running`, 'sites'),
    card('Job', job ? job.name : '–', job ? `${job.id} · ${job.status}${job.error ? ' · ' + job.error : ''}` : 'no job yet', 'job'),
    card('Round', cur ? `${cur.round} / ${job.rounds_total}` : '–', cur ? `attempt ${cur.attempt} · ${cur.state} · adapter v${job.current_version}` : '', 'round'),
    card('Privacy ε', privacy ? (privacy.dp_enabled ? `${privacy.epsilon_spent.toFixed(2)} / ${privacy.budget_epsilon}` : 'no DP') : dp ? `budget ${dp.epsilon_budget}` : 'no DP',
      dp ? `δ = ${dp.delta}` : 'this job adds no noise', 'epsilon'),
  );
  if (sites) {
    $('sites').replaceChildren(V.table(['site', 'online', 'status', 'state', 'last seen', 'agent', 'per-site metrics shared with'], sites.map((s) =>
      el('tr', { 'data-site': s.id }, el('td', { text: s.id }), el('td', {}, el('span', { class: s.online ? 'dot on' : 'dot off', text: s.online ? 'online' : 'offline' })),
        el('td', { text: s.status }), el('td', { text: s.state ?? '' }), el('td', { text: s.last_seen ?? 'never' }), el('td', { text: s.agent_version ?? '' }),
        el('td', { 'data-share': s.share_site_metrics, text: SHARED_WITH[s.share_site_metrics] ?? s.share_site_metrics })))));
  }
}

async function refresh() {
  try {
    const reader = READERS.includes(state.me.role);
    const [health, { jobs }, sites] = await Promise.all([getJson('/api/health'), getJson('/api/jobs'), reader ? getJson('/api/sites').then((r) => r.sites) : null]);
    if (!state.jobId || !jobs.some((j) => j.id === state.jobId)) state.jobId = (jobs.find((j) => j.status === 'running') ?? jobs[jobs.length - 1])?.id ?? null;
    $('job-select').replaceChildren(...jobs.map((j) => el('option', { value: j.id, selected: j.id === state.jobId, text: `${j.name} (${j.id}, ${j.status})` })));
    const job = jobs.find((j) => j.id === state.jobId);
    $('job').hidden = !reader || !job;
    const privacy = reader && job ? await renderJob(job) : null;
    renderOverview(health, jobs, sites, privacy);
    setError(null);
    $('updated').textContent = `updated ${new Date().toLocaleTimeString()}`;
    document.body.dataset.ready = 'true';
  } catch (e) {
    if (e instanceof AuthError) return signOut(`your token no longer works: ${e.message}`);
    setError(e.message);
  }
}

function showLogin(message) {
  $('main').hidden = true;
  $('who').hidden = $('sign-out').hidden = true;
  $('login').hidden = false;
  $('login-error').textContent = message ?? '';
  $('login-error').hidden = !message;
  document.body.dataset.ready = 'login';
}

function signOut(message) {
  clearInterval(state.timer);
  token.clear();
  state.me = null;
  delete document.body.dataset.role;
  showLogin(message);
}

async function signIn() {
  try {
    state.me = await getJson('/api/whoami');
  } catch (e) {
    if (e instanceof AuthError) return signOut(e.message);
    return showLogin(e.message);
  }
  document.body.dataset.role = state.me.role;
  for (const e of document.querySelectorAll('[data-roles]')) e.hidden = !e.dataset.roles.split(' ').includes(state.me.role);
  $('who').textContent = `${state.me.name} · ${state.me.role}${state.me.expires ? ` · until ${state.me.expires.slice(0, 10)}` : ''}`;
  $('who').hidden = $('sign-out').hidden = false;
  $('login').hidden = true;
  $('main').hidden = false;
  await refresh();
  clearInterval(state.timer);
  state.timer = setInterval(() => void refresh(), 15_000);
}

function init() {
  $('login').addEventListener('submit', (e) => {
    e.preventDefault();
    token.set($('token').value);
    $('token').value = '';
    void signIn();
  });
  $('sign-out').addEventListener('click', () => signOut());
  $('job-select').addEventListener('change', (e) => {
    state.jobId = e.target.value;
    history.replaceState(null, '', `?job=${enc(state.jobId)}`);
    void refresh();
  });
  if (token.get()) void signIn();
  else showLogin();
}

init();
