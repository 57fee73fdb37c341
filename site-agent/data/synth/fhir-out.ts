// A synthetic case as a FHIR R4 transaction Bundle in the shape Synthea writes: urn:uuid
// fullUrls and references, SNOMED + ICD-10 on the Condition, LOINC on Observations, RxNorm on
// the MedicationRequest; the free text travels in narrative Observations (chief complaint
// 10154-3, history of present illness 10164-2, physical findings 29545-1).

import { createHash } from 'node:crypto';
import type { SynthRecord } from './generate.ts';
import { DIAGNOSES, LABS } from './catalog.ts';

type Json = Record<string, unknown>;

/** Deterministic uuid-shaped id from a string (so bundles are reproducible for a seed). */
function uuidOf(s: string): string {
  const h = createHash('sha256').update(s).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-a${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

const LOINC = 'http://loinc.org';

export function recordToBundle(rec: SynthRecord, caseId: string): Json {
  const pid = uuidOf('patient:' + rec.patient_id);
  const eid = uuidOf('encounter:' + caseId);
  const dx = DIAGNOSES.find((d) => d.icd10 === rec.icd10);
  const entries: Json[] = [];
  const add = (resource: Json): void => {
    entries.push({ fullUrl: `urn:uuid:${resource.id}`, resource, request: { method: 'POST', url: resource.resourceType } });
  };
  const subject = { reference: `urn:uuid:${pid}` };
  const encounter = { reference: `urn:uuid:${eid}` };
  const [given, ...rest] = rec.lang === 'zh' ? [rec.patient_name.slice(1), rec.patient_name.slice(0, 1)] : rec.patient_name.split(' ');
  add({
    resourceType: 'Patient', id: pid,
    identifier: [{ type: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v2-0203', code: 'MR', display: 'Medical Record Number' }] }, value: rec.patient_id }],
    name: [{ use: 'official', family: rest.join(' '), given: [given], ...(rec.lang === 'zh' ? { text: rec.patient_name } : {}) }],
    communication: [{ language: { coding: [{ system: 'urn:ietf:bcp:47', code: rec.lang === 'zh' ? 'zh-CN' : 'en-US' }] } }],
    gender: rec.sex === 'F' ? 'female' : 'male',
    // the synthetic record keeps the age only: a birth date (1 January) that gives it at admission
    birthDate: `${Number(rec.admission_date.slice(0, 4)) - Number(rec.age)}-01-01`,
  });
  add({
    resourceType: 'Encounter', id: eid, status: 'finished',
    class: { system: 'http://terminology.hl7.org/CodeSystem/v3-ActCode', code: 'IMP' },
    type: [{ coding: [{ system: 'http://snomed.info/sct', code: '32485007', display: 'Hospital admission (procedure)' }], text: 'Hospital admission (procedure)' }],
    serviceType: { text: rec.department },
    subject,
    period: { start: `${rec.admission_date}T08:00:00+08:00`, end: `${rec.discharge_date}T10:00:00+08:00` },
    reasonCode: [{ text: rec.chief_complaint }],
  });
  add({
    resourceType: 'Condition', id: uuidOf('condition:' + caseId),
    clinicalStatus: { coding: [{ system: 'http://terminology.hl7.org/CodeSystem/condition-clinical', code: 'active' }] },
    code: {
      coding: [
        { system: 'http://snomed.info/sct', code: dx?.snomed ?? '404684003', display: `${rec.diagnosis} (disorder)` },
        { system: 'http://hl7.org/fhir/sid/icd-10-cm', code: rec.icd10, display: rec.diagnosis },
      ],
      text: rec.diagnosis,
    },
    subject, encounter, onsetDateTime: `${rec.admission_date}T08:00:00+08:00`,
  });
  const narrative = (code: string, display: string, value: string, n: string): void =>
    add({ resourceType: 'Observation', id: uuidOf(`${n}:${caseId}`), status: 'final', code: { coding: [{ system: LOINC, code, display }] }, subject, encounter, valueString: value });
  narrative('10164-2', 'History of Present illness Narrative', rec.history, 'hpi');
  narrative('29545-1', 'Physical findings Narrative', rec.exam, 'exam');
  // Labs as coded, quantitative Observations (parsed back from the record's lab text).
  rec.labs.split(/[;；]\s*/).forEach((line, i) => {
    const spec = Object.values(LABS).find((l) => line.startsWith(l.name[rec.lang] + ' '));
    const m = /\s(-?[\d.]+)(?:\s([^\s(↑↓]+))?/.exec(line.slice(spec ? spec.name[rec.lang].length : 0));
    if (!spec || !m) return;
    const flag = /↑|\(H\)/.test(line) ? 'H' : /↓|\(L\)/.test(line) ? 'L' : 'N';
    add({
      resourceType: 'Observation', id: uuidOf(`lab${i}:${caseId}`), status: 'final',
      category: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/observation-category', code: 'laboratory' }] }],
      code: { coding: [{ system: LOINC, code: spec.loinc, display: spec.name[rec.lang] }], text: spec.name[rec.lang] },
      subject, encounter, valueQuantity: { value: Number(m[1]), unit: spec.unit, system: 'http://unitsofmeasure.org', code: spec.unit },
      interpretation: [{ coding: [{ system: 'http://terminology.hl7.org/CodeSystem/v3-ObservationInterpretation', code: flag }] }],
    });
  });
  add({
    resourceType: 'MedicationRequest', id: uuidOf('med:' + caseId), status: 'active', intent: 'order',
    medicationCodeableConcept: { coding: [{ system: 'http://www.nlm.nih.gov/research/umls/rxnorm', code: dx?.rxnorm ?? '0', display: rec.treatment }], text: rec.treatment },
    subject, encounter, authoredOn: `${rec.admission_date}T09:00:00+08:00`,
  });
  // Synthea bundles carry billing resources too; the pipeline ignores (and counts) them.
  add({ resourceType: 'Claim', id: uuidOf('claim:' + caseId), status: 'active', patient: subject });
  return { resourceType: 'Bundle', type: 'transaction', entry: entries };
}
