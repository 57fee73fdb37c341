// What ingest does with a record's structured fields: read them from the cleaned text (before
// de-identification, which may rewrite numbers it takes for dates or identifiers), apply the
// site's missing-value policy (a `drop` names the field), find near-duplicates of the stored
// (de-identified) text among the records already stored, and store it all beside the record.
import type Database from 'better-sqlite3-multiple-ciphers';
import { FIELDS, type FieldKey } from './catalog.ts';
import { extractFromRecord, type ExtractedFields, SOURCE_FIELDS } from './index.ts';
import { applyMissingPolicy, type FieldsConfig } from './missing-policy.ts';
import { minhashSignature } from './near-duplicates.ts';
import { FieldStore, type NearDuplicate } from './field-store.ts';

export interface RecordFields extends ExtractedFields {
  imputed: FieldKey[];
}

export interface NearDuplicateCheck {
  signature: Uint32Array;
  /** Stored records at or above the threshold, best first. */
  pairs: NearDuplicate[];
  /** With `merge`: the same patient's stored record this one is a near-copy of (it is not stored). */
  mergeInto: NearDuplicate | null;
}

export class IngestFields {
  private readonly store: FieldStore;

  constructor(db: Database.Database, private readonly cfg: FieldsConfig) {
    this.store = new FieldStore(db);
  }

  /** The record's fields after the missing-value policy, or why the policy drops it (naming the field). */
  read(text: Partial<Record<(typeof SOURCE_FIELDS)[number], string>>, opts: { ignorePolicy?: boolean } = {}): RecordFields | { drop: string } | null {
    if (!this.cfg.extract) return null;
    const got = extractFromRecord(text);
    if (opts.ignorePolicy) return { ...got, imputed: [] };
    const p = applyMissingPolicy(got.values, got.medications.length, this.cfg.missing);
    if (p.dropFor === 'medications') return { drop: 'medications: no medication found in the text (data.fields.missing.medications: drop)' };
    if (p.dropFor) {
      const f = FIELDS[p.dropFor];
      const seen = got.implausible.includes(p.dropFor) ? ' (mentioned with an implausible value)' : '';
      return { drop: `${p.dropFor}: no ${f.label.en} (${f.unit}) found in the text${seen} (data.fields.missing.${p.dropFor}: drop)` };
    }
    return { ...got, values: p.values, imputed: p.imputed };
  }

  nearDuplicates(text: string, patientKey: string): NearDuplicateCheck {
    const signature = minhashSignature(text);
    const pairs = this.store.nearDuplicatesOf(signature, patientKey, this.cfg.near_duplicates.threshold);
    const mergeInto = this.cfg.near_duplicates.merge ? (pairs.find((p) => p.samePatient) ?? null) : null;
    return { signature, pairs, mergeInto };
  }

  /** A near-copy not stored (merge): the pair is kept so the report lists it, and its measured
   *  values (not imputed ones) fill the fields the kept record lacks. */
  saveMerged(recordId: string, check: NearDuplicateCheck, fields: RecordFields | null, source: string, runId: number | null): void {
    this.store.recordPair(recordId, check.mergeInto!, true, source, runId);
    if (fields) {
      const measured = Object.fromEntries(Object.entries(fields.values).filter(([k]) => !fields.imputed.includes(k as FieldKey)));
      this.store.fillMissing(check.mergeInto!.recordId, measured);
    }
  }

  save(recordId: string, patientKey: string, fields: RecordFields | null, check: NearDuplicateCheck, source: string, runId: number | null): void {
    if (fields) this.saveFields(recordId, fields);
    this.saveSignature(recordId, patientKey, check, source, runId);
  }

  saveFields(recordId: string, fields: RecordFields): void {
    this.store.saveFields(recordId, fields.values, fields.imputed, fields.implausible);
    this.store.saveMedications(recordId, fields.medications);
  }

  /** The record's signature and the near-duplicate pairs found for it. */
  saveSignature(recordId: string, patientKey: string, check: NearDuplicateCheck, source: string, runId: number | null): void {
    this.store.saveSignature(recordId, patientKey, check.signature);
    for (const p of check.pairs) this.store.recordPair(recordId, p, false, source, runId);
  }
}
