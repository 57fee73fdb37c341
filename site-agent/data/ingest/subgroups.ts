// The two fields subgroup figures are cut by, reduced at ingest to what evaluation needs: sex as
// F or M, and the age at the visit as a band (the exact age, an identifier above 89, is never
// stored; the top band starts at 80). Values that read as neither are left out, not quarantined:
// they only remove the record from its subgroup.

const FEMALE = /^(f|female|woman|w|女|女性)$/i;
const MALE = /^(m|male|man|男|男性)$/i;

export function normalizeSex(v: string | undefined): 'F' | 'M' | undefined {
  const t = v?.trim();
  if (!t) return undefined;
  return FEMALE.test(t) ? 'F' : MALE.test(t) ? 'M' : undefined;
}

/** "65", "65岁", "65 years", "65y" -> "60-79"; anything else -> undefined. */
export function ageBand(v: string | number | undefined): string | undefined {
  const m = typeof v === 'number' ? [String(v), String(v)] : /^\s*(\d{1,3})(?:\.\d+)?\s*(?:岁|周岁|y|yr|yrs|years?|years? old)?\s*$/i.exec(v ?? '');
  if (!m) return undefined;
  const age = Number(m[1]);
  if (!Number.isFinite(age) || age < 0 || age > 130) return undefined;
  return age < 18 ? '0-17' : age < 40 ? '18-39' : age < 60 ? '40-59' : age < 80 ? '60-79' : '80+';
}

/** Completed years between a birth date and a visit date (yyyy-mm-dd...), or undefined. */
export function ageAt(birth: string | undefined, visit: string | undefined): number | undefined {
  const b = /^(\d{4})-(\d{2})-(\d{2})/.exec(birth ?? ''), d = /^(\d{4})-(\d{2})-(\d{2})/.exec(visit ?? '');
  if (!b || !d) return undefined;
  const years = Number(d[1]) - Number(b[1]) - (d[2] + d[3] < b[2] + b[3] ? 1 : 0);
  return years >= 0 ? years : undefined;
}
