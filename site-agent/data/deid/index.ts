// The de-identifier: finds PHI in Chinese and English clinical text and replaces it.
//
// Replacement policy (documented for the data-protection officer):
// - NAME: `[NAME]` (placeholder mode) or a consistent keyed pseudonym (pseudonym mode).
// - DATE: shifted by the per-patient secret offset in BOTH modes, keeping the written format,
//   so intervals between a patient's dates survive (`dates: 'placeholder'` writes `[DATE]`).
//   Years on their own are kept (Safe Harbor allows the year).
// - AGE: ages over 89 become "90+" (or "≥90" before 岁); ages ≤ 89 are kept in both modes.
// - Everything else (ID, PASSPORT, PHONE, EMAIL, MRN, ADDRESS, ZIP, URL, IP, INSURANCE,
//   BANK_CARD): typed placeholder `[TYPE]` in both modes.
// - Without `patientKey`, '' is used: one site-wide date shift and pseudonym table.

import type { DeidOptions, DeidResult, PhiSpan, PhiType } from '../types.ts';
import { detectPhi, type Candidate } from './detect.ts';
import { dateShiftDays } from './dates.ts';
import { pseudonymFor } from './pseudonym.ts';

export { dateShiftDays, shiftDate, findDates } from './dates.ts';
export { chineseIdCheckChar, isValidChineseId18, isValidChineseId15, luhnValid, luhnCheckDigit } from './validators.ts';
export { pseudonymFor } from './pseudonym.ts';
export { detectPhi } from './detect.ts';
export { deidentifyRecord, deidentifyValue, collectNames, type DeidRecordResult } from './record.ts';
export { emptyCounts, countSpans, type PhiCounts, type DeidReport } from './report.ts';

export const PHI_TYPES: readonly PhiType[] = [
  'NAME', 'ID', 'PASSPORT', 'PHONE', 'EMAIL', 'MRN', 'ADDRESS', 'ZIP', 'DATE', 'AGE', 'URL', 'IP', 'INSURANCE', 'BANK_CARD',
];

export interface DeidOptionsExt extends DeidOptions {
  /** How dates are replaced: 'shift' (default, both modes) or 'placeholder' (`[DATE]`). */
  dates?: 'shift' | 'placeholder';
}

function replacement(c: Candidate, text: string, opts: DeidOptionsExt, days: () => number, names: Map<string, string>): string {
  switch (c.type) {
    case 'NAME': {
      if (opts.mode !== 'pseudonym') return '[NAME]';
      let p = names.get(c.text);
      if (p === undefined) names.set(c.text, (p = pseudonymFor(c.text, opts.key, opts.patientKey ?? '')));
      return p;
    }
    case 'DATE':
      return opts.dates === 'placeholder' || !c.date ? '[DATE]' : c.date.shifted(days());
    case 'AGE':
      return /^\s*(?:周岁|岁)/u.test(text.slice(c.end, c.end + 3)) ? '≥90' : '90+';
    default:
      return `[${c.type}]`;
  }
}

/** De-identify one text. Spans are reported with offsets in the INPUT text. */
export function deidentify(text: string, opts: DeidOptionsExt): DeidResult {
  if (typeof text !== 'string' || text.length === 0) return { text: text ?? '', spans: [] };
  const found = detectPhi(text, opts.knownNames ?? []);
  let shift: number | undefined;
  const days = () => (shift ??= dateShiftDays(opts.key, opts.patientKey ?? ''));
  const parts: string[] = [];
  let at = 0;
  const spans: PhiSpan[] = [];
  const names = new Map<string, string>(); // HMACs once per distinct name in this text
  for (const c of found) {
    parts.push(text.slice(at, c.start), replacement(c, text, opts, days, names));
    at = c.end;
    spans.push({ type: c.type, start: c.start, end: c.end, text: c.text });
  }
  parts.push(text.slice(at));
  return { text: parts.join(''), spans };
}
