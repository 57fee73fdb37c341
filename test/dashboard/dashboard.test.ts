// The consortium dashboard in a real headless Chromium against a real coordinator
// (startCoordinator in a temp dir, loopback HTTP): a finished 3-site, 3-round DP job whose
// updates went through the round engine and whose metrics went through ReportMetrics. Two
// sites share their per-site metrics with researchers, one only with admins. Checks the token
// prompt (a wrong token refused with the reason; the token in session storage only; sign out;
// a revoked token sends the user back), and what each role sees: admins everything (uPlot
// charts with every site's series, heat map, ε curve, timeline, downloads that save the right
// bytes), researchers only the sharing sites and downloads only where the job allows, observers
// the overview — with no request the role may not make. Saves test-artifacts/dashboard*.png.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdirSync, readFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import type { Browser, Page } from 'playwright-core';
import { initCoordinator, startCoordinator, type RunningCoordinator } from '../../coordinator/service.ts';
import { parseJobSpec } from '../../coordinator/jobs/spec.ts';
import { addApiToken, revokeApiToken } from '../../coordinator/http/api-tokens.ts';
import { rawSpec, rmDir, tempDir } from '../coordinator/helpers.ts';
import { DIAGNOSES, evalCount, evalValue, examAccuracy, recallValue, replicatesAround, reportCross, reportEval, reportExam, runRounds } from '../metrics/fixtures.ts';
import { summarizeMetrics } from '../../coordinator/metrics/summary.ts';
import { replicatesOf } from '../../coordinator/metrics/consortium.ts';
import { launchChromium } from '../runner/browser.ts';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';

const SITES = ['site-a', 'site-b', 'site-c'];
const SHARING = ['site-a', 'site-b']; // share_site_metrics: researchers; site-c keeps the default (admins only)
const ROUNDS = 3;
let dir: string;
let coord: RunningCoordinator;
let browser: Browser;
const tok = { admin: '', researcher: '', observer: '' };

beforeAll(async () => {
  dir = tempDir('dashboard');
  const loop = { host: '127.0.0.1', port: 0 };
  tok.admin = (await initCoordinator({ dataDir: dir, config: { federation: loop, enrollment: loop, http: loop, rounds: { tick_ms: 50 } } })).adminToken;
  coord = await startCoordinator(dir, { logger: false });
  for (const s of SITES) coord.store.touchSite(s, Date.now(), { shareSiteMetrics: SHARING.includes(s) ? 'researchers' : 'consortium' });
  const dp = { clip_norm: 1, noise_multiplier: 1.1, delta: 1e-5, sample_rate: 1, epsilon_budget: 60, adaptive_clipping: false };
  await coord.engine.submitJob(parseJobSpec(rawSpec({ name: 'cardiology-notes', rounds: ROUNDS, privacy: { dp } }), 'test'), 'job-dash');
  await runRounds(coord.engine, 'job-dash', SITES, ROUNDS, (s) => 20 + 10 * SITES.indexOf(s));
  await coord.engine.tick();
  expect(coord.store.job('job-dash')).toMatchObject({ status: 'completed', current_version: ROUNDS });
  reportEval(coord.engine, 'job-dash', SITES, ROUNDS, { intervals: true });
  reportCross(coord.engine, 'job-dash', SITES, ROUNDS);
  reportExam(coord.engine, 'job-dash', SITES, ROUNDS, 'medqa');
  await coord.engine.submitJob(parseJobSpec(rawSpec({ name: 'open-weights', rounds: 1, access: { researcher_downloads: true } }), 'test'), 'job-open');
  await runRounds(coord.engine, 'job-open', SITES, 1);
  await coord.engine.tick();
  tok.researcher = addApiToken(coord.store.db, { name: 'ana', role: 'researcher', ttlMs: 3_600_000 }).token;
  tok.observer = addApiToken(coord.store.db, { name: 'wall-screen', role: 'observer', ttlMs: null }).token;
  browser = await launchChromium();
}, TEST_TIMEOUT_MS);

afterAll(async () => {
  await browser?.close();
  await coord?.stop();
  if (dir) rmDir(dir);
});

/** A fresh browser context (its own session storage), the page, and what it asked and got. */
async function open(path = '/') {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1900 }, acceptDownloads: true });
  const page = await context.newPage();
  const errors: string[] = [];
  const api: string[] = [];
  page.on('pageerror', (e) => errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error' && !/status of 401/.test(m.text())) errors.push(m.text()); });
  page.on('response', (r) => {
    const u = new URL(r.url());
    if (u.pathname.startsWith('/api/') || u.pathname === '/metrics') api.push(`${r.status()} ${u.pathname}`);
  });
  const res = await page.goto(`${coord.httpUrl}${path}`);
  expect(res?.status()).toBe(200);
  return { page, errors, api, close: () => context.close() };
}

async function signIn(page: Page, token: string) {
  await page.fill('#token', token);
  await page.click('#login button[type="submit"]');
  await page.waitForSelector('body[data-ready="true"]', { timeout: TEST_TIMEOUT_MS / 2 });
}

/** What a uPlot chart holds: the series labels (x first), dash patterns, and non-null points per series. */
const plotOf = (page: Page, sel: string) => page.$eval(sel, (f) => {
  const u = (f as HTMLElement & { plot: { series: { label: string; dash?: number[] }[]; data: (number | null)[][] } }).plot;
  return { labels: u.series.slice(1).map((s) => s.label), dashed: u.series.slice(1).map((s) => !!s.dash), points: u.data.slice(1).map((c) => c.filter((v) => v !== null).length) };
});

/** Pixels of the chart's canvas drawn in a colour (the plot was really painted). */
const pixelsOf = (page: Page, sel: string, rgb: [number, number, number]) => page.$eval(sel, (f, c) => {
  const cv = f.querySelector('canvas')!;
  const d = cv.getContext('2d')!.getImageData(0, 0, cv.width, cv.height).data;
  let n = 0;
  for (let i = 0; i < d.length; i += 4) if (Math.abs(d[i] - c[0]) + Math.abs(d[i + 1] - c[1]) + Math.abs(d[i + 2] - c[2]) < 40 && d[i + 3] > 200) n++;
  return n;
}, rgb);

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('dashboard: the token prompt', () => {
  it('asks for a token before reading anything; a wrong one is refused with the reason; the token lives in session storage only; sign out forgets it', async () => {
    const { page, errors, api, close } = await open();
    expect(page.url()).toBe(`${coord.httpUrl}/dashboard/`); // / redirects
    await page.waitForSelector('body[data-ready="login"]');
    expect(await page.isVisible('#login')).toBe(true);
    expect(await page.isVisible('#main')).toBe(false);
    expect(api).toEqual([]); // nothing is read without a token

    await page.fill('#token', 'flt_not-a-token');
    await page.click('#login button[type="submit"]');
    await page.waitForSelector('#login-error:not([hidden])');
    expect(await page.textContent('#login-error')).toBe('FEDLORA_ERR_UNAUTHENTICATED: token not recognised');
    expect(api).toEqual(['401 /api/whoami']);
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0);

    await signIn(page, tok.admin);
    expect(await page.textContent('#who')).toBe('init · admin');
    expect(await page.evaluate(() => [sessionStorage.getItem('fedlora.token'), localStorage.length, document.cookie])).toEqual([tok.admin, 0, '']);
    expect(await page.inputValue('#token')).toBe(''); // not left in the form either
    await page.click('#sign-out');
    await page.waitForSelector('body[data-ready="login"]');
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
    expect(errors).toEqual([]);
    await close();
  });
});

describe('dashboard: what each role sees', () => {
  it('admin: every site\'s series on uPlot charts, the heat map, the ε curve, the timeline, downloads that save the right bytes', async () => {
    const { page, errors, api, close } = await open('/dashboard/?job=job-dash');
    await signIn(page, tok.admin);

    expect(await page.textContent('[data-card="sites"] .card-value')).toBe('3 / 3');
    expect(await page.textContent('[data-card="round"] .card-value')).toBe(`${ROUNDS} / ${ROUNDS}`);
    const eps = coord.store.privacyLedger('job-dash').at(-1)!.epsilon;
    expect(await page.textContent('[data-card="epsilon"] .card-value')).toBe(`${eps.toFixed(2)} / 60`);
    expect(await page.$$eval('[data-share]', (c) => c.map((x) => x.textContent))).toEqual(['admins, researchers', 'admins, researchers', 'admins']);

    for (const metric of ['loss', 'accuracy']) {
      const p = await plotOf(page, `figure[data-metric="${metric}"]`);
      expect([...p.labels].sort()).toEqual(SITES.flatMap((s) => [`${s} global`, `${s} local-only`]).sort());
      p.labels.forEach((l, i) => expect(p.dashed[i], l).toBe(l.endsWith(' global')));
      expect(p.points).toEqual(p.labels.map(() => ROUNDS)); // one point per round on every line
      expect(await page.$$eval(`figure[data-metric="${metric}"] .u-legend .u-series`, (r) => r.length)).toBe(1 + 2 * SITES.length);
      expect(await pixelsOf(page, `figure[data-metric="${metric}"]`, [0x1f, 0x77, 0xb4])).toBeGreaterThan(50); // site-a's colour is painted
    }
    expect(await page.isVisible('#withheld')).toBe(false);

    // 95% intervals as error bars: every site's accuracy per round, exactly the interval it sent
    type Bar = { series: string; x: number; lo: number; hi: number };
    const barsOf = (sel: string) => page.$eval(sel, (f) => (f as HTMLElement & { errorBars: Bar[] }).errorBars);
    const bars = await barsOf('figure[data-metric="accuracy"]');
    expect(bars).toHaveLength(SITES.length * 2 * ROUNDS);
    const a3 = bars.find((b) => b.series === 'site-a:global' && b.x === ROUNDS)!;
    const sent = replicatesAround(evalValue('site-a', 'global', 'accuracy', ROUNDS), 0.02 * (1 + ('a'.charCodeAt(0) % 3)), ROUNDS * 13 + 'a'.charCodeAt(0)).ci;
    expect([a3.lo, a3.hi]).toEqual([sent.low, sent.high]);
    // the consortium figure with the coordinator's pooled interval, per round, global and local-only
    const rows = coord.store.metrics('job-dash', {});
    const summary = summarizeMetrics(rows, replicatesOf(coord.store.db, rows.map((r) => r.id)));
    const cBars = await barsOf('figure[data-consortium="accuracy"]');
    expect(cBars).toHaveLength(2 * ROUNDS);
    for (const b of cBars) {
      const s = summary.find((x) => `consortium:${x.kind}` === b.series && x.round === b.x && x.metric === 'accuracy' && x.subset === '' && x.eval_set === '')!;
      expect(s.ci_low).not.toBeNull();
      expect([b.lo, b.hi]).toEqual([s.ci_low, s.ci_high]);
    }
    const acc3 = SITES.reduce((a, x) => a + evalCount(x) * evalValue(x, 'global', 'accuracy', ROUNDS), 0) / SITES.reduce((a, x) => a + evalCount(x), 0);
    expect(await page.textContent(`tr[data-summary="${ROUNDS}:global:accuracy"] td:nth-child(6)`)).toBe(acc3.toFixed(4));
    expect(await page.textContent(`tr[data-summary="${ROUNDS}:global:accuracy"] td.ci`)).toMatch(/^\[0\.\d{4}, 0\.\d{4}\]$/);
    // per-diagnosis recall of the newest global adapter: pooled by support, with its interval
    expect(await page.$$eval('table.diagnoses tr[data-diagnosis]', (r) => r.map((x) => x.getAttribute('data-diagnosis')))).toEqual(DIAGNOSES);
    for (const [i, d] of DIAGNOSES.entries()) {
      const recall = SITES.reduce((a, x) => a + evalCount(x) / 2 * recallValue(x, i, ROUNDS), 0) / SITES.reduce((a, x) => a + evalCount(x) / 2, 0);
      const cells = await page.$$eval(`tr[data-diagnosis="${d}"] td`, (t) => t.map((x) => x.textContent));
      expect(cells[1]).toBe(recall.toFixed(3));
      expect(cells[2]).toMatch(/^\[0\.\d{3}, 0\.\d{3}\]$/);
      expect(cells[6]).toBe(String(SITES.reduce((a, x) => a + evalCount(x) / 2, 0)));
    }

    // the exam the sites scored: consortium accuracy (equal counts: the mean) with its pooled interval, overall and per subject
    const exam = await page.$$eval('table.exams tr[data-exam]', (r) => r.map((x) => [x.getAttribute('data-exam'), ...[...x.querySelectorAll('td')].map((t) => t.textContent)]));
    const mean = (subject: string) => (SITES.reduce((a, x) => a + examAccuracy(x, subject), 0) / SITES.length).toFixed(3);
    expect(exam).toEqual([
      ['exam:medqa:', String(ROUNDS), 'global', 'medqa', 'all', mean(''), expect.stringMatching(/^\[0\.\d{3}, 0\.\d{3}\]$/), '3', '36'],
      ['exam:medqa:subject=cardiology', String(ROUNDS), 'global', 'medqa', 'cardiology', mean('cardiology'), expect.stringMatching(/^\[0\.\d{3}, 0\.\d{3}\]$/), '3', '12'],
    ]);

    const cells = await page.$$eval('svg[data-chart="cross-eval"] g[data-cell]', (g) => g.map((x) => x.getAttribute('data-cell')));
    expect(cells).toHaveLength(SITES.length ** 2);
    expect(await page.isVisible('#cross-request')).toBe(true);

    const eps2 = await plotOf(page, 'figure[data-chart="privacy"]');
    expect(eps2.labels).toEqual(['ε spent', 'budget ε = 60']);
    expect(eps2.points).toEqual([ROUNDS, ROUNDS]);

    const rounds = await page.$$eval('svg[data-chart="timeline"] g[data-round]', (g) => g.map((x) => x.textContent ?? ''));
    expect(rounds).toHaveLength(ROUNDS);
    for (const r of rounds) for (const s of SITES) expect(r).toContain(s);

    const versions = await page.$$eval('table.adapters tr[data-version]', (r) => r.map((x) => Number(x.getAttribute('data-version'))));
    expect(versions).toEqual([...Array(ROUNDS + 1).keys()]);
    const [dl] = await Promise.all([page.waitForEvent('download'), page.click(`tr[data-version="${ROUNDS}"] button[data-file="adapter_model.safetensors"]`)]);
    expect(dl.suggestedFilename()).toBe('adapter_model.safetensors');
    expect(sha256(readFileSync((await dl.path())!))).toBe(coord.store.adapterVersion('job-dash', ROUNDS)!.sha256);
    const [csv] = await Promise.all([page.waitForEvent('download'), page.click('button[data-export="metrics.csv"]')]);
    expect(readFileSync((await csv.path())!, 'utf8').split('\n')[0]).toBe('job_id,round,site_id,kind,metric,subset,eval_set,value,ci_low,ci_high,count,model_owner,adapter_version,phase,created_ms');

    expect(api.filter((a) => !a.startsWith('200 '))).toEqual([]);
    mkdirSync('test-artifacts', { recursive: true });
    await page.screenshot({ path: 'test-artifacts/dashboard.png', fullPage: true });
    expect(errors).toEqual([]);
    await close();
  });

  it('researcher: only the sites that share with researchers, named what is withheld, no admin action, downloads only where the job allows', async () => {
    const { page, errors, api, close } = await open('/dashboard/?job=job-dash');
    await signIn(page, tok.researcher);
    expect(await page.textContent('#who')).toMatch(/^ana · researcher · until \d{4}-\d\d-\d\d$/);
    for (const metric of ['loss', 'accuracy']) {
      expect([...(await plotOf(page, `figure[data-metric="${metric}"]`)).labels].sort()).toEqual(SHARING.flatMap((s) => [`${s} global`, `${s} local-only`]).sort());
    }
    expect(await page.textContent('#withheld')).toMatch(/^Not shown per site \(their policy share_site_metrics keeps it from a researcher\): site-c; they still count in the averages\.$/);
    expect(await page.$$eval('svg[data-chart="cross-eval"] g[data-cell]', (g) => g.map((x) => x.getAttribute('data-cell')).sort())).toEqual(['site-a:site-a', 'site-a:site-b', 'site-b:site-a', 'site-b:site-b']);
    expect(await page.$$eval('svg[data-chart="timeline"] g[data-round]', (g) => g.length)).toBe(ROUNDS);
    expect(await page.isVisible('#cross-request')).toBe(false);
    expect(await page.$$eval('table.adapters button[data-file]', (b) => b.length)).toBe(0);
    expect(await page.textContent(`tr[data-version="${ROUNDS}"]`)).toMatch(/not for researchers \(job spec access\.researcher_downloads\)/);

    await page.selectOption('#job-select', 'job-open');
    await page.waitForSelector('tr[data-version="1"] button[data-file="adapter_model.safetensors"]');
    const [dl] = await Promise.all([page.waitForEvent('download'), page.click('tr[data-version="1"] button[data-file="adapter_model.safetensors"]')]);
    expect(sha256(readFileSync((await dl.path())!))).toBe(coord.store.adapterVersion('job-open', 1)!.sha256);

    expect(api.filter((a) => !a.startsWith('200 '))).toEqual([]); // it never asks for what a researcher may not read
    await page.screenshot({ path: 'test-artifacts/dashboard-researcher.png', fullPage: true });
    expect(errors).toEqual([]);
    await close();
  });

  it('observer: the overview only (health and progress), reading nothing else', async () => {
    const { page, errors, api, close } = await open('/dashboard/?job=job-dash');
    await signIn(page, tok.observer);
    expect(await page.textContent('#who')).toBe('wall-screen · observer');
    expect(await page.textContent('[data-card="sites"] .card-value')).toBe('3 / 3');
    expect(await page.textContent('[data-card="round"] .card-value')).toBe(`${ROUNDS} / ${ROUNDS}`);
    expect(await page.textContent('[data-card="epsilon"] .card-value')).toBe('budget 60');
    for (const hidden of ['#job', '#sites']) expect(await page.isVisible(hidden), hidden).toBe(false);
    expect(await page.$$eval('#job-select option', (o) => o.length)).toBe(2);
    expect([...new Set(api)].sort()).toEqual(['200 /api/health', '200 /api/jobs', '200 /api/whoami']);
    expect(errors).toEqual([]);
    await close();
  });

  it('a token revoked while the tab is open sends the user back to the prompt with the reason', async () => {
    const { page, close } = await open();
    await signIn(page, tok.researcher);
    revokeApiToken(coord.store.db, 'ana');
    await page.reload();
    await page.waitForSelector('#login-error:not([hidden])');
    expect(await page.textContent('#login-error')).toMatch(/^FEDLORA_ERR_API_TOKEN_EXPIRED: token "ana" was revoked at /);
    expect(await page.evaluate(() => sessionStorage.length)).toBe(0);
    await close();
  });

  it('a job without cross-eval or DP says so instead of drawing empty charts; CSP allows only same-origin files', async () => {
    await coord.engine.submitJob(parseJobSpec(rawSpec({ name: 'plain', rounds: 1, min_sites: 1 }), 'test'), 'job-plain');
    const { page, errors, close } = await open('/dashboard/?job=job-plain');
    await signIn(page, tok.admin);
    await page.waitForSelector('[data-cross="unavailable"]');
    expect(await page.textContent('[data-cross="unavailable"]')).toMatch(/no cross-evaluation results yet/);
    expect(await page.textContent('[data-privacy="off"]')).toMatch(/differential privacy is off/);
    expect(await page.textContent('figure[data-metric="loss"] .empty')).toBe('no loss reported yet');
    for (const f of ['app.js', 'vendor/uplot.js']) {
      const r = await page.request.get(`${coord.httpUrl}/dashboard/${f}`);
      expect(r.status(), f).toBe(200);
      expect(r.headers()['content-security-policy']).toMatch(/script-src 'self'/);
    }
    expect((await page.request.get(`${coord.httpUrl}/dashboard/vendor/uplot.js`)).headers()['content-type']).toMatch(/^text\/javascript/);
    expect((await page.request.get(`${coord.httpUrl}/dashboard/..%2Fservice.ts`)).status()).toBe(404);
    expect(errors).toEqual([]);
    await close();
  });
});
