// `fedlora site data report`: what the site holds, for the data steward (never sent anywhere).

import type { SiteDataStore } from './store.ts';
import type { CaseRecord } from './types.ts';
import { defaultDataConfig, recordText, type DataConfig } from './config-schema.ts';
import { makeCleaner } from './clean.ts';
import { fieldsReport, formatFieldsReport, type FieldsReport } from './extract/report.ts';
import { splitCounts } from './dataset/split.ts';
import { importAssistantConfirmations } from './labels/assistant.ts';
import { formatLabelReport, labelReport, type LabelReport } from './labels/report.ts';

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
  /** Records per sex and age band (the subgroups of the evaluation figures); '(none)' where the export has no such field. */
  bySex: Record<string, number>;
  byAgeBand: Record<string, number>;
  /** Records and distinct patients per split (splits are grouped by the de-identified patient key). */
  splits: Record<string, { records: number; patients: number }>;
  /** Patients with records in more than one split: 0 (a held-out patient never has a visit in training). */
  patient_overlap: number;
  chars: LengthStats;
  tokens?: LengthStats;
  quarantine: Record<string, number>;
  ingestRuns: number;
  deidDisabledRuns: number;
  /** Doctors' labels: agreement (Cohen's kappa), adjudication queue, suggestion bias, training sets. */
  labels: LabelReport;
  /** Vital signs, labs and medications read from the text at ingest; near-duplicates; extraction precision/recall. */
  fields: FieldsReport;
}

function lengthStats(xs: number[]): LengthStats {
  if (xs.length === 0) return { count: 0, min: 0, p50: 0, p90: 0, p99: 0, max: 0, mean: 0 };
  const s = [...xs].sort((a, b) => a - b);
  const q = (p: number) => s[Math.min(s.length - 1, Math.floor(p * s.length))];
  return { count: s.length, min: s[0], p50: q(0.5), p90: q(0.9), p99: q(0.99), max: s[s.length - 1], mean: Math.round(s.reduce((a, b) => a + b, 0) / s.length) };
}


/** `countTokens` (optional) gets each record and its text; the CLI renders the record's SFT
 *  example with the model's chat template and tokenizes it. `cleaning` is the site's (the
 *  extraction figures clean the labelled set as ingest does); default: the default config's. */
export function dataReport(store: SiteDataStore, countTokens?: (rec: CaseRecord, text: string) => number, cleaning: DataConfig['cleaning'] = defaultDataConfig().cleaning): DataReport {
  const inc = (m: Record<string, number>, k: string) => (m[k] = (m[k] ?? 0) + 1);
  importAssistantConfirmations(store.db);
  const rep: DataReport = {
    records: 0, byDepartment: {}, byDiagnosis: {}, byLang: {}, bySex: {}, byAgeBand: {}, splits: {}, patient_overlap: 0, chars: lengthStats([]), quarantine: store.quarantineByReason(),
    ingestRuns: store.db.prepare('SELECT count(*) FROM data_ingest_runs').pluck().get() as number,
    deidDisabledRuns: store.db.prepare('SELECT count(*) FROM data_ingest_runs WHERE deid_enabled = 0').pluck().get() as number,
    labels: labelReport(store.db),
    fields: fieldsReport(store.db, makeCleaner(cleaning)),
  };
  const chars: number[] = [];
  const tokens: number[] = [];
  for (const r of store.iterateRecords()) {
    rep.records++;
    inc(rep.byDepartment, r.department ?? '(none)');
    inc(rep.byDiagnosis, r.diagnosis ?? '(none)');
    inc(rep.byLang, r.lang);
    inc(rep.bySex, r.sex ?? '(none)');
    inc(rep.byAgeBand, r.ageBand ?? '(none)');
    const text = recordText(r);
    chars.push([...text].length);
    if (countTokens) tokens.push(countTokens(r, text));
  }
  Object.assign(rep, splitCounts(store));
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
    `splits: ${Object.entries(rep.splits).map(([k, n]) => `${k} ${n.records} records / ${n.patients} patients`).join(', ') || '(not assigned yet)'}`,
    `patient_overlap: ${rep.patient_overlap}   (patients in more than one split)`,
    table('by department', rep.byDepartment),
    table('by diagnosis', rep.byDiagnosis),
    table('by language', rep.byLang),
    table('by sex', rep.bySex),
    table('by age band', rep.byAgeBand),
    len('length (characters)', rep.chars),
    ...(rep.tokens ? [len('length (tokens)', rep.tokens)] : []),
    Object.keys(rep.quarantine).length ? table('quarantined by reason', rep.quarantine) : 'quarantined: none',
    formatFieldsReport(rep.fields),
    formatLabelReport(rep.labels),
  ].join('\n');
}
