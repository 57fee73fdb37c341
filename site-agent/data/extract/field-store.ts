// The extracted fields' tables in site.sqlite (migration 3 of site-agent/site-db.ts): typed
// columns per record, medications, MinHash signatures with their LSH band keys, and the
// near-duplicate pairs found. Writes run inside the ingest's batch transaction.
import type Database from 'better-sqlite3-multiple-ciphers';
import { FIELDS, FIELD_KEYS, type FieldKey } from './catalog.ts';
import type { Medication } from './medications.ts';
import { bandKeys, blobToSignature, signatureSimilarity, signatureToBlob } from './near-duplicates.ts';

// Candidates per shared band: the latest few records only, and the signatures compared are
// those sharing the most bands. A site whose notes are mostly one template (every record shares
// bands with every other) then costs a bounded amount per record instead of growing with the
// site; a record still finds its near-copies, which share nearly all bands.
const PER_BAND = 16;
const COMPARED = 32;

export interface NearDuplicate {
  recordId: string;
  similarity: number;
  samePatient: boolean;
}

export class FieldStore {
  private readonly s;

  constructor(private readonly db: Database.Database) {
    const cols = FIELD_KEYS.map((k) => FIELDS[k].column);
    this.s = {
      fields: db.prepare(`INSERT OR REPLACE INTO data_record_fields (record_id, ${cols.join(', ')}, imputed, implausible) VALUES (?, ${cols.map(() => '?').join(', ')}, ?, ?)`),
      med: db.prepare('INSERT OR REPLACE INTO data_medications (record_id, ord, name, dose, dose_unit, frequency, per_day, route) VALUES (?,?,?,?,?,?,?,?)'),
      sig: db.prepare('INSERT OR REPLACE INTO data_minhash (record_id, patient_key, signature) VALUES (?,?,?)'),
      band: db.prepare('INSERT INTO data_minhash_bands (band, key, record_id) VALUES (?,?,?)'),
      candidates: db.prepare(`SELECT record_id FROM data_minhash_bands WHERE band = ? AND key = ? ORDER BY rowid DESC LIMIT ${PER_BAND}`).pluck(),
      signatureOf: db.prepare('SELECT patient_key, signature FROM data_minhash WHERE record_id = ?'),
      fill: db.prepare(`UPDATE data_record_fields SET ${cols.map((c) => `${c} = COALESCE(${c}, ?)`).join(', ')} WHERE record_id = ?`),
      pair: db.prepare('INSERT OR IGNORE INTO data_near_duplicates (record_id, duplicate_of, similarity, same_patient, merged, source, run_id) VALUES (?,?,?,?,?,?,?)'),
    };
  }

  saveFields(recordId: string, values: Partial<Record<FieldKey, number>>, imputed: FieldKey[], implausible: FieldKey[]): void {
    this.s.fields.run(recordId, ...FIELD_KEYS.map((k) => values[k] ?? null), JSON.stringify(imputed), JSON.stringify(implausible));
  }

  /** A merged near-copy's measured values fill what the kept record lacks (its own values stay). */
  fillMissing(recordId: string, values: Partial<Record<FieldKey, number>>): void {
    this.s.fill.run(...FIELD_KEYS.map((k) => values[k] ?? null), recordId);
  }

  saveMedications(recordId: string, meds: Medication[]): void {
    meds.forEach((m, i) => this.s.med.run(recordId, i, m.name, m.dose, m.doseUnit, m.frequency, m.perDay, m.route));
  }

  saveSignature(recordId: string, patientKey: string, sig: Uint32Array): void {
    this.s.sig.run(recordId, patientKey, signatureToBlob(sig));
    bandKeys(sig).forEach((k, b) => this.s.band.run(b, k, recordId));
  }

  /** Stored records whose signature agrees with `sig` on at least `threshold` of positions, best first (at most 5). */
  nearDuplicatesOf(sig: Uint32Array, patientKey: string, threshold: number): NearDuplicate[] {
    const shared = new Map<string, number>();
    bandKeys(sig).forEach((k, b) => {
      for (const id of this.s.candidates.all(b, k) as string[]) shared.set(id, (shared.get(id) ?? 0) + 1);
    });
    const ids = [...shared].sort((a, b) => b[1] - a[1]).slice(0, COMPARED).map(([id]) => id);
    const out: NearDuplicate[] = [];
    for (const id of ids) {
      const row = this.s.signatureOf.get(id) as { patient_key: string; signature: Buffer } | undefined;
      if (!row) continue;
      const similarity = signatureSimilarity(sig, blobToSignature(row.signature));
      if (similarity >= threshold) out.push({ recordId: id, similarity, samePatient: row.patient_key === patientKey });
    }
    return out.sort((a, b) => b.similarity - a.similarity).slice(0, 5);
  }

  recordPair(recordId: string, d: NearDuplicate, merged: boolean, source: string, runId: number | null): void {
    this.s.pair.run(recordId, d.recordId, d.similarity, d.samePatient ? 1 : 0, merged ? 1 : 0, source, runId);
  }
}
