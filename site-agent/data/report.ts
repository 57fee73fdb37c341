// `fedlora site data report`: what the site holds, for the data steward (never sent anywhere).

import type { SiteDataStore } from './store.ts';
import type { CaseRecord } from './types.ts';
import { TEXT_FIELDS } from './config-schema.ts';

export interface LengthStats {
  count: number;
  min: number;
  p50: number;
  p90: number;
  p99: number;
  max: number;
  mean: number;
}

export interface DataReport {
  records: number;
  byDepartment: Record<string, number>;
  byDiagnosis: Record<string, number>;
  byLang: Record<string, number>;
  splits: Record<string, number>;
  chars: LengthStats;
  tokens?: LengthStats;
  quarantine: Record<string, number>;
  ingestRuns: number;
  deidDisabledRuns: number;
}

export function lengthStats(xs: number[]): LengthStats {
  if (xs.length === 0) return { count: 0, min: 0, p50: 0, p90: 0, p99: 0, max: 0, mean: 0 };
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { count: s.length, min: s[0], p50: q(0.5), p90: q(0.9), p99: q(0.99), max: s[s.length - 1], mean: Math.round(s.reduce((a, b) => a + b, 0) / s.length) };
}

/** The text of a record that examples are built from (all text fields, one per line). */
export const recordText = (r: CaseRecord): string => TEXT_FIELDS.map((f) => r[f]).filter(Boolean).join('\n');

/** `countTokens` (optional) gets each record and its text; the CLI renders the record's SFT
 *  example with the model's chat template and tokenizes it. */
export function dataReport(store: SiteDataStore, countTokens?: (rec: CaseRecord, text: string) => number): DataReport {
  const inc = (m: Record<string, number>, k: string) => (m[k] = (m[k] ?? 0) + 1);
  const rep: DataReport = {
    records: 0, byDepartment: {}, byDiagnosis: {}, byLang: {}, splits: {}, chars: lengthStats([]), quarantine: store.quarantineByReason(),
    ingestRuns: store.db.prepare('SELECT count(*) FROM data_ingest_runs').pluck().get() as number,
    deidDisabledRuns: store.db.prepare('SELECT count(*) FROM data_ingest_runs WHERE deid_enabled = 0').pluck().get() as number,
  };
  const chars: number[] = [];
  const tokens: number[] = [];
  for (const r of store.iterateRecords()) {
    rep.records++;
    inc(rep.byDepartment, r.department ?? '(none)');
    inc(rep.byDiagnosis, r.diagnosis ?? '(none)');
    inc(rep.byLang, r.lang);
    const text = recordText(r);
    chars.push([...text].length);
    if (countTokens) tokens.push(countTokens(r, text));
  }
  for (const row of store.db.prepare('SELECT split, count(*) AS n FROM data_splits GROUP BY split').all() as { split: string; n: number }[]) rep.splits[row.split] = row.n;
  rep.chars = lengthStats(chars);
  if (countTokens) rep.tokens = lengthStats(tokens);
  return rep;
}

export function formatReport(rep: DataReport): string {
  const table = (title: string, m: Record<string, number>) =>
    [`${title}:`, ...Object.entries(m).sort((a, b) => b[1] - a[1]).map(([k, n]) => `  ${String(n).padStart(7)}  ${k}`)].join('\n');
  const len = (name: string, s: LengthStats) => `${name}: min ${s.min}  p50 ${s.p50}  p90 ${s.p90}  p99 ${s.p99}  max ${s.max}  mean ${s.mean}`;
  return [
    `records: ${rep.records}   (ingest runs: ${rep.ingestRuns}${rep.deidDisabledRuns ? `, ${rep.deidDisabledRuns} WITHOUT de-identification` : ''})`,
    `splits: ${Object.entries(rep.splits).map(([k, n]) => `${k} ${n}`).join(', ') || '(not assigned yet)'}`,
    table('by department', rep.byDepartment),
    table('by diagnosis', rep.byDiagnosis),
    table('by language', rep.byLang),
    len('length (characters)', rep.chars),
    ...(rep.tokens ? [len('length (tokens)', rep.tokens)] : []),
    Object.keys(rep.quarantine).length ? table('quarantined by reason', rep.quarantine) : 'quarantined: none',
  ].join('\n');
}
