// The label each record is trained and evaluated on, under the site's policy.training_labels:
//   any        a doctor's label where there is one (adjudicated, two agreeing doctors, one
//              doctor, the assistant's confirmation, or the first of two reads), else the
//              export's diagnosis column
//   confirmed  only labels a doctor gave or confirmed and that are settled: one doctor's read on
//              a record not sent to two, two agreeing doctors, an adjudication, the assistant's
//              confirmation; export diagnoses and records waiting for their second read are left out
// A record in dispute has no label under either policy until it is adjudicated.
import type Database from 'better-sqlite3-multiple-ciphers';

export const TRAINING_LABEL_POLICIES = ['any', 'confirmed'] as const;
export type TrainingLabelPolicy = (typeof TRAINING_LABEL_POLICIES)[number];

/** Where a record's training label came from (counted per training set). */
export type LabelSource = 'export' | 'doctor' | 'agreed' | 'adjudicated' | 'assistant' | 'first_read';

export interface EffectiveLabel {
  diagnosis: string;
  icd10: string | null;
  /** label_entries.id; null = the export's diagnosis column. */
  labelId: number | null;
  source: LabelSource;
}

/** Why a record has no training label: disputed, or unconfirmed under the 'confirmed' policy. */
export type Exclusion = 'disputed' | 'unconfirmed';

export interface LabelLookup {
  policy: TrainingLabelPolicy;
  /** The label of a record; `export` is its diagnosis column (null when the export had none). */
  labelOf(recordId: string, exportDx: string | null): EffectiveLabel | Exclusion | null;
}

export function labelLookup(db: Database.Database, policy: TrainingLabelPolicy): LabelLookup {
  const rows = db.prepare(`SELECT lr.record_id, lr.status, e.id, e.kind, e.diagnosis, e.icd10 FROM label_records lr
      LEFT JOIN label_entries e ON e.id = coalesce(lr.final_label_id, (SELECT max(x.id) FROM label_entries x WHERE x.record_id = lr.record_id AND x.kind != 'adjudication'))`)
    .all() as { record_id: string; status: string; id: number; kind: string; diagnosis: string; icd10: string | null }[];
  const byRecord = new Map<string, EffectiveLabel | Exclusion>();
  for (const r of rows) {
    if (r.status === 'disputed') {
      byRecord.set(r.record_id, 'disputed');
      continue;
    }
    const source: LabelSource = r.status === 'pending_second' ? 'first_read' : r.status === 'single' ? (r.kind === 'assistant' ? 'assistant' : 'doctor') : (r.status as 'agreed' | 'adjudicated');
    if (source === 'first_read' && policy === 'confirmed') {
      byRecord.set(r.record_id, 'unconfirmed');
      continue;
    }
    byRecord.set(r.record_id, { diagnosis: r.diagnosis, icd10: r.icd10, labelId: r.id, source });
  }
  return {
    policy,
    labelOf(recordId, exportDx) {
      const l = byRecord.get(recordId);
      if (l !== undefined) return l;
      if (!exportDx) return null;
      return policy === 'confirmed' ? 'unconfirmed' : { diagnosis: exportDx, icd10: null, labelId: null, source: 'export' };
    },
  };
}
