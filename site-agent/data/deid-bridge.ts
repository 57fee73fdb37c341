// How the ingest pipeline calls the de-identifier (site-agent/data/deid/).
// De-identification is on by default; if the module cannot be loaded, ingest FAILS — it never
// silently stores text that was not de-identified.

import { shiftDate } from './deid/dates.ts';
import type { DeidOptions, DeidResult } from './types.ts';
import { fail } from '../../shared/errors.ts';

export interface Deidentifier {
  /** De-identify one free-text field of a patient's record. */
  text(s: string, patientKey: string, knownNames: string[]): DeidResult;
  /** Shift an ISO date (yyyy-mm-dd) by the patient's secret offset. */
  shiftDate(isoDate: string, patientKey: string): string;
}

type DeidentifyFn = (text: string, opts: DeidOptions) => DeidResult;

const DEID_MODULE = './deid/index.ts';

/** Load the de-identifier's `deidentify` (fail closed). Structured dates are shifted by
 *  deid/dates.ts's shiftDate, the same per-patient HMAC offset as the dates found in the
 *  patient's free text, so a record's dates keep their intervals whichever path they take. */
export async function loadDeidentifier(key: Buffer, mode: DeidOptions['mode'], modulePath: string = DEID_MODULE): Promise<Deidentifier> {
  let mod: Record<string, unknown>;
  try {
    mod = (await import(/* @vite-ignore */ modulePath)) as Record<string, unknown>;
  } catch (e) {
    throw fail('FEDLORA_ERR_DEID', `de-identifier ${modulePath} cannot be loaded (${(e as Error).message}); refusing to ingest without de-identification`);
  }
  const deidentify = mod.deidentify as DeidentifyFn | undefined;
  if (typeof deidentify !== 'function') throw fail('FEDLORA_ERR_DEID', `${modulePath} exports no deidentify(); refusing to ingest without de-identification`);
  return {
    text: (s, patientKey, knownNames) => deidentify(s, { mode, key, patientKey, knownNames }),
    shiftDate: (iso, patientKey) => shiftDate(iso, key, patientKey),
  };
}
