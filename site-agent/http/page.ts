// The site's local admin page: one server-rendered HTML document (no script), every value
// HTML-escaped. Answers the hospital's question first: what has left this site?
import type { SiteView } from './site-view.ts';
import { DEFAULT_SHARE_POLICY } from '../../shared/metrics-sharing.ts';

/** What each share_site_metrics value means for who reads this site's per-site metrics. */
const SHARING: Record<string, string> = { consortium: 'consortium admins only', researchers: 'admins and researchers', none: 'no one (this site counts in aggregates only)' };

function escapeHtml(v: unknown): string {
  return String(v ?? '').replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

const kv = (o: Record<string, unknown> | null) =>
  o && Object.keys(o).length
    ? `<table>${Object.entries(o).map(([k, v]) => `<tr><th>${escapeHtml(k)}</th><td>${escapeHtml(typeof v === 'object' && v !== null ? JSON.stringify(v) : v)}</td></tr>`).join('')}</table>`
    : '<p class="muted">none</p>';

const fmtBytes = (n: number) => (n < 1024 ? `${n} B` : n < 1024 ** 2 ? `${(n / 1024).toFixed(1)} KiB` : `${(n / 1024 ** 2).toFixed(1)} MiB`);

export function renderSitePage(v: SiteView): string {
  const enr = v.enrollment as { siteId?: string; federationEndpoint?: string; notAfterUnixMs?: number; enrolledAtMs?: number; caSha256?: string } | null;
  const enrollment = enr
    ? kv({
        'site id': enr.siteId ?? v.site_id, 'federation endpoint': enr.federationEndpoint, 'CA sha256': enr.caSha256,
        enrolled: enr.enrolledAtMs ? new Date(enr.enrolledAtMs).toISOString() : '', 'certificate valid until': enr.notAfterUnixMs ? new Date(enr.notAfterUnixMs).toISOString() : '',
      })
    : '<p class="warn">not enrolled: run <code>fedlora site enroll</code></p>';
  const ds = v.dataset;
  const dataset = ds.available
    ? kv({ records: ds.records, splits: ds.splits, languages: ds.languages, quarantined: ds.quarantined, 'quarantine reasons': ds.quarantine_by_reason, 'last ingest': ds.last_ingest ?? 'never' })
    : '<p class="muted">no data ingested yet (no data_records table)</p>';
  const egressRows = v.egress.map((e) => `<tr data-egress="${e.seq}"><td>${escapeHtml(e.ts)}</td><td>${escapeHtml(e.what)}</td><td>${escapeHtml(e.subject)}</td><td>${escapeHtml(e.to)}</td>
    <td>${e.bytes === null ? '' : escapeHtml(fmtBytes(e.bytes))}</td><td class="mono">${escapeHtml(e.sha256 ? e.sha256.slice(0, 16) + '…' : '')}</td>
    <td class="mono small">${escapeHtml(JSON.stringify(Object.fromEntries(Object.entries(e.details).filter(([k]) => !['what', 'to', 'bytes', 'sha256'].includes(k)))))}</td></tr>`).join('');
  const rounds = v.recent_rounds.map((r) => `<tr><td>${escapeHtml(r.at)}</td><td>${escapeHtml(r.job)}</td><td>${escapeHtml(r.round)}</td><td>${escapeHtml(r.status)}</td></tr>`).join('');
  const tasks = v.recent_tasks.map((r) => `<tr><td>${escapeHtml(r.ts)}</td><td>${escapeHtml(r.action)}</td><td>${escapeHtml(r.subject)}</td></tr>`).join('');
  const t = v.egress_totals;
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>fedlora site ${escapeHtml(v.site_id ?? '')}</title>
<style>
body{font:14px/1.45 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#14213d;color:#fff;padding:10px 20px}h1{font-size:18px;margin:0}
main{padding:10px 20px;max-width:1200px}h2{font-size:15px;margin:20px 0 6px}
table{border-collapse:collapse;background:#fff;border:1px solid #d0d5dd;width:100%;font-size:13px}
th,td{text-align:left;padding:3px 8px;border-bottom:1px solid #eaecf0;vertical-align:top}th{background:#f0f2f5;width:16em}
.mono{font-family:ui-monospace,monospace}.small{font-size:11px}.muted{color:#667085}.warn{color:#b42318}
.on{color:#12805c}.off{color:#b42318}.totals{font-size:15px}
</style></head>
<body><header><h1>fedlora site agent — ${escapeHtml(v.site_id ?? 'not enrolled')}</h1></header><main>
<h2>Status</h2>
<p>agent <b>${escapeHtml(v.agent.state)}</b> · coordinator <b class="${v.agent.connected ? 'on' : 'off'}">${v.agent.connected ? 'connected' : 'not connected'}</b>
${v.agent.current_task ? ` · task ${escapeHtml(v.agent.current_task)}` : ''} · training ${escapeHtml(v.agent.training_tokens_per_s.toFixed(1))} tokens/s
${v.agent.last_error ? `<br><span class="warn">last error: ${escapeHtml(v.agent.last_error)}</span>` : ''}</p>
<h2>What left this site</h2>
<p class="totals" id="egress-totals">${t.updates} adapter update(s), ${escapeHtml(fmtBytes(t.update_bytes))} · ${t.metric_reports} aggregate metric report(s)${t.other ? ` · ${t.other} other` : ''} — patient records never leave; every transfer is in the tamper-evident audit log.</p>
<p id="metrics-sharing">Per-site metrics on the coordinator's API are visible to <b>${escapeHtml(SHARING[String(v.policy?.share_site_metrics ?? DEFAULT_SHARE_POLICY)] ?? v.policy?.share_site_metrics)}</b> (policy.share_site_metrics: ${escapeHtml(v.policy?.share_site_metrics ?? DEFAULT_SHARE_POLICY)}; sent in every heartbeat, enforced by the coordinator).</p>
${egressRows ? `<table id="egress"><tr><th>time</th><th>what</th><th>job/round</th><th>to</th><th>size</th><th>sha256</th><th>details</th></tr>${egressRows}</table>` : '<p class="muted" id="egress">nothing has left this site yet</p>'}
<h2>Enrollment</h2>${enrollment}
<h2>Dataset</h2>${dataset}
<h2>Site policy (enforced here, whatever the coordinator asks)</h2>${kv(v.policy)}
<h2>Recent rounds</h2>${rounds ? `<table><tr><th>time</th><th>job</th><th>round</th><th>result</th></tr>${rounds}</table>` : '<p class="muted">no rounds since the agent started</p>'}
${tasks ? `<h2>Recent tasks (audit log)</h2><table><tr><th>time</th><th>event</th><th>job/round</th></tr>${tasks}</table>` : ''}
<p class="muted">JSON: <a href="/api/status">/api/status</a> · Prometheus: <a href="/metrics">/metrics</a></p>
</main></body></html>
`;
}
