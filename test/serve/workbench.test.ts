// The annotation workbench in real Chromium (playwright-core) against the site's server with the
// engine backend on a tiny model: a doctor labels records with the keyboard (a code found by
// typing, a free-text diagnosis), a second doctor reads the same record blind and disagrees, a third
// adjudicates from the dispute queue; the first corrects one of their labels; a label the model
// disagrees with is reviewed. The site database then holds each label's provenance (who, when,
// previous label, whether suggestions were shown and which ranking), the audit log verifies, and
// `fedlora site data report` prints the doctors' kappa.
import { describe, it, expect, afterAll, beforeAll } from 'vitest';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Browser, Page } from 'playwright-core';
import { AuditLog } from '../../shared/audit.ts';
import { generateSites } from '../../site-agent/data/index.ts';
import { dxKey } from '../../site-agent/data/labels/keys.ts';
import type { LabelEntry } from '../../site-agent/data/labels/store.ts';
import { openSiteDb } from '../../site-agent/site-db.ts';
import { startServe, type RunningServe } from '../../site-agent/serve/run.ts';
import { addUser } from '../../site-agent/serve/users.ts';
import { showsSuggestions } from '../../site-agent/serve/workbench/record-view.ts';
import { launchChromium } from '../runner/browser.ts';
import { makeSite, rmDir } from './helpers.ts';
import { ingestRecords, signedInPage } from './serve-fixture.ts';

const run = promisify(execFile);
const BIN = join(import.meta.dirname, '..', '..', 'cli', 'bin.mjs');
const SHOW = 0.5;
const site = makeSite('workbench', { workbench: { double_read_fraction: 1, show_suggestions_fraction: SHOW, suggestions: { enabled: true, top_k: 5, candidates: 12, precompute_per_pass: 0 } } });
const [synth] = generateSites({ sites: 1, records: 10, lang: 'zh', skew: 0, seed: 21 });
let srv: RunningServe | null = null;
let browser: Browser | null = null;
const keys: Record<string, string> = {};

beforeAll(async () => {
  // Records 0-4 come without a diagnosis (the unlabelled queue), 5-9 with the export's.
  expect(await ingestRecords(site, synth.records.map((r, i) => (i < 5 ? { ...r, diagnosis: '', icd10: '' } : r)))).toBe(10);
  const db = openSiteDb(site.siteDir);
  for (const name of ['dr.wang', 'dr.zhao']) keys[name] = addUser(db, name, 'clinician').key;
  db.close();
  keys['dr.li'] = site.keys.clinician;
  srv = await startServe(site.siteDir, { port: 0 });
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  await srv?.close();
  rmDir(site.dir);
});

async function signedIn(user: string, errors: string[]): Promise<Page> {
  const page = await signedInPage(browser!, `${srv!.url}/workbench`, keys[user], { locale: 'zh-CN', errors });
  expect(await page.textContent('#who')).toBe(`${user} (clinician)`);
  return page;
}

const shownId = (page: Page) => page.getAttribute('#record', 'data-id');
/** Wait until the page shows a record of `queue` (and, given, that record or another than `not`). */
const showing = (page: Page, queue: string, o: { id?: string; not?: string } = {}) =>
  page.waitForFunction(({ queue, id, not }) => {
    const r = document.getElementById('record')!;
    return !document.getElementById('work')!.hidden && r.dataset.queue === queue && (id === undefined || r.dataset.id === id) && (not === undefined || r.dataset.id !== not);
  }, { queue, ...o });
const statusText = (page: Page) => page.waitForFunction(() => (document.getElementById('status')?.textContent ?? '').includes('#')).then(() => page.textContent('#status'));

async function summaryOf(user: string): Promise<{ queues: Record<string, number> }> {
  return (await (await fetch(`${srv!.url}/api/workbench/summary`, { headers: { authorization: `Bearer ${keys[user]}` } })).json()) as { queues: Record<string, number> };
}

function entries(recordId: string): LabelEntry[] {
  const db = openSiteDb(site.siteDir);
  try {
    return db.prepare('SELECT * FROM label_entries WHERE record_id = ? ORDER BY id').all(recordId) as LabelEntry[];
  } finally {
    db.close();
  }
}

describe('annotation workbench (Chromium)', () => {
  it('label with the keyboard, a blind second read disagrees, a third doctor adjudicates; provenance in the database', async () => {
    const errors: string[] = [];
    const li = await signedIn('dr.li', errors);
    await showing(li, 'unlabelled');
    expect(await li.textContent('#count-unlabelled')).toBe('(5)');
    const first = (await shownId(li))!;
    // Shown de-identified: none of the planted identifiers is on the page.
    const pageText = (await li.textContent('#record'))!;
    for (const p of synth.planted.filter((x) => x.type === 'NAME' || x.type === 'PHONE' || x.type === 'ID')) expect(pageText).not.toContain(p.text);
    expect(await li.getAttribute('#under-review', 'hidden')).not.toBeNull();
    const liShown = showsSuggestions('unlabelled', first, 'dr.li', SHOW);
    expect(await li.textContent('#suggest-note')).toEqual(liShown ? expect.stringContaining('模型版本 base') : '本次阅片不显示模型建议（用于评估建议偏倚）。');
    expect(await li.locator('#suggestions li').count()).toBe(liShown ? 5 : 0);

    // The focus is in the diagnosis field: type a code, the code list answers, Enter saves the first match.
    expect(await li.evaluate(() => document.activeElement?.id)).toBe('dx');
    await li.keyboard.type('I21');
    await li.waitForSelector('#options li[aria-selected=true]');
    expect(await li.textContent('#options li[aria-selected=true]')).toBe('I21.9 急性心肌梗死');
    await li.keyboard.press('Enter');
    expect(await statusText(li)).toMatch(/^已保存 #\d+ · I21\.9 急性心肌梗死 · 等待第二位医生$/);
    const [a] = entries(first);
    expect(a).toMatchObject({ user_name: 'dr.li', kind: 'annotation', diagnosis: '急性心肌梗死', icd10: 'I21.9', queue: 'unlabelled', previous_label_id: null, previous_source: null, model_version: 'base', suggestion_shown: liShown ? 1 : 0 });
    expect(a.suggestion_id).toBeGreaterThan(0); // the ranking is recorded even when it was hidden
    expect(Date.parse(a.created_at)).toBeGreaterThan(Date.now() - 3600_000);

    // The next record: free text that is no code (Esc closes the list, Enter saves what was typed).
    await showing(li, 'unlabelled', { not: first });
    const second = (await shownId(li))!;
    await li.keyboard.type('胸痛待查');
    await li.keyboard.press('Escape');
    await li.keyboard.press('Enter');
    expect(await statusText(li)).toContain('胸痛待查');
    expect(entries(second)[0]).toMatchObject({ diagnosis: '胸痛待查', icd10: null, user_name: 'dr.li' });

    // dr.wang reads the first record blind (double reads first) and disagrees.
    const wang = await signedIn('dr.wang', errors);
    await showing(wang, 'unlabelled');
    expect(await shownId(wang)).toBe(first);
    expect(await wang.getAttribute('#under-review', 'hidden')).not.toBeNull();
    expect(await wang.getAttribute('#reads', 'hidden')).not.toBeNull();
    expect(await wang.textContent('body')).not.toContain('dr.li');
    await wang.keyboard.type('J18');
    await wang.waitForSelector('#options li[aria-selected=true]');
    await wang.keyboard.press('Enter');
    expect(await statusText(wang)).toMatch(/J18\.9 社区获得性肺炎 · 有分歧，待裁决$/);

    // The readers do not adjudicate their own dispute; dr.zhao does, from the dispute queue (Alt+3).
    for (const reader of ['dr.li', 'dr.wang']) expect((await summaryOf(reader)).queues.dispute).toBe(0);
    const zhao = await signedIn('dr.zhao', errors);
    expect(await zhao.textContent('#count-dispute')).toBe('(1)');
    await zhao.keyboard.press('Alt+3');
    await showing(zhao, 'dispute', { id: first });
    expect(await zhao.$$eval('#reads-list li', (lis) => lis.map((l) => l.textContent))).toEqual(['dr.li: I21.9 急性心肌梗死', 'dr.wang: J18.9 社区获得性肺炎']);
    await zhao.focus('#dx');
    await zhao.keyboard.press('ArrowDown'); // the quick picks: dr.li's read first
    await zhao.keyboard.press('ArrowDown');
    expect(await zhao.textContent('#options li[aria-selected=true]')).toContain('J18.9 社区获得性肺炎');
    await zhao.keyboard.press('Enter'); // nothing typed: the highlighted pick is saved
    expect(await statusText(zhao)).toMatch(/J18\.9 社区获得性肺炎 · 已裁决$/);

    const hist = entries(first);
    expect(hist.map((e) => [e.kind, e.user_name, e.icd10, e.queue])).toEqual([
      ['annotation', 'dr.li', 'I21.9', 'unlabelled'], ['annotation', 'dr.wang', 'J18.9', 'unlabelled'], ['adjudication', 'dr.zhao', 'J18.9', 'dispute'],
    ]);
    expect(hist[1]).toMatchObject({ previous_label_id: hist[0].id, previous_diagnosis: '急性心肌梗死', previous_source: 'label', suggestion_shown: showsSuggestions('unlabelled', first, 'dr.wang', SHOW) ? 1 : 0 });
    expect(hist[2]).toMatchObject({ previous_label_id: hist[1].id, suggestion_shown: 1, suggestion_id: hist[0].suggestion_id });
    const db = openSiteDb(site.siteDir);
    expect(db.prepare('SELECT status, final_label_id FROM label_records WHERE record_id = ?').get(first)).toEqual({ status: 'adjudicated', final_label_id: hist[2].id });
    const audited = db.prepare("SELECT actor FROM site_audit WHERE action = 'label_added' AND subject = ? ORDER BY seq").pluck().all(first);
    expect(audited).toEqual(['dr.li', 'dr.wang', 'dr.zhao']);
    expect(new AuditLog(db, 'site_audit').verify().ok).toBe(true);
    db.close();

    // dr.li corrects the free-text label from "my labels" (Alt+4): the new label keeps the old one as previous.
    await li.keyboard.press('Alt+4');
    await li.waitForSelector('#mine:not([hidden]) #mine-rows tr');
    const rows = await li.$$eval('#mine-rows tr', (trs) => trs.map((tr) => tr.textContent ?? ''));
    const at = rows.findIndex((r) => r.includes('胸痛待查'));
    expect(at).toBeGreaterThanOrEqual(0);
    await li.locator('#mine-rows tr').nth(at).locator('button').focus();
    await li.keyboard.press('Enter');
    await showing(li, 'mine');
    expect(await li.textContent('#under-review')).toContain('我的标注：胸痛待查');
    await li.focus('#dx');
    await li.keyboard.type('R07');
    await li.waitForSelector('#options li[aria-selected=true]');
    await li.keyboard.press('Enter');
    await li.waitForFunction(() => (document.getElementById('mine-rows')?.textContent ?? '').includes('R07.4'));
    const fixed = entries(second);
    expect(fixed.map((e) => [e.user_name, e.diagnosis, e.icd10, e.queue])).toEqual([['dr.li', '胸痛待查', null, 'unlabelled'], ['dr.li', '胸痛', 'R07.4', 'mine']]);
    expect(fixed[1]).toMatchObject({ previous_label_id: fixed[0].id, previous_diagnosis: '胸痛待查' });
    expect(errors, errors.join('; ')).toEqual([]);
  });

  it('a label the model disagrees with is reviewed from its queue; the data report prints kappa', async () => {
    // An admin ranks the labelled records now (the server also does it while idle).
    const ranked = await fetch(`${srv!.url}/api/workbench/suggestions`, { method: 'POST', headers: { authorization: `Bearer ${site.keys.admin}`, 'content-type': 'application/json' }, body: JSON.stringify({ limit: 50 }) });
    expect(ranked.status).toBe(200);
    expect(((await ranked.json()) as { ranked: number }).ranked).toBe(5);
    const db = openSiteDb(site.siteDir);
    const rows = db.prepare("SELECT r.id, r.diagnosis, json_extract(r.json, '$.icd10') AS icd10, s.top_key FROM data_records r JOIN label_suggestions s ON s.record_id = r.id AND s.model_version = 'base' WHERE r.diagnosis IS NOT NULL ORDER BY r.id").all() as { id: string; diagnosis: string; icd10: string; top_key: string }[];
    db.close();
    const disagreeing = rows.filter((r) => dxKey(r.diagnosis, r.icd10) !== r.top_key);
    expect(rows.length).toBe(5);
    expect((await summaryOf('dr.zhao')).queues.disagree).toBe(disagreeing.length);
    expect(disagreeing.length, 'the tiny random model should disagree with some export labels').toBeGreaterThan(0);

    const errors: string[] = [];
    const zhao = await signedIn('dr.zhao', errors);
    await zhao.keyboard.press('Alt+2');
    await showing(zhao, 'disagree');
    const id = (await shownId(zhao))!;
    const rec = disagreeing.find((r) => r.id === id)!;
    expect(await zhao.textContent('#under-review')).toBe(`当前标注（导出数据）：${rec.icd10 ? `${rec.icd10} ` : ''}${rec.diagnosis}`);
    expect(await zhao.locator('#suggestions li').count()).toBe(5);
    // Keep the export's label: the first quick pick is the label under review.
    await zhao.focus('#dx');
    await zhao.keyboard.press('ArrowDown');
    await zhao.keyboard.press('Enter');
    expect(await statusText(zhao)).toContain(rec.diagnosis);
    const [e] = entries(id);
    expect(e).toMatchObject({ user_name: 'dr.zhao', queue: 'disagree', diagnosis: rec.diagnosis, previous_source: 'export', previous_diagnosis: rec.diagnosis, suggestion_shown: 1 });
    await zhao.waitForFunction((n) => document.getElementById('count-disagree')?.textContent === `(${n})`, disagreeing.length - 1);
    expect(errors, errors.join('; ')).toEqual([]);

    const { stdout } = await run(process.execPath, [BIN, 'site', 'data', 'report', '--site-dir', site.siteDir]);
    expect(stdout).toMatch(/dr\.li × dr\.wang\s+n\s+1\s+observed 0\.000\s+chance 0\.000\s+kappa 0\.000/);
    expect(stdout).toContain('adjudication queue: 0');
    expect(stdout).toMatch(/labelled records: 3 \(one doctor 0, waiting for a second doctor 2, two agreeing 0, in dispute 0, adjudicated 1\)/);
  });
});
