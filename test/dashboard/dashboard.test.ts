// The researchers' dashboard in a real headless Chromium against a real coordinator
// (startCoordinator in a temp dir, loopback HTTP): a finished 3-site, 3-round DP job whose
// updates went through the round engine and whose metrics went through ReportMetrics.
// Checks series counts on the charts, the heat map, the privacy curve, the rounds timeline,
// the adapter table's download links; saves test-artifacts/dashboard.png.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdirSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { chromium, type Browser, type Page } from 'playwright-core';
import { initCoordinator, startCoordinator, type RunningCoordinator } from '../../coordinator/service.ts';
import { parseJobSpec } from '../../coordinator/jobs/spec.ts';
import { rawSpec, rmDir, tempDir } from '../coordinator/helpers.ts';
import { reportCross, reportEval, runRounds } from '../metrics/fixtures.ts';

const CHROMIUM = process.env.FEDLORA_CHROMIUM ?? '/usr/bin/chromium';
const SITES = ['site-a', 'site-b', 'site-c'];
const ROUNDS = 3;
let dir: string;
let coord: RunningCoordinator;
let browser: Browser;
let page: Page;
const pageErrors: string[] = [];

beforeAll(async () => {
  dir = tempDir('dashboard');
  const loop = { host: '127.0.0.1', port: 0 };
  const { adminToken } = await initCoordinator({ dataDir: dir, config: { federation: loop, enrollment: loop, http: loop, rounds: { tick_ms: 50 } } });
  void adminToken;
  coord = await startCoordinator(dir, { logger: false });
  for (const s of SITES) coord.store.touchSite(s, Date.now());
  const dp = { clip_norm: 1, noise_multiplier: 1.1, delta: 1e-5, sample_rate: 1, epsilon_budget: 60, adaptive_clipping: false };
  await coord.engine.submitJob(parseJobSpec(rawSpec({ name: 'cardiology-notes', rounds: ROUNDS, privacy: { dp } }), 'test'), 'job-dash');
  await runRounds(coord.engine, 'job-dash', SITES, ROUNDS, (s) => 20 + 10 * SITES.indexOf(s));
  await coord.engine.tick();
  expect(coord.store.job('job-dash')).toMatchObject({ status: 'completed', current_version: ROUNDS });
  reportEval(coord.engine, 'job-dash', SITES, ROUNDS);
  reportCross(coord.engine, 'job-dash', SITES, ROUNDS);
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  page = await browser.newPage({ viewport: { width: 1280, height: 1900 } });
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });
  page.on('response', (r) => { if (r.status() >= 400) pageErrors.push(`HTTP ${r.status()} ${r.url()}`); });
});

afterAll(async () => {
  await browser?.close();
  await coord?.stop();
  if (dir) rmDir(dir);
});

describe('dashboard', () => {
  it('renders overview, per-site global vs local charts, heat map, privacy curve, timeline and adapter downloads', async () => {
    const res = await page.goto(`${coord.httpUrl}/`); // / redirects to /dashboard/
    expect(res?.status()).toBe(200);
    expect(page.url()).toBe(`${coord.httpUrl}/dashboard/`);
    await page.waitForSelector('body[data-ready="true"]', { timeout: 20_000 });

    // overview
    expect(await page.textContent('[data-card="sites"] .card-value')).toBe('3 / 3');
    expect(await page.textContent('[data-card="round"] .card-value')).toBe(`${ROUNDS} / ${ROUNDS}`);
    const eps = coord.store.privacyLedger('job-dash').at(-1)!.epsilon;
    expect(await page.textContent('[data-card="epsilon"] .card-value')).toBe(`${eps.toFixed(2)} / 60`);

    // loss and accuracy: one solid local + one dashed global line per site
    for (const metric of ['loss', 'accuracy']) {
      const ids = await page.$$eval(`figure[data-metric="${metric}"] path.series-line`, (ps) => ps.map((p) => [p.getAttribute('data-series'), p.getAttribute('stroke-dasharray')]));
      expect(ids.map((x) => x[0]).sort()).toEqual(SITES.flatMap((s) => [`${s}:global`, `${s}:local`]).sort());
      for (const [id, dash] of ids) expect(dash !== null, `${id} dashed`).toBe(id!.endsWith(':global'));
      // every line has one point per round
      for (const s of SITES) expect(await page.$$eval(`figure[data-metric="${metric}"] g[data-series="${s}:local"] circle`, (c) => c.length)).toBe(ROUNDS);
      expect(await page.$$eval(`figure[data-metric="${metric}"] .legend li`, (l) => l.length)).toBe(2 * SITES.length);
    }

    // cross-site heat map: 3 x 3 cells, all evaluated
    const cells = await page.$$eval('svg[data-chart="cross-eval"] g[data-cell]', (g) => g.map((x) => x.getAttribute('data-cell')));
    expect(cells).toHaveLength(SITES.length ** 2);
    expect(await page.$$eval('svg[data-chart="cross-eval"] .hm-val', (t) => t.filter((x) => x.textContent === '–').length)).toBe(0);

    // privacy ledger: one point per round and the budget line
    expect(await page.$$eval('svg[data-chart="privacy"] g[data-series="epsilon"] circle', (c) => c.length)).toBe(ROUNDS);
    expect(await page.$$eval('svg[data-chart="privacy"] [data-hline]', (l) => l.length)).toBe(1);

    // timeline: one bar per round attempt, naming its participants
    const rounds = await page.$$eval('svg[data-chart="timeline"] g[data-round]', (g) => g.map((x) => x.textContent ?? ''));
    expect(rounds).toHaveLength(ROUNDS);
    for (const r of rounds) for (const s of SITES) expect(r).toContain(s);

    // adapter table: versions 0..ROUNDS, each with 4 links that download the right bytes
    const versions = await page.$$eval('table.adapters tr[data-version]', (r) => r.map((x) => Number(x.getAttribute('data-version'))));
    expect(versions).toEqual([...Array(ROUNDS + 1).keys()]);
    const href = await page.getAttribute(`tr[data-version="${ROUNDS}"] a[data-file="adapter_model.safetensors"]`, 'href');
    const dl = await page.request.get(new URL(href!, coord.httpUrl).toString());
    expect(dl.status()).toBe(200);
    const row = coord.store.adapterVersion('job-dash', ROUNDS)!;
    expect(createHash('sha256').update(await dl.body()).digest('hex')).toBe(row.sha256);
    for (const f of ['adapter_config.json', 'manifest.json', 'manifest.sig']) {
      const h = await page.getAttribute(`tr[data-version="1"] a[data-file="${f}"]`, 'href');
      expect((await page.request.get(new URL(h!, coord.httpUrl).toString())).status(), f).toBe(200);
    }

    mkdirSync('test-artifacts', { recursive: true });
    await page.screenshot({ path: 'test-artifacts/dashboard.png', fullPage: true });
    expect(pageErrors).toEqual([]);
  });

  it('a job without cross-eval or DP says so instead of drawing empty charts; CSP allows only same-origin files', async () => {
    await coord.engine.submitJob(parseJobSpec(rawSpec({ name: 'plain', rounds: 1, min_sites: 1 }), 'test'), 'job-plain');
    await page.goto(`${coord.httpUrl}/dashboard/?job=job-plain`);
    await page.waitForSelector('body[data-ready="true"]');
    await page.waitForSelector('[data-cross="unavailable"]');
    expect(await page.textContent('[data-cross="unavailable"]')).toMatch(/no cross-evaluation results yet/);
    expect(await page.textContent('[data-privacy="off"]')).toMatch(/differential privacy is off/);
    expect(await page.$$eval('figure[data-metric="loss"] path.series-line', (p) => p.length)).toBe(0);
    const r = await page.request.get(`${coord.httpUrl}/dashboard/app.js`);
    expect(r.headers()['content-security-policy']).toMatch(/script-src 'self'/);
    expect((await page.request.get(`${coord.httpUrl}/dashboard/..%2Fservice.ts`)).status()).toBe(404);
    expect(pageErrors).toEqual([]);
  });
});
