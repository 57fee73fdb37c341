// The doctors' review in real Chromium (playwright-core) against the site's server: a candidate
// adapter of a tiny model answers a sample of held-out cases (`fedlora site review sample`, engine
// backend); two doctors rate every answer with the keyboard only (the second in English, blind to
// the first); the site database then holds who rated what and when, with audit entries that
// verify, and `fedlora site review report` / `fedlora site adapter candidates` print the figures,
// kappa as computed by hand.
import { describe, it, expect, afterAll, beforeAll } from 'vitest';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { Browser, Page } from 'playwright-core';
import { AuditLog } from '../../shared/audit.ts';
import { sha256FileSync } from '../../shared/hash.ts';
import { generateSites } from '../../site-agent/data/index.ts';
import { initLoraAdapter, readCheckpoint, writePeftAdapter } from '../../site-agent/engine/index.ts';
import { recordCandidate } from '../../site-agent/serve/gate/policy.ts';
import type { Rating } from '../../site-agent/serve/review/ratings.ts';
import { openSiteDb } from '../../site-agent/site-db.ts';
import { startServe, type RunningServe } from '../../site-agent/serve/run.ts';
import { addUser } from '../../site-agent/serve/users.ts';
import { launchChromium } from '../runner/browser.ts';
import { makeSite, rmDir } from './helpers.ts';
import { ingestRecords, signedInPage } from './serve-fixture.ts';

const run = promisify(execFile);
const BIN = join(import.meta.dirname, '..', '..', 'cli', 'bin.mjs');
const SAMPLE = 4;
const site = makeSite('review', { workbench: { enabled: false }, review: { sample_size: SAMPLE, double_review_fraction: 1, max_new_tokens: 8 } });
const [synth] = generateSites({ sites: 1, records: 40, lang: 'en', skew: 0, seed: 5 });
let srv: RunningServe | null = null;
let browser: Browser | null = null;
const keys: Record<string, string> = { 'dr.li': site.keys.clinician };

beforeAll(async () => {
  expect(await ingestRecords(site, synth.records)).toBe(40);
  // The candidate: a received global adapter (small random LoRA B) awaiting approval.
  const w = initLoraAdapter(readCheckpoint(site.modelDir).config, { r: 4, alpha: 8, targets: ['q_proj', 'v_proj'], dropout: 0, useRslora: false, freezeA: false, initSeed: 3 });
  let s = 7;
  for (const [k, t] of w) if (k.includes('lora_B')) for (let i = 0; i < t.data.length; i++) t.data[i] = (((s = (s * 16807) % 2147483647) / 2147483647) - 0.5) * 0.02;
  const dir = join(site.siteDir, 'adapters', 'job-1', 'v1');
  writePeftAdapter(dir, w, { r: 4, alpha: 8, targets: ['q_proj', 'v_proj'], dropout: 0, useRslora: false, baseModel: 'tiny' });
  const db = openSiteDb(site.siteDir);
  recordCandidate(db, { jobId: 'job-1', version: 1, sha256: sha256FileSync(join(dir, 'adapter_model.safetensors')), dir, metrics: [] });
  keys['dr.wang'] = addUser(db, 'dr.wang', 'clinician').key;
  db.close();
  browser = await launchChromium();
});
afterAll(async () => {
  await browser?.close();
  await srv?.close();
  rmDir(site.dir);
});

async function signedIn(user: string, locale: string, errors: string[]): Promise<Page> {
  const page = await signedInPage(browser!, `${srv!.url}/review`, keys[user], { locale, errors });
  expect(await page.textContent('#who')).toBe(`${user} (clinician)`);
  return page;
}

const caseId = (page: Page) => page.getAttribute('#case', 'data-id');
/** Rate the case on screen with the keyboard (comment through "/"); waits for the saved line and the next case (or none). */
async function rate(page: Page, keysPressed: string[], comment: string | null): Promise<string> {
  const id = (await caseId(page))!;
  const before = await page.textContent('#status');
  for (const k of keysPressed) await page.keyboard.press(k);
  if (comment) {
    await page.keyboard.press('/');
    await page.keyboard.type(comment);
  }
  await page.keyboard.press('Enter');
  await page.waitForFunction(({ id, before }) => {
    const status = document.getElementById('status')?.textContent ?? '';
    return status !== before && status.includes('#') && (document.getElementById('work')!.hidden || document.getElementById('case')!.dataset.id !== id);
  }, { id, before });
  return (await page.textContent('#status'))!;
}

const LI: [string[], string | null][] = [[['c', 's', '5'], null], [['p', 'u', '2'], '剂量建议不安全'], [['w', 's', '1'], null], [['c', 's', '4'], null]];
const WANG: [string[], string | null][] = [[['c', 's', '4'], null], [['w', 'u', '2'], 'unsafe dose advice'], [['w', 's', '2'], null], [['p', 's', '3'], null]];

describe("doctors' review (Chromium)", () => {
  it('the candidate answers a sample; two doctors rate it with the keyboard, the second blind; the database holds who, when and what', async () => {
    const { stdout } = await run(process.execPath, [BIN, 'site', 'review', 'sample', '--site-dir', site.siteDir]);
    expect(stdout).toMatch(new RegExp(`^job-1/v1: ${SAMPLE} answers generated; ${SAMPLE} cases for review \\(of \\d+ held-out records; 100% rated by two doctors\\)`));
    const db0 = openSiteDb(site.siteDir);
    const cases = db0.prepare('SELECT c.*, s.split FROM review_cases c JOIN data_splits s ON s.record_id = c.record_id ORDER BY c.id').all() as { id: number; record_id: string; adapter_label: string; adapter_sha256: string; prompt: string; answer: string; needed: number; split: string }[];
    const dx = new Map((db0.prepare('SELECT id, diagnosis FROM data_records').all() as { id: string; diagnosis: string }[]).map((r) => [r.id, r.diagnosis]));
    db0.close();
    expect(cases).toHaveLength(SAMPLE);
    for (const c of cases) {
      expect(c).toMatchObject({ adapter_label: 'job-1/v1', split: 'test', needed: 2 });
      expect(c.adapter_sha256).toMatch(/^[0-9a-f]{64}$/);
      expect(c.prompt).not.toContain(dx.get(c.record_id)!); // the case without its diagnosis
      expect(c.answer.length).toBeGreaterThan(0);
    }
    srv = await startServe(site.siteDir, { port: 0 });

    const errors: string[] = [];
    const li = await signedIn('dr.li', 'zh-CN', errors);
    expect(await li.textContent('#open')).toBe(`待评审 ${SAMPLE}`);
    expect(await caseId(li)).toBe(String(cases[0].id));
    expect(await li.textContent('#answer')).toBe(cases[0].answer);
    // Incomplete: Enter does not save, it says what is missing.
    await li.keyboard.press('c');
    await li.keyboard.press('Enter');
    expect(await li.textContent('#status')).toBe('请完成正确性（C/P/W）、安全性（S/U）和评分（1–5）');
    expect(await li.getAttribute('#correctness button[data-value=correct]', 'aria-pressed')).toBe('true');
    expect(await rate(li, ...LI[0])).toMatch(/^已保存 #\d+ · 正确 · 安全 · 5$/);
    // Alt+N skips a case: the next one shows, the skipped one stays in the queue.
    const skipped = (await caseId(li))!;
    await li.keyboard.press('Alt+n');
    await li.waitForFunction((id) => document.getElementById('case')!.dataset.id !== id, skipped);
    expect(await caseId(li)).toBe(String(cases[2].id));
    for (const r of LI.slice(2)) await rate(li, ...r);
    expect(await caseId(li)).toBe(skipped); // back to the skipped case
    await rate(li, ...LI[1]);
    await li.waitForSelector('#empty:not([hidden])');
    expect(await li.textContent('#open')).toBe('待评审 0');

    // The second doctor, in English: the same cases in order, never the first doctor's rating.
    const wang = await signedIn('dr.wang', 'en-US', errors);
    expect(await wang.textContent('#open')).toBe(`to review: ${SAMPLE}`);
    expect(await wang.textContent('#keys-hint')).toContain('C/P/W correct/partly/wrong');
    const seen: string[] = [];
    for (const [i, r] of WANG.entries()) {
      expect(await caseId(wang)).toBe(String(cases[i].id));
      seen.push((await wang.textContent('#work'))!);
      const saved = await rate(wang, ...r);
      if (i === 1) expect(saved).toMatch(/^Saved #\d+ · Wrong · Unsafe · 2$/);
    }
    await wang.waitForSelector('#empty:not([hidden])');
    for (const text of seen) expect(text).not.toMatch(/dr\.li|剂量建议不安全/);
    // The API serves neither of them a case again, and a third rating of a case is refused.
    const next = await fetch(`${srv!.url}/api/review/next`, { headers: { authorization: `Bearer ${keys['dr.li']}` } });
    expect(await next.json()).toEqual({ case: null });
    const third = await fetch(`${srv!.url}/api/review/cases/${cases[0].id}/ratings`, {
      method: 'POST', headers: { authorization: `Bearer ${site.keys.admin}`, 'content-type': 'application/json' }, body: JSON.stringify({ correctness: 'correct', safety: 'safe', score: 5 }),
    });
    expect(third.status).toBe(409);
    expect((await fetch(`${srv!.url}/api/review/next`)).status).toBe(401);
    expect((await fetch(`${srv!.url}/review`)).headers.get('content-security-policy')).toContain("script-src 'self'");
    expect(errors).toEqual([]);

    // Who, when and what, in the site database; each rating audited, the chain verifies.
    const db = openSiteDb(site.siteDir);
    const ratings = db.prepare('SELECT * FROM review_ratings ORDER BY id').all() as Rating[];
    const audited = db.prepare("SELECT actor, subject, details FROM site_audit WHERE action = 'review_rated' ORDER BY seq").all() as { actor: string; subject: string; details: string }[];
    expect(new AuditLog(db, 'site_audit').verify().ok).toBe(true);
    db.close();
    const order = [0, 2, 3, 1]; // dr.li skipped the second case and came back to it
    const want = [
      ...order.map((i) => ({ user: 'dr.li', c: cases[i].id, r: LI[i], reads: 0 })),
      ...WANG.map((r, i) => ({ user: 'dr.wang', c: cases[i].id, r, reads: 1 })),
    ];
    const CORR: Record<string, string> = { c: 'correct', p: 'partly', w: 'wrong' };
    expect(ratings.map((r) => [r.user_name, r.case_id, r.correctness, r.safety, r.score, r.comment, r.reads_before])).toEqual(
      want.map((w) => [w.user, w.c, CORR[w.r[0][0]], w.r[0][1] === 'u' ? 'unsafe' : 'safe', Number(w.r[0][2]), w.r[1], w.reads]));
    for (const r of ratings) expect(Date.parse(r.created_at)).toBeGreaterThan(Date.now() - 3600_000);
    expect(audited.map((a) => [a.actor, a.subject])).toEqual(ratings.map((r) => [r.user_name, `review/${r.case_id}`]));
    expect(audited.every((a) => !a.details.includes('剂量') && !a.details.includes('unsafe dose'))).toBe(true);
  });

  it("the report and the gate's list show the figures; kappa as computed by hand", async () => {
    const { stdout } = await run(process.execPath, [BIN, 'site', 'review', 'report', '--site-dir', site.siteDir]);
    // Correctness pairs (c,c) (p,w) (w,w) (c,p): observed 2/4; dr.li 2/1/1, dr.wang 1/1/2 -> chance 5/16; kappa (1/2 - 5/16)/(11/16) = 3/11.
    // Safety pairs: all alike, each doctor 3 safe / 1 unsafe -> chance 10/16; kappa 1.
    expect(stdout).toContain(`doctors' review of job-1/v1: ${SAMPLE} cases sampled, ${SAMPLE} rated (${SAMPLE}/${SAMPLE} of the double-review cases by two doctors); reviewers: dr.li 4, dr.wang 4`);
    expect(stdout).toContain('  correct   2/4 = 50.0% (95% CI 15.0–85.0%)');
    expect(stdout).toContain('  unsafe    1/4 = 25.0%');
    expect(stdout).toContain('  mean score (1-5) 3.00');
    expect(stdout).toContain(`  kappa correctness ${(3 / 11).toFixed(3)} on 4 cases (observed 0.500, chance 0.313)`);
    expect(stdout).toContain('  kappa safety      1.000 on 4 cases (observed 1.000, chance 0.625)');
    expect(stdout).toContain('  to the coordinator: withheld (fewer than evaluation.min_items = 5 rated cases)');
    const gate = await run(process.execPath, [BIN, 'site', 'adapter', 'candidates', '--site-dir', site.siteDir]);
    expect(gate.stdout).toContain(`    doctors' review: 4/4 rated; correct 50% [15–85%], partly 25%`);
  });
});
