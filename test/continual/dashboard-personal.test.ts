// The dashboard's third line (real Chromium, the coordinator service on loopback): a site that
// makes personalised adapters reports them as kind "personal" through ReportMetrics, and the
// job's loss and accuracy charts show a "personalised" line per such site beside its global and
// local-only lines (figures of a subset, such as data=earlier, stay off the whole-set charts);
// the summary table has the personal rows.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';
import type { Browser } from 'playwright-core';
import { initCoordinator, startCoordinator, type RunningCoordinator } from '../../coordinator/service.ts';
import { parseJobSpec } from '../../coordinator/jobs/spec.ts';
import { rawSpec, rmDir, tempDir } from '../coordinator/helpers.ts';
import { reportEval, runRounds } from '../metrics/fixtures.ts';
import { launchChromium } from '../runner/browser.ts';

const SITES = ['site-a', 'site-b'];
const ROUNDS = 3;
const personalLoss = (site: string, round: number) => 2 - 0.3 * round + (site === 'site-a' ? 0 : 0.05);
let dir: string;
let coord: RunningCoordinator;
let browser: Browser;
let admin = '';

beforeAll(async () => {
  dir = tempDir('dash-personal');
  const loop = { host: '127.0.0.1', port: 0 };
  admin = (await initCoordinator({ dataDir: dir, config: { federation: loop, enrollment: loop, http: loop, rounds: { tick_ms: 50 } } })).adminToken;
  coord = await startCoordinator(dir, { logger: false });
  for (const s of SITES) coord.store.touchSite(s, Date.now());
  await coord.engine.submitJob(parseJobSpec(rawSpec({ name: 'personal lines', rounds: ROUNDS }), 'test'), 'job-p');
  await runRounds(coord.engine, 'job-p', SITES, ROUNDS);
  await coord.engine.tick();
  reportEval(coord.engine, 'job-p', SITES, ROUNDS);
  for (let round = 1; round <= ROUNDS; round++) {
    for (const site of SITES) {
      coord.engine.reportMetrics(site, {
        taskId: `job-p.r${round}.a1.${site}`, jobId: 'job-p', round, phase: 'eval',
        metrics: [
          { kind: 'personal', name: 'loss', value: personalLoss(site, round), count: 10, modelOwner: '', adapterVersion: round },
          { kind: 'personal', name: 'accuracy', value: 0.5, count: 10, modelOwner: '', adapterVersion: round },
          { kind: 'personal', name: 'loss', value: 99, count: 5, modelOwner: '', adapterVersion: round, subset: 'data=earlier' },
        ],
      });
    }
  }
  browser = await launchChromium();
}, TEST_TIMEOUT_MS);

afterAll(async () => {
  await browser?.close();
  await coord?.stop();
  if (dir) rmDir(dir);
});

describe('dashboard: personalised line', () => {
  it('draws each site\'s personalised adapter beside its global and local-only lines, and lists it in the summary', async () => {
    const context = await browser.newContext({ viewport: { width: 1280, height: 1900 } });
    const page = await context.newPage();
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    await page.goto(`${coord.httpUrl}/dashboard/?job=job-p`);
    await page.fill('#token', admin);
    await page.click('#login button[type="submit"]');
    await page.waitForSelector('body[data-ready="true"]', { timeout: 30_000 });
    const plot = await page.$eval('figure[data-metric="loss"]', (f) => {
      const u = (f as HTMLElement & { plot: { series: { label: string; dash?: number[]; width?: number }[]; data: (number | null)[][] } }).plot;
      return { labels: u.series.slice(1).map((s) => s.label), dashed: u.series.slice(1).map((s) => !!s.dash), width: u.series.slice(1).map((s) => s.width), data: u.data.slice(1) };
    });
    expect([...plot.labels].sort()).toEqual(SITES.flatMap((s) => [`${s} global`, `${s} local-only`, `${s} personalised`]).sort());
    for (const site of SITES) {
      const i = plot.labels.indexOf(`${site} personalised`);
      expect(plot.dashed[i]).toBe(false);
      expect(plot.width[i]).toBe(1);
      // The whole-set values per round (the subset's 99 is not on this chart).
      expect(plot.data[i]).toEqual([1, 2, 3].map((r) => personalLoss(site, r)));
    }
    expect(await page.textContent('figure[data-metric="loss"]')).toMatch(/personalised \(thin\)/);
    const summaryKinds = await page.$$eval('table.summary tbody tr td:nth-child(2)', (tds) => [...new Set(tds.map((t) => t.textContent))].sort());
    expect(summaryKinds).toEqual(['global', 'local', 'personal']);
    expect(errors).toEqual([]);
    await context.close();
  }, TEST_TIMEOUT_MS);
});
