// Sex and age band, the subgroups of the evaluation figures: read from CSV columns and from FHIR
// Patient.gender/birthDate, reduced to F/M and a 20-year band at ingest (the age itself is never
// stored), carried to the multiple-choice items but never into a prompt.
import { describe, it, expect, afterAll } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { openSiteDataStore, ingestFiles, defaultDataConfig, generateSites, buildDatasets, dataReport } from '../../site-agent/data/index.ts';
import { toCsv } from '../../site-agent/data/synth/generate.ts';
import { ageAt, ageBand, normalizeSex } from '../../site-agent/data/ingest/subgroups.ts';
import { tempDir, stubDeid } from './helpers.ts';

const t = tempDir();
afterAll(t.cleanup);
const key = randomBytes(32);
const cfg = defaultDataConfig();

describe('subgroup fields', () => {
  it('normalise sex and band ages; unreadable values are left out', () => {
    expect(['F', 'female', 'Woman', '女', 'M', 'male', '男性', 'x', ''].map(normalizeSex)).toEqual(['F', 'F', 'F', 'F', 'M', 'M', 'M', undefined, undefined]);
    expect(['5', '17', '18', '39 years', '40岁', '59y', '60', '79', '80', '95', 'old', '-3', '200'].map(ageBand))
      .toEqual(['0-17', '0-17', '18-39', '18-39', '40-59', '40-59', '60-79', '60-79', '80+', '80+', undefined, undefined, undefined]);
    expect(ageAt('1960-05-10', '2024-05-09T08:00:00Z')).toBe(63);
    expect(ageAt('1960-05-10', '2024-05-10')).toBe(64);
  });

  it('CSV and FHIR exports give the same subgroups; only the band is stored; items carry them outside the prompt', async () => {
    const [site] = generateSites({ sites: 1, records: 60, seed: 8, lang: 'mixed', skew: 0 });
    const csv = join(t.dir, 'sg.csv');
    writeFileSync(csv, toCsv(site.records));
    const a = openSiteDataStore(join(t.dir, 'csv', 'site.sqlite'));
    await ingestFiles(a, [csv], { format: 'csv', config: cfg, key, deidentifier: stubDeid(key) });
    const [fsite] = generateSites({ sites: 1, records: 60, seed: 8, lang: 'mixed', skew: 0, format: 'fhir', out: join(t.dir, 'fhir') });
    const b = openSiteDataStore(join(t.dir, 'fhirdb', 'site.sqlite'));
    await ingestFiles(b, [fsite.file!], { format: 'fhir', config: cfg, key, deidentifier: stubDeid(key) });

    const want = site.records.map((r) => `${r.sex}/${ageBand(r.age)}`).sort();
    for (const store of [a, b]) {
      const recs = store.allRecords();
      expect(recs.map((r) => `${r.sex}/${r.ageBand}`).sort()).toEqual(want);
      for (const r of recs) expect(Object.keys(r)).not.toContain('age');
      const rep = dataReport(store);
      expect(Object.keys(rep.bySex).sort()).toEqual([...new Set(site.records.map((r) => r.sex))].sort());
      expect(Object.values(rep.byAgeBand).reduce((x, y) => x + y, 0)).toBe(60);
    }
    const ds = buildDatasets(a);
    const recs = new Map(a.allRecords().map((r) => [r.id, r]));
    ds.choices.forEach((c, i) => {
      const rec = recs.get(ds.ids.test[i])!;
      expect(c.subgroups).toEqual({ sex: rec.sex, age_band: rec.ageBand });
      expect(JSON.stringify(c.prompt)).not.toContain(rec.ageBand!);
    });
    a.close();
    b.close();
  });
});
