// Checksums and calendar checks that decide whether a digit string really is an identifier
// (so that lab values and accession-like numbers that fail them are left alone).

const ID_WEIGHTS = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
const ID_CHECK = '10X98765432';

/** ISO 7064 MOD 11-2 check character of the first 17 digits of a Chinese resident ID. */
export function chineseIdCheckChar(first17: string): string {
  if (!/^\d{17}$/.test(first17)) throw new RangeError(`expected 17 digits, got "${first17}"`);
  let s = 0;
  for (let i = 0; i < 17; i++) s += (first17.charCodeAt(i) - 48) * ID_WEIGHTS[i];
  return ID_CHECK[s % 11];
}

/** Real calendar date (proleptic Gregorian). */
export function isValidYmd(y: number, m: number, d: number): boolean {
  if (!Number.isInteger(y) || !Number.isInteger(m) || !Number.isInteger(d)) return false;
  if (m < 1 || m > 12 || d < 1) return false;
  const dim = [31, (y % 4 === 0 && y % 100 !== 0) || y % 400 === 0 ? 29 : 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31];
  return d <= dim[m - 1];
}

// First digit of the 6-digit administrative division code: 1-6 mainland regions, 7 Taiwan,
// 8 Hong Kong/Macau. 0 and 9 never start a resident ID.
const AREA_OK = /^[1-8]\d{5}/;

/** 18-character resident ID: area code, valid birth date (1900..this year), check character. */
export function isValidChineseId18(id: string, now = new Date()): boolean {
  if (!/^\d{17}[\dXx]$/.test(id) || !AREA_OK.test(id)) return false;
  const y = +id.slice(6, 10), m = +id.slice(10, 12), d = +id.slice(12, 14);
  if (y < 1900 || y > now.getUTCFullYear() || !isValidYmd(y, m, d)) return false;
  return chineseIdCheckChar(id.slice(0, 17)) === id[17].toUpperCase();
}

/** 15-digit first-generation ID (issued before 1999): area code + yymmdd (19yy) + 3 digits, no check. */
export function isValidChineseId15(id: string): boolean {
  if (!/^\d{15}$/.test(id) || !AREA_OK.test(id)) return false;
  return isValidYmd(1900 + +id.slice(6, 8), +id.slice(8, 10), +id.slice(10, 12));
}

/** Luhn (mod 10) check over the digits of s (separators ignored). */
export function luhnValid(s: string): boolean {
  const digits = s.replace(/[\s-]/g, '');
  if (!/^\d+$/.test(digits)) return false;
  let sum = 0;
  for (let i = 0; i < digits.length; i++) {
    let v = digits.charCodeAt(digits.length - 1 - i) - 48;
    if (i % 2 === 1) {
      v *= 2;
      if (v > 9) v -= 9;
    }
    sum += v;
  }
  return sum % 10 === 0;
}

/** Digit that makes `partial + digit` pass Luhn (used by the labelled-set generator). */
export function luhnCheckDigit(partial: string): string {
  for (let d = 0; d <= 9; d++) if (luhnValid(partial + d)) return String(d);
  throw new Error('unreachable');
}

/** Validated IPv6 text (full or :: compressed, optional embedded IPv4 tail not supported). */
export function isValidIpv6(s: string): boolean {
  if (!/^[0-9A-Fa-f:]+$/.test(s)) return false;
  const dbl = s.split('::');
  if (dbl.length > 2) return false;
  const parts = (p: string) => (p === '' ? [] : p.split(':'));
  const groups = dbl.flatMap(parts);
  if (groups.some((g) => g.length < 1 || g.length > 4)) return false;
  return dbl.length === 2 ? groups.length <= 7 && groups.length >= 1 : groups.length === 8;
}
