// The site's knowledge base: `fedlora site kb add|list|remove` on txt/md/html, Chinese word
// segmentation into an FTS5 index with BM25, recall@3 of the right passage on a held-out
// question set over the demo's synthetic guidelines (printed), and citations in answers.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import OpenAI from 'openai';
import Database from 'better-sqlite3-multiple-ciphers';
import { addDocuments, searchPassages } from '../../site-agent/serve/kb/store.ts';
import { segmentWords } from '../../site-agent/serve/kb/segment.ts';
import { htmlToText } from '../../site-agent/serve/kb/documents.ts';
import { startServe, type RunningServe } from '../../site-agent/serve/run.ts';
import { makeSite, rmDir, type TestSite } from './helpers.ts';
import { migrateSiteDb } from '../../site-agent/site-db.ts';

const run = promisify(execFile);
const BIN = join(import.meta.dirname, '..', '..', 'cli', 'bin.mjs');
const GUIDES = join(import.meta.dirname, '..', '..', 'cli', 'demo', 'guidelines');
const fedlora = (...args: string[]) => run(process.execPath, [BIN, ...args]).then((r) => r.stdout);

let site: TestSite;
beforeAll(() => {
  site = makeSite('serve-kb', { retrieval: { enabled: true, top_k: 3, max_passage_chars: 160 }, max_prompt_tokens: 3000 });
});
afterAll(() => rmDir(site.dir));

describe('knowledge base', () => {
  it('segments Chinese into words (ICU dictionary) and drops function words', () => {
    expect(segmentWords('糖尿病患者应在医生指导下调整胰岛素剂量')).toEqual(['糖尿病', '医生', '指导', '下', '调整', '胰岛素', '剂量']);
    expect(segmentWords('What is the INR target for Warfarin?')).toEqual(['inr', 'target', 'warfarin']);
  });

  it('reads HTML: headings kept, scripts dropped, entities decoded', () => {
    const t = htmlToText('<html><head><title>x</title><script>alert(1)</script></head><body><h2>Dose &amp; INR</h2><p>Target&nbsp;2&ndash;3 &#x2265; 2</p></body></html>');
    expect(t).toContain('## Dose & INR');
    expect(t).not.toContain('alert');
    expect(t).toContain('Target 2&ndash;3 ≥ 2');
  });

  it('recall@3 of the right passage on the held-out questions (printed)', () => {
    const db = new Database(':memory:');
    migrateSiteDb(db);
    addDocuments(db, readdirSync(GUIDES).map((f) => join(GUIDES, f)));
    const qs = readFileSync(join(import.meta.dirname, 'fixtures', 'kb-questions.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { q: string; doc: string; heading: string });
    const byLang = { zh: [0, 0], en: [0, 0] };
    for (const q of qs) {
      const hit = searchPassages(db, q.q, 3).some((p) => p.docName === q.doc && p.heading === q.heading);
      const l = /[\u4e00-\u9fff]/.test(q.q) ? byLang.zh : byLang.en;
      l[0] += hit ? 1 : 0;
      l[1]++;
    }
    const recall = (byLang.zh[0] + byLang.en[0]) / qs.length;
    console.log(`knowledge base recall@3: ${recall.toFixed(3)} on ${qs.length} held-out questions (zh ${byLang.zh[0]}/${byLang.zh[1]}, en ${byLang.en[0]}/${byLang.en[1]})`);
    expect(qs.length).toBeGreaterThanOrEqual(30);
    expect(recall).toBeGreaterThanOrEqual(0.8);
    db.close();
  });

  it('fedlora site kb add|list|remove; a PDF or a changed document of the same name is a clear error', async () => {
    const html = join(site.dir, 'sepsis.html');
    writeFileSync(html, '<h1>Sepsis</h1><h2>Antibiotics within one hour</h2><p>Give broad-spectrum antibiotics within one hour of recognising sepsis.</p>');
    const out = await fedlora('site', 'kb', 'add', '--site-dir', site.siteDir, join(GUIDES, 'hypertension.md'), join(GUIDES, 'anticoagulation-zh.md'), html);
    expect(out).toMatch(/added hypertension\.md: 6 passage\(s\)/);
    expect(out).toMatch(/added sepsis\.html: 1 passage\(s\) — Sepsis/);
    expect(await fedlora('site', 'kb', 'add', '--site-dir', site.siteDir, html)).toContain('unchanged sepsis.html');
    writeFileSync(html, '<h1>Sepsis</h1><p>changed</p>');
    const e = await fedlora('site', 'kb', 'add', '--site-dir', site.siteDir, html).catch((x) => x.stderr as string);
    expect(e).toMatch(/FEDLORA_ERR_KB_DOCUMENT: .*sepsis\.html: a different document named sepsis\.html .* --replace/);
    const pdf = join(site.dir, 'x.pdf');
    writeFileSync(pdf, '%PDF-1.4');
    expect(await fedlora('site', 'kb', 'add', '--site-dir', site.siteDir, pdf).catch((x) => x.stderr as string)).toMatch(/x\.pdf: \.pdf is not a supported document/);
    const list = JSON.parse(await fedlora('site', 'kb', 'list', '--site-dir', site.siteDir, '--json')) as { name: string }[];
    expect(list.map((d) => d.name)).toEqual(['anticoagulation-zh.md', 'hypertension.md', 'sepsis.html']);
    expect(await fedlora('site', 'kb', 'remove', '--site-dir', site.siteDir, 'sepsis.html')).toContain('removed sepsis.html (1 passages)');
  });

  it('answers cite the retrieved passages with their source', async () => {
    let srv: RunningServe | null = null;
    try {
      srv = await startServe(site.siteDir);
      const client = new OpenAI({ apiKey: site.keys.clinician, baseURL: `${srv.url}/v1`, maxRetries: 0 });
      const r = await client.chat.completions.create({ model: 'fedlora-assistant', messages: [{ role: 'user', content: '房颤患者华法林的目标INR是多少？' }], max_tokens: 8 });
      const cites = (r as unknown as { fedlora: { citations: { n: number; source: string; heading: string; text: string }[] } }).fedlora.citations;
      expect(cites[0]).toMatchObject({ n: 1, source: 'anticoagulation-zh.md', heading: '华法林剂量与INR' });
      expect(cites[0].text).toContain('目标INR为2.0至3.0');
    } finally {
      await srv?.close();
    }
  });
});
