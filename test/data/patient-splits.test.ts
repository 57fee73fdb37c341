// Splits grouped by the de-identified patient key: no patient in two splits (multi-visit patients
// with different diagnoses), stable across runs and later ingests, a file with ungrouped splits
// stored before is regrouped toward training, and the data report shows the counts.
import { describe, it, expect, afterAll } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { openSiteDataStore, ingestFiles, defaultDataConfig, generateSites, buildDatasets, assignSplits, dataReport, formatReport, type SiteDataStore } from '../../site-agent/data/index.ts';
import { toCsv, type SynthRecord } from '../../site-agent/data/synth/generate.ts';
import { patientsPerStratum, tempDir, stubDeid } from './helpers.ts';

const t = tempDir();
afterAll(t.cleanup);
const key = randomBytes(32);
const cfg = defaultDataConfig();

/** Synthetic records where every patient comes back many times with different diagnoses. */
function multiVisit(patients: number, visits: number, seed: number): SynthRecord[] {
  const [site] = generateSites({ sites: 1, records: patients * visits, seed, lang: 'en', skew: 0 });
  return site.records.map((r, i) => ({ ...r, patient_id: `P${seed}-${i % patients}`, patient_name: `Pat Ient${i % patients}` }));
}

async function ingest(store: SiteDataStore, name: string, records: SynthRecord[]): Promise<void> {
  const p = join(t.dir, `${name}.csv`);
  writeFileSync(p, toCsv(records));
  await ingestFiles(store, [p], { format: 'csv', config: cfg, key, deidentifier: stubDeid(key) });
}

/** patient key -> the set of splits its records are in. */
function splitsPerPatient(store: SiteDataStore): Map<string, Set<string>> {
  const rows = store.db.prepare('SELECT r.patient_key AS p, s.split AS s FROM data_splits s JOIN data_records r ON r.id = s.record_id').all() as { p: string; s: string }[];
  const m = new Map<string, Set<string>>();
  for (const r of rows) m.set(r.p, new Set([...(m.get(r.p) ?? []), r.s]));
  return m;
}

describe('patient-grouped splits', () => {
  it('puts every visit of a patient in one split, keeps splits stable, and new visits join their patient', async () => {
    const store = openSiteDataStore(join(t.dir, 'grouped', 'site.sqlite'));
    await ingest(store, 'mv1', multiVisit(60, 5, 3));
    const ds = buildDatasets(store);
    const per = splitsPerPatient(store);
    expect(per.size).toBe(60);
    for (const [, s] of per) expect(s.size).toBe(1);
    // Every split got patients (60 patients, 80/10/10) and each holds whole patients.
    const rep = dataReport(store);
    expect(rep.patient_overlap).toBe(0);
    expect(rep.splits.train.patients + rep.splits.validation.patients + rep.splits.test.patients).toBe(60);
    expect(rep.splits.test.patients).toBeGreaterThanOrEqual(3);
    expect(rep.splits.train.records + rep.splits.validation.records + rep.splits.test.records).toBe(300);
    expect(rep.splits.test.records).toBe(ds.test.length);
    expect(formatReport(rep)).toMatch(/patient_overlap: 0/);
    expect(formatReport(rep)).toMatch(/test \d+ records \/ \d+ patients/);

    // Later visits of known patients (different diagnoses) join their split; nothing old moves.
    const before = store.splits();
    await ingest(store, 'mv2', multiVisit(60, 2, 3).map((r, i) => ({ ...r, chief_complaint: `${r.chief_complaint} (revisit ${i})` })));
    const moved = assignSplits(store, cfg.split);
    expect(moved.assigned).toBeGreaterThan(0);
    expect(moved.regrouped.records).toBe(0);
    const after = store.splits();
    for (const [id, s] of before) expect(after.get(id)).toBe(s);
    for (const [, s] of splitsPerPatient(store)) expect(s.size).toBe(1);
    expect(dataReport(store).patient_overlap).toBe(0);
    store.close();
  });

  it('splits patients, not records, in proportion within each diagnosis stratum', async () => {
    const store = openSiteDataStore(join(t.dir, 'strata', 'site.sqlite'));
    const [site] = generateSites({ sites: 1, records: 600, seed: 21, lang: 'en', skew: 0 });
    await ingest(store, 'strata', site.records); // about a quarter of the cases are revisits
    assignSplits(store, cfg.split);
    const strata = patientsPerStratum(store);
    expect(strata.size).toBeGreaterThanOrEqual(10);
    for (const [, c] of strata) {
      const total = (c.train ?? 0) + (c.validation ?? 0) + (c.test ?? 0);
      expect(Math.abs((c.train ?? 0) - 0.8 * total)).toBeLessThanOrEqual(2);
      expect(Math.abs((c.test ?? 0) - 0.1 * total)).toBeLessThanOrEqual(2);
    }
    const revisits = [...splitsPerPatient(store)].length < store.countRecords();
    expect(revisits).toBe(true);
    expect(dataReport(store).patient_overlap).toBe(0);
    store.close();
  });

  it('regroups a file whose stored splits put one patient in two splits: toward train, recorded as an event', async () => {
    const store = openSiteDataStore(join(t.dir, 'legacy', 'site.sqlite'));
    await ingest(store, 'legacy', multiVisit(10, 3, 9));
    // Splits as the record-level assignment stored them: patient 0's visits in all three splits.
    const recs = store.db.prepare('SELECT id, patient_key FROM data_records ORDER BY patient_key, id').all() as { id: string; patient_key: string }[];
    const ins = store.db.prepare('INSERT INTO data_splits (record_id, split, stratum, seed) VALUES (?,?,?,1)');
    const patients = [...new Set(recs.map((r) => r.patient_key))];
    recs.forEach((r) => {
      const idx = recs.filter((x) => x.patient_key === r.patient_key).indexOf(r);
      const split = r.patient_key === patients[0] ? ['test', 'validation', 'train'][idx] : r.patient_key === patients[1] ? ['test', 'validation', 'test'][idx] : 'test';
      ins.run(r.id, split, 'x');
    });
    expect(dataReport(store).patient_overlap).toBe(2);
    const r = assignSplits(store, cfg.split);
    expect(r.regrouped).toEqual({ patients: 2, records: 4 });
    const per = splitsPerPatient(store);
    expect([...per.get(patients[0])!]).toEqual(['train']);
    expect([...per.get(patients[1])!]).toEqual(['validation']);
    expect([...per.get(patients[2])!]).toEqual(['test']);
    expect(dataReport(store).patient_overlap).toBe(0);
    expect(store.events('splits_regrouped_by_patient').map((e) => e.detail)).toEqual([{ patients: 2, records: 4 }]);
    store.close();
  });
});
