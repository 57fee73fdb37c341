// The site admin's path end to end, with real processes and a real browser: `fedlora site user
// add`, `fedlora site kb add`, `fedlora site serve`; then in Chromium (playwright-core) a
// clinician signs in, asks, sees the answer stream in with its citations, the disclaimer and
// the version that answered, confirms it with an edit and a diagnosis; the confirmation is in
// the site database and the query and the confirmation are counted by `fedlora audit verify`.
import { describe, it, expect, afterAll } from 'vitest';
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { promisify } from 'node:util';
import { join } from 'node:path';
import type { Browser } from 'playwright-core';
import { openSiteDb } from '../../site-agent/site-db.ts';
import { freePort } from '../../shared/free-port.ts';
import { DEFAULT_DISCLAIMER } from '../../site-agent/serve/config.ts';
import { makeSite, rmDir } from './helpers.ts';
import { launchChromium } from '../runner/browser.ts';

const run = promisify(execFile);
const BIN = join(import.meta.dirname, '..', '..', 'cli', 'bin.mjs');
const GUIDES = join(import.meta.dirname, '..', '..', 'cli', 'demo', 'guidelines');
const fedlora = (...args: string[]) => run(process.execPath, [BIN, ...args]).then((r) => r.stdout);
const site = makeSite('serve-page', { max_tokens_default: 160, max_prompt_tokens: 3000, retrieval: { enabled: true, top_k: 3, max_passage_chars: 160 } });
let server: ChildProcess | null = null;
let browser: Browser | null = null;
afterAll(async () => {
  await browser?.close();
  if (server && server.exitCode === null) server.kill('SIGKILL');
  rmDir(site.dir);
});

describe('chat page (Chromium)', () => {
  it('ask, see the streamed answer with citations and disclaimer, confirm, find it stored and audited', async () => {
    const key = (await fedlora('site', 'user', 'add', '--site-dir', site.siteDir, '--name', 'dr.zhang', '--role', 'clinician')).trim().split('\n').at(-1)!;
    expect(key).toMatch(/^flk_/);
    expect(await fedlora('site', 'kb', 'add', '--site-dir', site.siteDir, join(GUIDES, 'anticoagulation-zh.md'), join(GUIDES, 'hypertension.md'))).toContain('added anticoagulation-zh.md');
    const before = JSON.parse(await fedlora('audit', 'verify', '--site-dir', site.siteDir, '--json').catch(() => '{"entries":0}')) as { entries: number };

    const port = await freePort();
    server = spawn(process.execPath, [BIN, 'site', 'serve', '--site-dir', site.siteDir, '--port', String(port)], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    server.stdout!.on('data', (d) => (log += d));
    server.stderr!.on('data', (d) => (log += d));
    while (!log.includes('assistant of')) {
      if (server.exitCode !== null) throw new Error(`serve exited: ${log}`);
      await new Promise((r) => setTimeout(r, 50));
    }
    const url = /at (http:\/\/\S+)\//.exec(log)![1];

    browser = await launchChromium();
    const page = await browser.newPage({ locale: 'zh-CN' });
    const errors: string[] = [];
    page.on('pageerror', (e) => errors.push(e.message));
    page.on('console', (m) => { if (m.type() === 'error') errors.push(m.text()); });
    await page.goto(`${url}/`);
    await page.fill('#key', key);
    await page.click('#signin-btn');
    await page.waitForSelector('#ask:not([hidden])');
    expect(await page.textContent('#who')).toBe('dr.zhang (clinician)');

    // Record every state of the answer while it streams in.
    await page.evaluate(() => {
      const w = window as unknown as { states: string[] };
      w.states = [];
      new MutationObserver(() => w.states.push(document.getElementById('answer')!.textContent ?? '')).observe(document.getElementById('answer')!, { childList: true, characterData: true, subtree: true });
    });
    await page.fill('#question', '房颤患者服用华法林的目标INR是多少？');
    await page.click('#ask-btn');
    await page.waitForFunction(() => (document.getElementById('disclaimer')?.textContent ?? '').length > 0 && (document.getElementById('answered-by')?.textContent ?? '').length > 0);
    expect(await page.textContent('#disclaimer')).toBe(DEFAULT_DISCLAIMER.zh);
    expect(await page.textContent('#answered-by')).toContain('base');
    const states = await page.evaluate(() => (window as unknown as { states: string[] }).states.filter((s) => s !== '正在生成…' && s.length > 0));
    expect(new Set(states).size, 'the answer should grow in several steps (streamed)').toBeGreaterThan(1);
    const citations = await page.$$eval('#citations li', (lis) => lis.map((li) => li.textContent ?? ''));
    expect(citations[0]).toContain('[1] anticoagulation-zh.md — 华法林剂量与INR');
    expect(citations[0]).toContain('目标INR为2.0至3.0');

    // The doctor edits the answer and gives the final diagnosis.
    await page.check('input[name=verdict][value=edit]');
    await page.waitForSelector('#final-text:not([hidden])');
    await page.fill('#final-text', '目标INR为2.0至3.0，剂量由抗凝门诊调整。');
    await page.fill('#final-diagnosis', '心房颤动');
    await page.click('#confirm-btn');
    await page.waitForFunction(() => /#\d+/.test(document.getElementById('confirm-status')?.textContent ?? ''));
    expect(errors, errors.join("; ")).toEqual([]);

    const db = openSiteDb(site.siteDir);
    const c = db.prepare('SELECT * FROM serve_confirmations ORDER BY id DESC LIMIT 1').get() as Record<string, string>;
    const answered = db.prepare('SELECT * FROM serve_answers WHERE id = ?').get(c.answer_id) as Record<string, string>;
    const actions = db.prepare("SELECT action FROM site_audit WHERE subject = ? ORDER BY seq").all(c.answer_id).map((r) => (r as { action: string }).action);
    db.close();
    expect(c).toMatchObject({ user_name: 'dr.zhang', verdict: 'edit', final_text: '目标INR为2.0至3.0，剂量由抗凝门诊调整。', final_diagnosis: '心房颤动', model_version: 'base' });
    expect(c.question_deid).toBe('房颤患者服用华法林的目标INR是多少？');
    expect(answered.user_name).toBe('dr.zhang');
    expect(JSON.parse(answered.citations)[0].source).toBe('anticoagulation-zh.md');
    expect(actions).toEqual(['assistant_query', 'answer_confirmed']);

    server.kill('SIGTERM');
    await new Promise((r) => server!.once('exit', r));
    const verify = JSON.parse(await fedlora('audit', 'verify', '--site-dir', site.siteDir, '--json')) as { ok: boolean; entries: number };
    expect(verify.ok).toBe(true);
    expect(verify.entries).toBe(before.entries + 2);
  });
});
