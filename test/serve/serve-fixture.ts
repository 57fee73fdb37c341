// What the review and workbench tests set up alike: synthetic records ingested into the test
// site through the real CSV path, and a Chromium page signed in with a user's key through the
// page's own form (Enter in the key field).
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import YAML from 'yaml';
import type { Browser, Page } from 'playwright-core';
import { ingestIntoSite } from '../../site-agent/data/index.ts';
import { toCsv, type SynthRecord } from '../../site-agent/data/synth/generate.ts';
import type { TestSite } from './helpers.ts';

/** Ingest `records` as the site's CSV export, requiring only patientId and chiefComplaint (so
 *  records without a diagnosis are kept, for the workbench's unlabelled queue) -> records accepted. */
export async function ingestRecords(site: TestSite, records: SynthRecord[]): Promise<number> {
  const cfgFile = join(site.siteDir, 'site.yaml');
  writeFileSync(cfgFile, YAML.stringify({ ...YAML.parse(readFileSync(cfgFile, 'utf8')), data: { required: ['patientId', 'chiefComplaint'] } }));
  const csv = join(site.dir, 'records.csv');
  writeFileSync(csv, toCsv(records));
  return (await ingestIntoSite(site.siteDir, [csv], { format: 'csv' })).accepted;
}

/** A new page at `url` signed in with `key`, once `ready` (a selector) shows; the page's script
 *  errors and console errors are appended to `errors`. */
export async function signedInPage(browser: Browser, url: string, key: string, o: { locale: string; errors: string[]; ready?: string }): Promise<Page> {
  const page = await browser.newPage({ locale: o.locale });
  page.setDefaultTimeout(0); // waits end with the work (the test's own timeout scales with the machine's load)
  page.on('pageerror', (e) => o.errors.push(e.message));
  page.on('console', (m) => { if (m.type() === 'error') o.errors.push(m.text()); });
  await page.goto(url);
  await page.focus('#key');
  await page.keyboard.type(key);
  await page.keyboard.press('Enter');
  await page.waitForSelector(o.ready ?? '#bench:not([hidden])');
  return page;
}
