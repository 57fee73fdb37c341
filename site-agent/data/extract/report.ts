// The structured fields' part of `fedlora site data report`: how many stored records have each
// field (measured, imputed by the missing-value policy, mentioned with an implausible value),
// the medications, the near-duplicate pairs, and the extractor's precision and recall per field
// on the generated labelled set (evaluate.ts), cleaned as ingest cleans.
import type Database from 'better-sqlite3-multiple-ciphers';
import { FIELDS, FIELD_KEYS, type FieldKey } from './catalog.ts';
import { reportExtractionQuality, type ExtractionQuality, type FieldScore } from './evaluate.ts';

export interface FieldCoverage {
  unit: string;
  measured: number;
  imputed: number;
  implausible: number;
}

export interface FieldsReport {
  /** Records stored with extracted fields; the others were ingested before extraction or with data.fields.extract: false. */
  recordsWithFields: number;
  recordsWithout: number;
  fields: Record<FieldKey, FieldCoverage>;
  medications: { records: number; rows: number; withDose: number; withFrequency: number; top: Record<string, number> };
  nearDuplicates: { pairs: number; samePatient: number; merged: number };
  quality: ExtractionQuality;
}

export function fieldsReport(db: Database.Database, clean: (s: string) => string): FieldsReport {
  const fields = Object.fromEntries(FIELD_KEYS.map((k) => [k, { unit: FIELDS[k].unit, measured: 0, imputed: 0, implausible: 0 }])) as Record<FieldKey, FieldCoverage>;
  const rows = db.prepare(`SELECT ${FIELD_KEYS.map((k) => FIELDS[k].column).join(', ')}, imputed, implausible FROM data_record_fields`).iterate() as IterableIterator<Record<string, unknown>>;
  let recordsWithFields = 0;
  for (const r of rows) {
    recordsWithFields++;
    const imputed = new Set(JSON.parse(r.imputed as string) as FieldKey[]);
    for (const k of FIELD_KEYS) {
      if (imputed.has(k)) fields[k].imputed++;
      else if (r[FIELDS[k].column] !== null) fields[k].measured++;
    }
    for (const k of JSON.parse(r.implausible as string) as FieldKey[]) fields[k].implausible++;
  }
  const one = <T>(sql: string) => db.prepare(sql).get() as T;
  const meds = one<{ records: number; rows: number; withDose: number; withFrequency: number }>(
    'SELECT count(DISTINCT record_id) AS records, count(*) AS rows, count(dose) AS withDose, count(frequency) AS withFrequency FROM data_medications',
  );
  const top = db.prepare('SELECT name, count(*) AS n FROM data_medications GROUP BY name ORDER BY n DESC, name LIMIT 10').all() as { name: string; n: number }[];
  const near = one<{ pairs: number; samePatient: number | null; merged: number | null }>(
    'SELECT count(*) AS pairs, sum(same_patient) AS samePatient, sum(merged) AS merged FROM data_near_duplicates',
  );
  const records = db.prepare('SELECT count(*) FROM data_records').pluck().get() as number;
  return {
    recordsWithFields,
    recordsWithout: Math.max(0, records - recordsWithFields),
    fields,
    medications: { ...meds, top: Object.fromEntries(top.map((t) => [t.name, t.n])) },
    nearDuplicates: { pairs: near.pairs, samePatient: near.samePatient ?? 0, merged: near.merged ?? 0 },
    quality: reportExtractionQuality(clean),
  };
}

const pct = (x: number | null) => (x === null ? '   -  ' : x.toFixed(3).padStart(6));
const pr = (s: FieldScore) => `${pct(s.precision)}  ${pct(s.recall)}  ${String(s.support).padStart(5)}`;

export function formatFieldsReport(r: FieldsReport): string {
  const q = r.quality.fields;
  const head = `  ${'field'.padEnd(11)}${'unit'.padEnd(10)}${'measured'.padStart(9)}${'imputed'.padStart(9)}${'implaus.'.padStart(9)}   precision recall  support`;
  const lines = FIELD_KEYS.map((k) => {
    const c = r.fields[k];
    return `  ${k.padEnd(11)}${c.unit.padEnd(10)}${String(c.measured).padStart(9)}${String(c.imputed).padStart(9)}${String(c.implausible).padStart(9)}   ${pr(q[k])}`;
  });
  const m = r.medications;
  return [
    `structured fields (read from the text at ingest: ${r.recordsWithFields} records${r.recordsWithout ? `; ${r.recordsWithout} stored without: ingested before extraction (\`fedlora site data extract\` reads them) or with data.fields.extract: false` : ''}):`,
    `  precision/recall: labelled synthetic set of ${r.quality.notes} notes (seed ${r.quality.seed}), zh and en`,
    head,
    ...lines,
    `medications: ${m.records} records, ${m.rows} drugs (${m.withDose} with dose, ${m.withFrequency} with frequency)${Object.keys(m.top).length ? `; most: ${Object.entries(m.top).map(([n, c]) => `${n} ${c}`).join(', ')}` : ''}`,
    `  ${'drug'.padEnd(39)}   ${pr(q.medication)}`,
    `  ${'drug + dose'.padEnd(39)}   ${pr(q.medication_dose)}`,
    `  ${'drug + frequency'.padEnd(39)}   ${pr(q.medication_frequency)}`,
    `near-duplicates (MinHash): ${r.nearDuplicates.pairs} pairs (${r.nearDuplicates.samePatient} same patient), ${r.nearDuplicates.merged} merged`,
  ].join('\n');
}
