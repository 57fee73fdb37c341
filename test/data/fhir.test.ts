import { describe, it, expect, afterAll } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes, randomUUID } from 'node:crypto';
import { openSiteDataStore, ingestFiles, defaultDataConfig, generateSites } from '../../site-agent/data/index.ts';
import { recordToBundle } from '../../site-agent/data/synth/fhir-out.ts';
import { tempDir, stubDeid } from './helpers.ts';

const t = tempDir();
afterAll(t.cleanup);
const key = randomBytes(32);
const cfg = defaultDataConfig();
let n = 0;
const newStore = () => openSiteDataStore(join(t.dir, `s${n++}`, 'site.sqlite'));
const ingest = (store: ReturnType<typeof newStore>, paths: string[]) =>
  ingestFiles(store, paths, { format: 'fhir', config: cfg, key, deidentifier: stubDeid(key) });

/** A patient bundle the way Synthea writes it (urn:uuid fullUrls and references, SNOMED /
 *  ICD-10 / LOINC / RxNorm codings, billing resources next to the clinical ones). */
function syntheaBundle() {
  const pid = randomUUID();
  const e1 = randomUUID();
  const e2 = randomUUID();
  const u = (id: string) => `urn:uuid:${id}`;
  const resources = [
    {
      resourceType: 'Patient', id: pid,
      identifier: [
        { system: 'https://github.com/synthetichealth/synthea', value: pid },
        { type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR' }] }, system: 'http://hospital.smarthealthit.org', value: 'MRN-778899' },
      ],
      name: [{ use: 'official', family: 'Keebler762', given: ['Rosalind461'], prefix: ['Mrs.'] }],
      telecom: [{ system: 'phone', value: '555-301-4470' }],
      birthDate: '1961-04-12',
    },
    {
      resourceType: 'Encounter', id: e1, status: 'finished', class: { code: 'EMER' },
      type: [{ coding: [{ system: 'http://snomed.info/sct', code: '50849002', display: 'Emergency room admission (procedure)' }], text: 'Emergency room admission (procedure)' }],
      subject: { reference: u(pid), display: 'Mrs. Rosalind461 Keebler762' },
      period: { start: '2019-03-02T10:00:00-05:00', end: '2019-03-05T12:00:00-05:00' },
      reasonCode: [{ coding: [{ system: 'http://snomed.info/sct', code: '29857009', display: 'Chest pain (finding)' }] }],
    },
    {
      resourceType: 'Condition', id: randomUUID(), subject: { reference: u(pid) }, encounter: { reference: u(e1) },
      code: { coding: [{ system: 'http://snomed.info/sct', code: '22298006', display: 'Myocardial infarction (disorder)' }, { system: 'http://hl7.org/fhir/sid/icd-10-cm', code: 'I21.9' }], text: 'Myocardial infarction (disorder)' },
    },
    {
      resourceType: 'Observation', id: randomUUID(), status: 'final', subject: { reference: u(pid) }, encounter: { reference: u(e1) },
      category: [{ coding: [{ code: 'laboratory' }] }],
      code: { coding: [{ system: 'http://loinc.org', code: '10839-9', display: 'Troponin I.cardiac [Mass/volume] in Serum or Plasma' }], text: 'Troponin I' },
      valueQuantity: { value: 2.4, unit: 'ng/mL' }, interpretation: [{ coding: [{ code: 'H' }] }],
    },
    {
      resourceType: 'Observation', id: randomUUID(), status: 'final', subject: { reference: u(pid) }, encounter: { reference: u(e1) },
      code: { coding: [{ system: 'http://loinc.org', code: '10164-2', display: 'History of Present illness Narrative' }] },
      valueString: 'Rosalind461 Keebler762 reports crushing chest pain for 2 hours.',
    },
    {
      resourceType: 'MedicationRequest', id: randomUUID(), status: 'active', intent: 'order', subject: { reference: u(pid) }, encounter: { reference: u(e1) },
      medicationCodeableConcept: { coding: [{ system: 'http://www.nlm.nih.gov/research/umls/rxnorm', code: '243670', display: 'aspirin 81 MG Oral Tablet' }] },
      dosageInstruction: [{ text: '1 tablet q.d.' }],
    },
    {
      resourceType: 'Procedure', id: randomUUID(), status: 'completed', subject: { reference: u(pid) }, encounter: { reference: u(e1) },
      code: { coding: [{ system: 'http://snomed.info/sct', code: '415070008', display: 'Percutaneous coronary intervention (procedure)' }] },
    },
    // A wellness visit without any diagnosis: not a training case.
    { resourceType: 'Encounter', id: e2, status: 'finished', subject: { reference: u(pid) }, period: { start: '2020-01-01T09:00:00Z' }, reasonCode: [{ text: 'checkup' }] },
    { resourceType: 'Claim', id: randomUUID(), patient: { reference: u(pid) } },
    { resourceType: 'ExplanationOfBenefit', id: randomUUID(), patient: { reference: u(pid) } },
    { resourceType: 'Immunization', id: randomUUID(), patient: { reference: u(pid) }, encounter: { reference: u(e2) } },
  ];
  return { resourceType: 'Bundle', type: 'transaction', entry: resources.map((r) => ({ fullUrl: u(r.id), resource: r, request: { method: 'POST', url: r.resourceType } })) };
}

describe('FHIR R4 ingest', () => {
  it('joins a Synthea-shaped bundle per encounter into one case; other resource types are ignored and counted', async () => {
    const store = newStore();
    const p = join(t.dir, 'patient1.json');
    writeFileSync(p, JSON.stringify(syntheaBundle(), null, 2));
    const s = await ingest(store, [p]);
    expect(s.accepted).toBe(1);
    expect(s.quarantineByReason).toEqual({ missing_field: 1 }); // the wellness encounter (no diagnosis)
    expect(s.ignoredResources).toEqual({ Claim: 1, ExplanationOfBenefit: 1, Immunization: 1 });
    const [q] = store.quarantined();
    expect(q.source).toMatch(/patient1\.json#Encounter\/[0-9a-f-]{36}$/);
    expect(q.detail).toMatch(/diagnosis \(a Condition with encounter = this Encounter\)/);
    const [r] = store.allRecords();
    expect(r.diagnosis).toBe('Myocardial infarction');
    expect(r.icd10).toBe('I21.9');
    expect(r.chiefComplaint).toBe('Chest pain');
    expect(r.labs).toBe('Troponin I: 2.4 ng/mL (H)');
    // The Patient's name is handed to the de-identifier as a known name for the free text.
    expect(r.history).toBe('[NAME] reports crushing chest pain for 2 hours.');
    expect(r.treatment).toBe('aspirin 81 MG Oral Tablet 1 tablet every day; Percutaneous coronary intervention');
    expect(r.admissionDate).toMatch(/^\d{4}-\d{2}-\d{2}$/);
    expect(r.admissionDate).not.toBe('2019-03-02');
    store.close();
  });

  it('joins a bulk-export NDJSON set (one file per type, Patient/<id> references) and re-ingest is idempotent', async () => {
    const store = newStore();
    const b = syntheaBundle();
    const byType = new Map<string, unknown[]>();
    for (const e of b.entry) {
      const r = JSON.parse(JSON.stringify(e.resource).replace(/urn:uuid:([0-9a-f-]{36})/g, (_m, id) => {
        const target = b.entry.find((x) => x.resource.id === id)!.resource.resourceType;
        return `${target}/${id}`;
      }));
      byType.set(r.resourceType, [...(byType.get(r.resourceType) ?? []), r]);
    }
    // Conditions come before their Encounters: staging makes the order irrelevant.
    const files = ['Condition', 'Observation', 'Encounter', 'MedicationRequest', 'Procedure', 'Patient', 'Claim'].map((type) => {
      const p = join(t.dir, `${type}.ndjson`);
      writeFileSync(p, (byType.get(type) ?? []).map((r) => JSON.stringify(r)).join('\n') + '\n');
      return p;
    });
    const s = await ingest(store, files);
    expect(s.accepted).toBe(1);
    expect(store.allRecords()[0].icd10).toBe('I21.9');
    const again = await ingest(store, files);
    expect(again.accepted).toBe(0);
    expect(again.duplicates).toBe(1);
    expect(store.countRecords()).toBe(1);
    expect(store.db.prepare('SELECT count(*) FROM data_fhir_stage').pluck().get()).toBe(0); // staging cleaned up
    store.close();
  });

  it('quarantines invalid JSON, entries without a resource, oversize entries and a truncated bundle, keeping the rest', async () => {
    const store = newStore();
    const good = syntheaBundle();
    const bad = syntheaBundle();
    (bad.entry as unknown[]).push({ fullUrl: 'urn:uuid:x' }); // no resource
    (bad.entry[4].resource as Record<string, unknown>).valueString = 'z'.repeat(10 << 20); // 10 MB narrative
    const text = JSON.stringify(bad);
    const truncated = join(t.dir, 'truncated.json');
    // Cut inside the billing resources: the clinical entries before the cut are kept.
    writeFileSync(truncated, text.slice(0, text.indexOf('"ExplanationOfBenefit"')));
    const nd = join(t.dir, 'mixed.ndjson');
    writeFileSync(nd, [JSON.stringify(good), '{"resourceType": "Patient", broken', JSON.stringify({ foo: 1 })].join('\n') + '\n');
    const s = await ingest(store, [truncated, nd]);
    expect(s.accepted).toBe(2); // the MI encounter of each bundle (the truncated one lost its HPI narrative entry)
    expect(s.quarantineByReason).toMatchObject({ too_large: 1, truncated: 1, invalid_json: 1, fhir_invalid: 1, missing_field: 2 });
    const q = store.quarantined();
    expect(q.find((x) => x.reason === 'too_large')!.source).toBe(`${truncated}/entry[4]`);
    expect(q.find((x) => x.reason === 'invalid_json')!.source).toBe(`${nd}:2`);
    store.close();
  });

  it('round-trips synthetic FHIR output: every case, with diagnosis and ICD-10', async () => {
    const store = newStore();
    const [site] = generateSites({ sites: 1, records: 12, seed: 5, lang: 'mixed' });
    const p = join(t.dir, 'synth.ndjson');
    writeFileSync(p, site.records.map((r, i) => JSON.stringify(recordToBundle(r, `c${i}`))).join('\n') + '\n');
    const s = await ingest(store, [p]);
    expect(s.accepted).toBe(12);
    expect(s.ignoredResources).toEqual({ Claim: 12 });
    const got = store.allRecords().map((r) => `${r.icd10}|${r.diagnosis}|${r.lang}`).sort();
    expect(got).toEqual(site.records.map((r) => `${r.icd10}|${r.diagnosis.replace('COPD', 'chronic obstructive pulmonary disease')}|${r.lang}`).sort());
    store.close();
  });
});
