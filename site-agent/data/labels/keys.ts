// When two labels say the same thing: the same ICD-10 code when the label has one, else the same
// text after NFKC, case folding and removing spaces and punctuation. Agreement between doctors,
// with the model's suggestion and between a label and the export all compare these keys.

/** A diagnosis as compared: "Atrial  fibrillation." and "atrial fibrillation" are one text. */
export function diagnosisText(s: string): string {
  return s.normalize('NFKC').toLowerCase().replace(/[\s\p{P}]+/gu, '');
}

/** ICD-10 codes as stored: upper case, no spaces ("i21.9 " → "I21.9"). */
export function normalizeCode(code: string): string {
  return code.normalize('NFKC').toUpperCase().replace(/\s+/g, '');
}

/** The key two agreeing labels share. */
export function dxKey(diagnosis: string, icd10: string | null | undefined): string {
  return icd10 ? `icd10:${normalizeCode(icd10)}` : `text:${diagnosisText(diagnosis)}`;
}
