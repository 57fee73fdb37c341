// Train/validation/test assignment, grouped by PATIENT (the de-identified patient key), stratified
// by diagnosis, and STORED: all visits of one patient are in one split (a held-out case never has
// a sibling visit in training), a record keeps its split forever, and records that arrive later
// are assigned without moving any old one.

import { createHash } from 'node:crypto';
import type { SiteDataStore, Split } from '../store.ts';
import type { DataConfig } from '../config-schema.ts';
import { hashUnit } from '../../../shared/hash.ts';

export const SPLITS: Split[] = ['train', 'validation', 'test'];
const NO_DIAGNOSIS = '(none)';

const order = (seed: number, id: string): string => createHash('sha256').update(`${seed}:${id}`).digest('hex');

/** The patient's stratum: their most frequent diagnosis among the records being assigned (ties:
 *  the first in sort order), so a patient with five asthma visits counts as one asthma patient. */
function patientStratum(dxs: (string | null)[]): string {
  const n = new Map<string, number>();
  for (const d of dxs) n.set(d ?? NO_DIAGNOSIS, (n.get(d ?? NO_DIAGNOSIS) ?? 0) + 1);
  return [...n].sort((a, b) => b[1] - a[1] || (a[0] < b[0] ? -1 : 1))[0][0];
}

/** Files whose splits were stored before they were grouped by patient can hold one patient in two
 *  splits. Such a patient is moved whole to the first of train < validation < test they appear in:
 *  a record that may already have been trained on never becomes held out. Returns the moves. */
export function regroupOverlappingPatients(store: SiteDataStore): { patients: number; records: number } {
  const db = store.db;
  const rows = db.prepare(`SELECT r.patient_key AS p, s.split AS split, count(*) AS n FROM data_splits s JOIN data_records r ON r.id = s.record_id
    WHERE r.patient_key IN (SELECT r2.patient_key FROM data_splits s2 JOIN data_records r2 ON r2.id = s2.record_id GROUP BY r2.patient_key HAVING count(DISTINCT s2.split) > 1)
    GROUP BY r.patient_key, s.split`).all() as { p: string; split: Split; n: number }[];
  if (rows.length === 0) return { patients: 0, records: 0 };
  const byPatient = new Map<string, { split: Split; n: number }[]>();
  for (const r of rows) byPatient.set(r.p, [...(byPatient.get(r.p) ?? []), r]);
  const move = db.prepare('UPDATE data_splits SET split = ? WHERE split != ? AND record_id IN (SELECT id FROM data_records WHERE patient_key = ?)');
  let records = 0;
  store.tx(() => {
    for (const [p, parts] of byPatient) {
      const target = SPLITS.find((s) => parts.some((x) => x.split === s))!;
      records += move.run(target, target, p).changes;
    }
  });
  const moved = { patients: byPatient.size, records };
  store.recordEvent('splits_regrouped_by_patient', moved);
  return moved;
}

/** Assign every record without a split. A record of a patient who already has a split joins it.
 *  New patients are taken per stratum (their main diagnosis) in a seed-determined order; the i-th
 *  patient of the stratum (counting patients assigned before) gets the point
 *  u_i = frac(phase + i·φ) of a golden-ratio sequence (phase from the seed and the stratum) and
 *  goes, with all their records, to train/validation/test by the cumulative ratios. The sequence
 *  is evenly spread for every prefix length, so each stratum's patients are split in proportion
 *  whether it has 5 or 5000, small strata still reach the test split, and adding records later
 *  never moves an old one. */
export function assignSplits(store: SiteDataStore, cfg: DataConfig['split']): { assigned: number; regrouped: { patients: number; records: number } } {
  const db = store.db;
  const regrouped = regroupOverlappingPatients(store);
  const fresh = db
    .prepare('SELECT r.id AS id, r.patient_key AS p, r.diagnosis AS dx FROM data_records r LEFT JOIN data_splits s ON s.record_id = r.id WHERE s.record_id IS NULL')
    .all() as { id: string; p: string; dx: string | null }[];
  if (fresh.length === 0) return { assigned: 0, regrouped };
  const known = new Map<string, { split: Split; stratum: string }>();
  for (const row of db.prepare('SELECT r.patient_key AS p, s.split AS split, min(s.stratum) AS stratum FROM data_splits s JOIN data_records r ON r.id = s.record_id GROUP BY r.patient_key, s.split').all() as { p: string; split: Split; stratum: string }[]) {
    known.set(row.p, { split: row.split, stratum: row.stratum });
  }
  const patientsIn = new Map<string, number>();
  for (const row of db.prepare('SELECT s.stratum AS stratum, count(DISTINCT r.patient_key) AS n FROM data_splits s JOIN data_records r ON r.id = s.record_id GROUP BY s.stratum').all() as { stratum: string; n: number }[]) {
    patientsIn.set(row.stratum, row.n);
  }
  const byPatient = new Map<string, { id: string; dx: string | null }[]>();
  for (const f of fresh) byPatient.set(f.p, [...(byPatient.get(f.p) ?? []), f]);

  const ins = db.prepare('INSERT INTO data_splits (record_id, split, stratum, seed) VALUES (?,?,?,?)');
  const newByStratum = new Map<string, { p: string; k: string }[]>();
  const cut1 = cfg.train;
  const cut2 = cfg.train + cfg.validation;
  store.tx(() => {
    for (const [p, recs] of byPatient) {
      const prior = known.get(p);
      if (prior) {
        for (const r of recs) ins.run(r.id, prior.split, prior.stratum, cfg.seed);
        continue;
      }
      const stratum = patientStratum(recs.map((r) => r.dx));
      newByStratum.set(stratum, [...(newByStratum.get(stratum) ?? []), { p, k: order(cfg.seed, p) }]);
    }
    for (const [stratum, patients] of newByStratum) {
      patients.sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : 0));
      const phase = hashUnit(`${cfg.seed}:stratum:${stratum}`);
      let i = patientsIn.get(stratum) ?? 0;
      for (const { p } of patients) {
        const u = (phase + i * GOLDEN) % 1;
        i++;
        const split: Split = u < cut1 ? 'train' : u < cut2 ? 'validation' : 'test';
        for (const r of byPatient.get(p)!) ins.run(r.id, split, stratum, cfg.seed);
      }
    }
  });
  return { assigned: fresh.length, regrouped };
}

/** Per split: records and distinct patients; patient_overlap = patients found in more than one split (0 by construction). */
export function splitCounts(store: SiteDataStore): { splits: Record<string, { records: number; patients: number }>; patient_overlap: number } {
  const db = store.db;
  const splits: Record<string, { records: number; patients: number }> = {};
  for (const row of db.prepare('SELECT s.split AS split, count(*) AS records, count(DISTINCT r.patient_key) AS patients FROM data_splits s JOIN data_records r ON r.id = s.record_id GROUP BY s.split ORDER BY s.split').all() as { split: string; records: number; patients: number }[]) {
    splits[row.split] = { records: row.records, patients: row.patients };
  }
  const overlap = db.prepare('SELECT count(*) FROM (SELECT r.patient_key FROM data_splits s JOIN data_records r ON r.id = s.record_id GROUP BY r.patient_key HAVING count(DISTINCT s.split) > 1)').pluck().get() as number;
  return { splits, patient_overlap: overlap };
}

const GOLDEN = (Math.sqrt(5) - 1) / 2;
