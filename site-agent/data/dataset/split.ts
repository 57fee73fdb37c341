// Train/validation/test assignment, stratified by diagnosis and STORED: a record keeps its
// split forever (the held-out set never leaks into training in a later round), and records
// that arrive later are assigned without moving any old one.

import { createHash } from 'node:crypto';
import type { SiteDataStore, Split } from '../store.ts';
import type { DataConfig } from '../config-schema.ts';

export const SPLITS: Split[] = ['train', 'validation', 'test'];
export const NO_DIAGNOSIS = '(none)';

const order = (seed: number, id: string): string => createHash('sha256').update(`${seed}:${id}`).digest('hex');

/** Assign every record without a split. Within a stratum (diagnosis), new records are taken
 *  in a seed-determined order; the i-th record of the stratum (counting records assigned
 *  before) gets the point u_i = frac(phase + i·φ) of a golden-ratio sequence (phase from the
 *  seed and the stratum) and goes to train/validation/test by the cumulative ratios. The
 *  sequence is evenly spread for every prefix length, so each stratum is split in proportion
 *  whether it has 5 records or 5000, small strata still reach the test split, and adding
 *  records later never moves an old one. */
export function assignSplits(store: SiteDataStore, cfg: DataConfig['split']): { assigned: number } {
  const db = store.db;
  const fresh = db
    .prepare('SELECT r.id AS id, r.diagnosis AS dx FROM data_records r LEFT JOIN data_splits s ON s.record_id = r.id WHERE s.record_id IS NULL')
    .all() as { id: string; dx: string | null }[];
  if (fresh.length === 0) return { assigned: 0 };
  const existing = new Map<string, number>();
  for (const row of db.prepare('SELECT stratum, count(*) AS n FROM data_splits GROUP BY stratum').all() as { stratum: string; n: number }[]) {
    existing.set(row.stratum, row.n);
  }
  const byStratum = new Map<string, { id: string; k: string }[]>();
  for (const f of fresh) {
    const s = f.dx ?? NO_DIAGNOSIS;
    if (!byStratum.has(s)) byStratum.set(s, []);
    byStratum.get(s)!.push({ id: f.id, k: order(cfg.seed, f.id) });
  }
  const cut1 = cfg.train;
  const cut2 = cfg.train + cfg.validation;
  const ins = db.prepare('INSERT INTO data_splits (record_id, split, stratum, seed) VALUES (?,?,?,?)');
  store.tx(() => {
    for (const [stratum, recs] of byStratum) {
      recs.sort((a, b) => (a.k < b.k ? -1 : a.k > b.k ? 1 : 0));
      const phase = parseInt(order(cfg.seed, 'stratum:' + stratum).slice(0, 8), 16) / 2 ** 32;
      let i = existing.get(stratum) ?? 0;
      for (const r of recs) {
        const u = (phase + i * GOLDEN) % 1;
        i++;
        const split: Split = u < cut1 ? 'train' : u < cut2 ? 'validation' : 'test';
        ins.run(r.id, split, stratum, cfg.seed);
      }
    }
  });
  return { assigned: fresh.length };
}

const GOLDEN = (Math.sqrt(5) - 1) / 2;

/** Split → record ids (sorted), from the stored assignment. */
export function splitIds(store: SiteDataStore): Record<Split, string[]> {
  const out: Record<Split, string[]> = { train: [], validation: [], test: [] };
  for (const row of store.db.prepare('SELECT record_id, split FROM data_splits ORDER BY record_id').all() as { record_id: string; split: Split }[]) {
    out[row.split].push(row.record_id);
  }
  return out;
}
