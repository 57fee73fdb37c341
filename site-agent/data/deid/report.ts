// Counts of PHI found, by type: what `fedlora deid --report` writes and ingest logs.

import type { PhiSpan, PhiType } from '../types.ts';

export type PhiCounts = Record<PhiType, number>;

export interface DeidReport {
  input: string;
  output: string;
  format: 'jsonl' | 'txt';
  mode: 'placeholder' | 'pseudonym';
  /** Lines (txt) or JSON records (jsonl) written. */
  records: number;
  /** String values de-identified. */
  strings: number;
  spans: number;
  byType: PhiCounts;
  /** JSONL lines that were not valid JSON: skipped (never written), listed here. */
  malformed: { line: number; error: string }[];
}

export function emptyCounts(): PhiCounts {
  return { NAME: 0, ID: 0, PASSPORT: 0, PHONE: 0, EMAIL: 0, MRN: 0, ADDRESS: 0, ZIP: 0, DATE: 0, AGE: 0, URL: 0, IP: 0, INSURANCE: 0, BANK_CARD: 0 };
}

export function countSpans(spans: readonly Pick<PhiSpan, 'type'>[], into: PhiCounts = emptyCounts()): PhiCounts {
  for (const s of spans) into[s.type]++;
  return into;
}
