// Precision and recall of the field extractor per field, on labelled notes run through the same
// cleaning and extraction as ingest. A value counts as found when it is within 2% (or 0.06 in
// the canonical unit) of the truth; a wrong value is a false positive AND a false negative.
// Medications are scored three ways: the drug (generic name), the drug with its dose, the drug
// with its frequency.
import { FIELD_KEYS, type FieldKey } from './catalog.ts';
import { extractFromRecord } from './index.ts';
import { labelledExtractionSet, type LabelledNote } from './labelled-set.ts';

const MEDICATION_SCORES = ['medication', 'medication_dose', 'medication_frequency'] as const;
export type ScoredField = FieldKey | (typeof MEDICATION_SCORES)[number];

export interface FieldScore {
  tp: number;
  fp: number;
  fn: number;
  /** null when nothing was extracted (precision undefined) / nothing was there (recall undefined). */
  precision: number | null;
  recall: number | null;
  /** True occurrences in the set. */
  support: number;
}

export interface ExtractionQuality {
  notes: number;
  seed: number;
  fields: Record<ScoredField, FieldScore>;
}

/** The set `fedlora site data report` scores: fixed size and seed, so the figures are comparable. */
export const REPORT_SET = { notes: 400, seed: 20261202 };

const close = (a: number, b: number) => Math.abs(a - b) <= Math.max(0.06, 0.02 * Math.abs(b));

function tally(): FieldScore {
  return { tp: 0, fp: 0, fn: 0, precision: null, recall: null, support: 0 };
}

function score(s: FieldScore, truth: number | string | undefined, found: number | string | undefined, same: (a: never, b: never) => boolean): void {
  if (truth !== undefined) s.support++;
  if (truth !== undefined && found !== undefined && same(found as never, truth as never)) s.tp++;
  else {
    if (found !== undefined) s.fp++;
    if (truth !== undefined) s.fn++;
  }
}

export function measureExtraction(notes: LabelledNote[], clean: (s: string) => string, seed = REPORT_SET.seed): ExtractionQuality {
  const fields = Object.fromEntries([...FIELD_KEYS, ...MEDICATION_SCORES].map((k) => [k, tally()])) as Record<ScoredField, FieldScore>;
  const eq = (a: string, b: string) => a === b;
  for (const n of notes) {
    const got = extractFromRecord({ exam: clean(n.exam), labs: clean(n.labs), treatment: clean(n.treatment) });
    for (const f of FIELD_KEYS) score(fields[f], n.truth[f], got.values[f], close);
    const names = new Set([...n.medications.map((m) => m.name), ...got.medications.map((m) => m.name)]);
    for (const name of names) {
      const t = n.medications.find((m) => m.name === name);
      const g = got.medications.find((m) => m.name === name);
      score(fields.medication, t?.name, g?.name, eq);
      // Dose and frequency are scored where the note states them or the extractor claims them.
      const key = (x: { dose: number | null } | undefined) => (x && x.dose !== null ? `${name}:${x.dose}` : undefined);
      score(fields.medication_dose, key(t), g && g.dose !== null ? `${name}:${Math.round(g.dose * 1e6) / 1e6}` : undefined, eq);
      const fk = (x: { frequency: string | null } | undefined) => (x && x.frequency !== null ? `${name}:${x.frequency}` : undefined);
      score(fields.medication_frequency, fk(t), fk(g), eq);
    }
  }
  for (const s of Object.values(fields)) {
    s.precision = s.tp + s.fp ? s.tp / (s.tp + s.fp) : null;
    s.recall = s.tp + s.fn ? s.tp / (s.tp + s.fn) : null;
  }
  return { notes: notes.length, seed, fields };
}

/** The report's figures: the generated labelled set, cleaned as the site's config cleans. */
export function reportExtractionQuality(clean: (s: string) => string): ExtractionQuality {
  return measureExtraction(labelledExtractionSet(REPORT_SET.notes, REPORT_SET.seed), clean, REPORT_SET.seed);
}
