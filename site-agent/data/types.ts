// Contracts of the site data pipeline: what ingest, cleaning, de-identification, dataset
// building and the engine exchange. Nothing here ever leaves the site.

/** One clinical case after ingest + cleaning + de-identification (stored in the site's SQLite). */
export interface CaseRecord {
  id: string; // content hash of the source record
  patientKey: string; // HMAC pseudonym of the patient (never the raw id)
  lang: 'zh' | 'en';
  department?: string;
  chiefComplaint?: string;
  history?: string;
  exam?: string;
  labs?: string;
  diagnosis?: string;
  icd10?: string;
  treatment?: string;
  /** Dates after the per-patient secret shift (ISO yyyy-mm-dd). */
  admissionDate?: string;
  dischargeDate?: string;
  /** For subgroup figures: F | M, and the age at the visit as a band (ageBand in ingest/subgroups.ts). */
  sex?: 'F' | 'M';
  ageBand?: string;
  extra?: Record<string, string>;
}

export type DeidMode = 'placeholder' | 'pseudonym';

export type PhiType =
  | 'NAME' | 'ID' | 'PASSPORT' | 'PHONE' | 'EMAIL' | 'MRN' | 'ADDRESS' | 'ZIP' | 'DATE' | 'AGE'
  | 'URL' | 'IP' | 'INSURANCE' | 'BANK_CARD';

export interface PhiSpan {
  type: PhiType;
  start: number; // UTF-16 offsets in the input text
  end: number;
  text: string;
}

export interface DeidOptions {
  mode: DeidMode;
  /** Secret key kept at the site: HMAC for pseudonyms and the per-patient date shift. */
  key: Buffer | string;
  /** Patient the text belongs to (pseudonyms and date shifts are consistent per patient). */
  patientKey?: string;
  /** Extra known names (e.g. from the structured Patient resource) to find in free text. */
  knownNames?: string[];
}

export interface DeidResult {
  text: string;
  spans: PhiSpan[];
}

/** An SFT chat example as the engine consumes it (JSONL line of the chat format). */
export interface ChatExample {
  messages: { role: 'system' | 'user' | 'assistant'; content: string }[];
}

/** A multiple-choice evaluation item: case text, K candidate diagnoses, index of the right one. */
export interface ChoiceItem {
  prompt: ChatExample['messages'];
  options: string[];
  answer: number;
  label: string;
  /** Subgroups of the case for subgroup figures, where the record has the field: sex, age_band. Never in the prompt. */
  subgroups?: Record<string, string>;
}
