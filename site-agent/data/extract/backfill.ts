// `fedlora site data extract`: the structured fields and MinHash signatures of records stored
// before extraction existed (or with data.fields.extract: false then), read from the stored
// text. That text is de-identified, so a number the de-identifier took for a date or an
// identifier is gone and its field stays missing. A record the `drop` policy would have refused
// is not deleted (it was stored under the policy of its day): it is counted per field. Records
// are taken in the order they were stored, so a pair names the later one as the duplicate.
import type Database from 'better-sqlite3-multiple-ciphers';
import { recordText } from '../config-schema.ts';
import type { CaseRecord } from '../types.ts';
import { IngestFields } from './at-ingest.ts';
import type { FieldsConfig } from './missing-policy.ts';

export interface BackfillSummary {
  /** Records given fields (and a signature) now. */
  records: number;
  /** Records given a MinHash signature only (their fields were there, or data.fields.extract is false). */
  signaturesOnly: number;
  nearDuplicatePairs: number;
  /** Records the `drop` policy would refuse at ingest, per field (kept). */
  wouldDrop: Record<string, number>;
}

export function backfillFields(db: Database.Database, cfg: FieldsConfig): BackfillSummary {
  const fields = new IngestFields(db, cfg);
  const out: BackfillSummary = { records: 0, signaturesOnly: 0, nearDuplicatePairs: 0, wouldDrop: {} };
  const todo = db
    .prepare(`SELECT json, source, run_id,
                EXISTS (SELECT 1 FROM data_minhash m WHERE m.record_id = r.id) AS signed,
                EXISTS (SELECT 1 FROM data_record_fields f WHERE f.record_id = r.id) AS extracted
              FROM data_records r WHERE signed = 0 OR (extracted = 0 AND ?) ORDER BY r.rowid`)
    .all(cfg.extract ? 1 : 0) as { json: string; source: string; run_id: number | null; signed: number; extracted: number }[];
  db.transaction(() => {
    for (const row of todo) {
      const rec = JSON.parse(row.json) as CaseRecord;
      let read = row.extracted ? null : fields.read(rec);
      if (read && 'drop' in read) {
        const field = read.drop.slice(0, read.drop.indexOf(':'));
        out.wouldDrop[field] = (out.wouldDrop[field] ?? 0) + 1;
        // Kept: its fields as read, without the policy.
        read = fields.read(rec, { ignorePolicy: true }) as Exclude<typeof read, { drop: string }>;
      }
      if (read) {
        fields.saveFields(rec.id, read);
        out.records++;
      }
      if (!row.signed) {
        const near = fields.nearDuplicates(recordText(rec), rec.patientKey);
        fields.saveSignature(rec.id, rec.patientKey, near, row.source, row.run_id);
        out.nearDuplicatePairs += near.pairs.length;
        if (!read) out.signaturesOnly++;
      }
    }
  })();
  return out;
}
