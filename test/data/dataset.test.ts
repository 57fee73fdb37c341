import { describe, it, expect, afterAll } from 'vitest';
import { writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  openSiteDataStore, ingestFiles, defaultDataConfig, parseDataConfig, generateSites, buildDatasets, writeDatasetFiles, assignSplits,
} from '../../site-agent/data/index.ts';
import { toCsv } from '../../site-agent/data/synth/generate.ts';
import { patientsPerStratum, tempDir, stubDeid } from './helpers.ts';

const t = tempDir();
afterAll(t.cleanup);
const key = randomBytes(32);
const cfg = defaultDataConfig();

async function siteWith(records: number, seed: number, name: string) {
  const [site] = generateSites({ sites: 1, records, seed, lang: 'en', skew: 0 });
  const p = join(t.dir, `${name}.csv`);
  writeFileSync(p, toCsv(site.records));
  return p;
}

describe('dataset building', () => {
  it('stores splits: stable across re-runs and re-opens, new records never move old ones, stratified by diagnosis (patients)', async () => {
    const dbPath = join(t.dir, 'split', 'site.sqlite');
    let store = openSiteDataStore(dbPath);
    await ingestFiles(store, [await siteWith(300, 11, 'a')], { format: 'csv', config: cfg, key, deidentifier: stubDeid(key) });
    const first = buildDatasets(store);
    const before = store.splits();
    expect(before.size).toBe(store.countRecords());
    store.close();

    store = openSiteDataStore(dbPath);
    const again = buildDatasets(store);
    expect(again.ids).toEqual(first.ids);
    expect(again.train).toEqual(first.train);
    // A different seed in the config later does not reshuffle what is stored.
    const reseeded = buildDatasets(store, { config: parseDataConfig({ split: { seed: 99 } }) });
    expect(reseeded.ids).toEqual(first.ids);

    await ingestFiles(store, [await siteWith(200, 12, 'b')], { format: 'csv', config: cfg, key, deidentifier: stubDeid(key) });
    const grown = buildDatasets(store);
    const after = store.splits();
    for (const [id, s] of before) expect(after.get(id)).toBe(s);
    expect(after.size).toBe(store.countRecords());
    expect(after.size).toBeGreaterThan(before.size);

    // Every diagnosis's patients are split close to 80/10/10 (the unit is the patient).
    const strata = patientsPerStratum(store);
    expect(strata.size).toBeGreaterThanOrEqual(10);
    for (const [, c] of strata) {
      const total = (c.train ?? 0) + (c.validation ?? 0) + (c.test ?? 0);
      expect(Math.abs((c.train ?? 0) - 0.8 * total)).toBeLessThanOrEqual(2);
      expect(Math.abs((c.test ?? 0) - 0.1 * total)).toBeLessThanOrEqual(2);
      expect(c.test ?? 0).toBeGreaterThan(0);
    }
    expect(grown.train.length + grown.validation.length + grown.test.length).toBe(store.countRecords());
    expect(assignSplits(store, cfg.split).assigned).toBe(0);
    store.close();
  });

  it('writes chat examples in the engine format and choice items whose answer is the case diagnosis', async () => {
    const store = openSiteDataStore(join(t.dir, 'fmt', 'site.sqlite'));
    const [site] = generateSites({ sites: 1, records: 80, seed: 2, lang: 'mixed', skew: 0 });
    const p = join(t.dir, 'fmt.csv');
    writeFileSync(p, toCsv(site.records));
    await ingestFiles(store, [p], { format: 'csv', config: cfg, key, deidentifier: stubDeid(key) });
    const ds = buildDatasets(store);
    const ex = ds.train.find((e) => /诊断：/.test(e.messages.at(-1)!.content))!;
    expect(ex.messages.map((m) => m.role)).toEqual(['system', 'user', 'assistant']);
    expect(ex.messages[1].content).toMatch(/主诉：/);
    expect(ex.messages[2].content).toMatch(/^诊断：.+\n诊断依据：.+\n处理建议：.+/);
    expect(ex.messages[2].content).not.toMatch(/ICD-10/); // icd10 is not in the default allowed fields
    const en = ds.train.find((e) => /^Diagnosis: /.test(e.messages.at(-1)!.content))!;
    expect(en.messages[1].content).toMatch(/Chief complaint: /);
    // Abnormal labs appear in the reasoning (of the cases that have any: which cases land in the
    // training split depends on the site's random key, so look at all of them).
    const enAll = ds.train.filter((e) => /^Diagnosis: /.test(e.messages.at(-1)!.content));
    expect(enAll.some((e) => /Reasoning: .*\((H|L)\)/.test(e.messages[2].content))).toBe(true);

    expect(ds.choices.length).toBe(ds.test.length);
    const recs = new Map(store.allRecords().map((r) => [r.id, r]));
    ds.choices.forEach((c, i) => {
      const rec = recs.get(ds.ids.test[i])!;
      expect(c.options.length).toBe(4);
      expect(new Set(c.options).size).toBe(4);
      expect(c.options[c.answer]).toBe(rec.diagnosis);
      expect(c.label).toBe(rec.diagnosis);
      const user = c.prompt.at(-1)!.content;
      expect(user).toContain(`${'ABCD'[c.answer]}. ${rec.diagnosis}`);
      expect(user.split('\n').slice(0, -6).join('\n')).not.toContain(rec.diagnosis); // the answer is not in the case text
      expect(user).not.toContain(rec.treatment!);
    });
    // The answer position varies.
    expect(new Set(ds.choices.map((c) => c.answer)).size).toBeGreaterThan(1);

    const out = join(t.dir, 'out');
    const { files } = writeDatasetFiles(out, ds);
    const lines = readFileSync(files.train, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.length).toBe(ds.train.length);
    expect(Object.keys(lines[0])).toEqual(['messages']);
    const manifest = JSON.parse(readFileSync(join(out, 'manifest.json'), 'utf8'));
    expect(manifest.files['choices.jsonl'].count).toBe(ds.choices.length);
    store.close();
  });

  it('only fields the site policy allows reach the examples; a custom template and language are honoured', async () => {
    const store = openSiteDataStore(join(t.dir, 'policy', 'site.sqlite'));
    await ingestFiles(store, [await siteWith(40, 4, 'p')], { format: 'csv', config: cfg, key, deidentifier: stubDeid(key) });
    const recs = store.allRecords();
    const ds = buildDatasets(store, { allowedFields: ['chiefComplaint', 'labs', 'diagnosis', 'icd10'] });
    const all = JSON.stringify([ds.train, ds.validation, ds.test, ds.choices]);
    for (const r of recs) {
      expect(all).not.toContain(r.history!);
      expect(all).not.toContain(r.treatment!);
    }
    expect(all).not.toContain('Department:');
    expect(ds.train[0].messages.at(-1)!.content).toMatch(/\(ICD-10 [A-Z]\d/);
    expect(ds.train[0].messages.at(-1)!.content).not.toMatch(/Suggested treatment/);

    expect(() => buildDatasets(store, { allowedFields: ['chiefComplaint', 'labs'] })).toThrow(/FEDLORA_ERR_POLICY|diagnosis/);

    const config = parseDataConfig({ prompt: { lang: 'zh', system: null, userTemplate: '病例：{{chiefComplaint}}|{{labs}}', assistantTemplate: '{{diagnosis}}' } });
    const custom = buildDatasets(store, { config });
    const e = custom.train[0];
    expect(e.messages[0].role).toBe('system'); // built-in zh system prompt
    expect(e.messages[1].content).toMatch(/^病例：.+\|.+/);
    expect(recs.map((r) => r.diagnosis)).toContain(e.messages[2].content);
    store.close();
  });
});
