// How the pipeline calls the de-identifier (site-agent/data/deid/, written by its own owner).
// De-identification is on by default; if the module cannot be loaded, ingest FAILS — it never
// silently stores text that was not de-identified.

import { createHmac } from 'node:crypto';
import type { DeidOptions, DeidResult, PhiType } from './types.ts';
import { fail } from '../../shared/errors.ts';

export interface Deidentifier {
  /** De-identify one free-text field of a patient's record. */
  text(s: string, patientKey: string, knownNames: string[]): DeidResult;
  /** Shift an ISO date (yyyy-mm-dd) by the patient's secret offset. */
  shiftDate(isoDate: string, patientKey: string): string;
}

type DeidentifyFn = (text: string, opts: DeidOptions) => DeidResult;

/** Per-patient day offset in [-365, 365] \ {0} derived from the site key (used only when the
 *  de-identifier module exports no date-shift function of its own). */
export function patientDateShiftDays(key: Buffer | string, patientKey: string): number {
  const h = createHmac('sha256', key).update('fedlora/dateshift\0' + patientKey).digest();
  const d = (h.readUInt32BE(0) % 730) - 365;
  return d >= 0 ? d + 1 : d;
}

export function shiftIsoDate(iso: string, days: number): string {
  const t = Date.parse(iso + 'T00:00:00Z');
  return new Date(t + days * 86_400_000).toISOString().slice(0, 10);
}

const DEID_MODULE = './deid/index.ts';

/** Load the de-identifier. Looks for `deidentify` and, if present, a date-shift function
 *  (`shiftDate(iso, key, patientKey)` or `dateShiftDays(key, patientKey)`). */
export async function loadDeidentifier(key: Buffer, mode: DeidOptions['mode'], modulePath: string = DEID_MODULE): Promise<Deidentifier> {
  let mod: Record<string, unknown>;
  try {
    mod = (await import(/* @vite-ignore */ modulePath)) as Record<string, unknown>;
  } catch (e) {
    throw fail('FEDLORA_ERR_DEID', `de-identifier ${modulePath} cannot be loaded (${(e as Error).message}); refusing to ingest without de-identification`);
  }
  const deidentify = mod.deidentify as DeidentifyFn | undefined;
  if (typeof deidentify !== 'function') throw fail('FEDLORA_ERR_DEID', `${modulePath} exports no deidentify(); refusing to ingest without de-identification`);
  const shiftDays =
    typeof mod.dateShiftDays === 'function'
      ? (pk: string) => (mod.dateShiftDays as (k: Buffer, p: string) => number)(key, pk)
      : (pk: string) => patientDateShiftDays(key, pk);
  const shiftDate =
    typeof mod.shiftDate === 'function'
      ? (iso: string, pk: string) => (mod.shiftDate as (d: string, k: Buffer, p: string) => string)(iso, key, pk)
      : (iso: string, pk: string) => shiftIsoDate(iso, shiftDays(pk));
  return {
    text: (s, patientKey, knownNames) => deidentify(s, { mode, key, patientKey, knownNames }),
    shiftDate,
  };
}

export type SpanCounts = Partial<Record<PhiType, number>>;
