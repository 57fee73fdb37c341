// The pipeline's link to the de-identifier fails closed: no module, no ingest; and a patient's
// structured dates (shifted at ingest) and the dates in their free text (shifted by deidentify)
// move by the same secret offset.
import { describe, it, expect, afterAll } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { randomBytes } from 'node:crypto';
import { loadDeidentifier } from '../../site-agent/data/deid-bridge.ts';
import { dateShiftDays, deidentify } from '../../site-agent/data/deid/index.ts';
import { openSiteDataStore, ingestFiles, defaultDataConfig, patientPseudonym } from '../../site-agent/data/index.ts';
import { tempDir } from './helpers.ts';

const t = tempDir();
afterAll(t.cleanup);
const key = randomBytes(32);

describe('de-identifier bridge', () => {
  it('refuses (FEDLORA_ERR_DEID) when the module is missing or exports no deidentify', async () => {
    await expect(loadDeidentifier(key, 'placeholder', pathToFileURL(join(t.dir, 'missing.mjs')).href)).rejects.toThrow(/refusing to ingest without de-identification/);
    const empty = join(t.dir, 'empty.mjs');
    writeFileSync(empty, 'export const x = 1;\n');
    await expect(loadDeidentifier(key, 'placeholder', pathToFileURL(empty).href)).rejects.toMatchObject({ code: 'FEDLORA_ERR_DEID' });
  });

  it('passes mode, key, patient and known names to deidentify, and shifts dates per patient', async () => {
    const mod = join(t.dir, 'fake.mjs');
    writeFileSync(mod, 'export function deidentify(text, o) { return { text: `${o.mode}|${o.patientKey}|${o.knownNames.join("+")}|${Buffer.isBuffer(o.key)}|${text}`, spans: [] }; }\n');
    const d = await loadDeidentifier(key, 'pseudonym', pathToFileURL(mod).href);
    expect(d.text('hello', 'P1', ['Ann Lee']).text).toBe('pseudonym|P1|Ann Lee|true|hello');
    const s1 = dateShiftDays(key, 'P1');
    expect(d.shiftDate('2024-02-28', 'P1')).toBe(new Date(Date.UTC(2024, 1, 28) + s1 * 86_400_000).toISOString().slice(0, 10));
    expect(s1).not.toBe(0);
    expect(Math.abs(s1)).toBeLessThanOrEqual(365);
    // Different patients get different shifts (with overwhelming probability for 20 patients).
    expect(new Set(Array.from({ length: 20 }, (_, i) => dateShiftDays(key, `P${i}`))).size).toBeGreaterThan(10);
  });

  it('the ingest path and the deid path shift the same patient\'s date identically', async () => {
    // Real ingest with the real de-identifier: admission_date is shifted by the ingest path
    // (Deidentifier.shiftDate), the same date written in the history by deidentify.
    const patients = Array.from({ length: 12 }, (_, i) => `MRN-${1000 + i}`);
    const lines = patients.map((id, i) => JSON.stringify({
      patient_id: id, chief_complaint: 'chest pain', diagnosis: 'angina',
      admission_date: `2023-0${1 + (i % 9)}-1${i % 10}`, history: `Admitted on 2023-0${1 + (i % 9)}-1${i % 10} with pain.`,
    }));
    const file = join(t.dir, 'dates.jsonl');
    writeFileSync(file, lines.join('\n') + '\n');
    const store = openSiteDataStore(join(t.dir, 'dates', 'site.sqlite'));
    try {
      const sum = await ingestFiles(store, [file], { format: 'jsonl', config: defaultDataConfig(), key });
      expect(sum.accepted).toBe(patients.length);
      const records = store.allRecords();
      expect(records).toHaveLength(patients.length);
      const offsets = new Set<number>();
      for (const [i, id] of patients.entries()) {
        const original = `2023-0${1 + (i % 9)}-1${i % 10}`;
        const rec = records.find((r) => r.patientKey === patientPseudonym(key, id))!;
        expect(rec).toBeDefined();
        // The ingest path moved the structured date; the deid path moved the one in the text.
        expect(rec.admissionDate).not.toBe(original);
        expect(rec.history).toBe(`Admitted on ${rec.admissionDate} with pain.`);
        expect(deidentify(`Admitted on ${original} with pain.`, { mode: 'placeholder', key, patientKey: rec.patientKey }).text).toBe(rec.history);
        offsets.add((Date.parse(rec.admissionDate!) - Date.parse(original)) / 86_400_000);
      }
      expect(offsets.size).toBeGreaterThan(1); // per patient, not one global offset
    } finally {
      store.close();
    }
  });
});
