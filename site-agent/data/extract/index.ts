// Structured fields from a record's free text at ingest: vital signs and labs in one unit each
// (catalog.ts, values.ts) and medications with dose, frequency and route (medications.ts).
import { extractValues } from './values.ts';
import { extractMedications, type Medication } from './medications.ts';
import type { FieldKey } from './catalog.ts';

export { FIELDS, FIELD_KEYS, type FieldKey, type FieldSpec } from './catalog.ts';
export type { Medication } from './medications.ts';

export interface ExtractedFields {
  values: Partial<Record<FieldKey, number>>;
  implausible: FieldKey[];
  medications: Medication[];
}

/** The free-text fields the values are read from, in this order (the first mention wins). */
export const SOURCE_FIELDS = ['exam', 'labs', 'chiefComplaint', 'history', 'treatment'] as const;

export function extractFromText(text: string): ExtractedFields {
  return { ...extractValues(text), medications: extractMedications(text) };
}

/** A record's fields, cleaned (before de-identification, which may rewrite numbers it takes for dates or ids). */
export function extractFromRecord(f: Partial<Record<(typeof SOURCE_FIELDS)[number], string>>): ExtractedFields {
  return extractFromText(SOURCE_FIELDS.map((k) => f[k]).filter(Boolean).join('\n'));
}
