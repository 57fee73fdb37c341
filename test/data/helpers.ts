// Shared helpers of the data pipeline tests: temp site dirs and a stand-in de-identifier for
// tests that are about ingest mechanics (the real one is exercised in the deid and CLI tests), and
// the split tests' count of patients per diagnosis stratum and split.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Deidentifier } from '../../site-agent/data/deid-bridge.ts';
import type { SiteDataStore } from '../../site-agent/data/index.ts';
import { shiftDate } from '../../site-agent/data/deid/index.ts';
import type { PhiSpan } from '../../site-agent/data/types.ts';

export function tempDir(prefix = 'fedlora-data-'): { dir: string; cleanup: () => void } {
  const dir = mkdtempSync(join(tmpdir(), prefix));
  return { dir, cleanup: () => rmSync(dir, { recursive: true, force: true }) };
}

/** Stand-in: masks the known names and every run of 6+ digits, and counts calls. */
export function stubDeid(key: Buffer): Deidentifier & { calls: number } {
  const d = {
    calls: 0,
    text(s: string, _pk: string, names: string[]) {
      d.calls++;
      const spans: PhiSpan[] = [];
      let out = s;
      for (const n of names) if (n && out.includes(n)) { spans.push({ type: 'NAME', start: 0, end: 0, text: n }); out = out.split(n).join('[NAME]'); }
      out = out.replace(/\d{6,}/g, (m) => { spans.push({ type: 'ID', start: 0, end: 0, text: m }); return '[ID]'; });
      return { text: out, spans };
    },
    shiftDate: (iso: string, pk: string) => shiftDate(iso, key, pk),
  };
  return d;
}

/** Distinct patients in each split (train / validation / test) of each diagnosis stratum. */
export function patientsPerStratum(store: SiteDataStore): Map<string, Record<string, number>> {
  const rows = store.db.prepare('SELECT s.stratum AS stratum, s.split AS split, count(DISTINCT r.patient_key) AS n FROM data_splits s JOIN data_records r ON r.id = s.record_id GROUP BY s.stratum, s.split').all() as { stratum: string; split: string; n: number }[];
  const strata = new Map<string, Record<string, number>>();
  for (const r of rows) strata.set(r.stratum, { ...(strata.get(r.stratum) ?? {}), [r.split]: r.n });
  return strata;
}
