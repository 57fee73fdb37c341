// Exact dates: detection and the per-patient secret shift that keeps the written format, so
// that intervals between a patient's dates survive and the text still reads naturally.
// Years on their own ("2019年", "since 2015") are kept (HIPAA Safe Harbor allows the year).

import { createHmac } from 'node:crypto';
import { isValidYmd } from './validators.ts';
import { fail } from '../../../shared/errors.ts';

/** Per-patient day offset in [-365, 365] \ {0}: HMAC(key, patientKey). The one derivation of
 *  the shift: free-text dates (deidentify) and structured dates (ingest, via deid-bridge.ts)
 *  both use it, so a patient's dates move together. */
export function dateShiftDays(key: Buffer | string, patientKey: string): number {
  const h = createHmac('sha256', key).update('fedlora/dateshift\0' + patientKey).digest();
  const d = (h.readUInt32BE(0) % 730) - 365;
  return d >= 0 ? d + 1 : d;
}

function addDays(y: number, m: number, d: number, days: number): [number, number, number] {
  const t = new Date(Date.UTC(y, m - 1, d) + days * 86_400_000);
  // Date.UTC maps years 0..99 to 1900..1999; callers pass 4-digit years only.
  return [t.getUTCFullYear(), t.getUTCMonth() + 1, t.getUTCDate()];
}

/** Shift an ISO date (yyyy-mm-dd) by the patient's offset. */
export function shiftDate(isoDate: string, key: Buffer | string, patientKey: string): string {
  const m = /^(\d{4})-(\d{2})-(\d{2})$/.exec(isoDate);
  if (!m || !isValidYmd(+m[1], +m[2], +m[3])) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `shiftDate: "${isoDate}" is not an ISO date (yyyy-mm-dd)`);
  const [y, mo, d] = addDays(+m[1], +m[2], +m[3], dateShiftDays(key, patientKey));
  return `${y}-${pad(mo, 2)}-${pad(d, 2)}`;
}

const pad = (n: number, w: number) => String(n).padStart(w, '0');
/** Zero-padding style of a written month/day pair: a leading zero anywhere means padded, a
 *  single digit anywhere means unpadded; two-digit pairs (12/15) follow the form's convention. */
const padded = (a: string, b: string, dflt: boolean) => (a[0] === '0' || b[0] === '0' ? true : a.length === 1 || b.length === 1 ? false : dflt);
const num = (n: number, p: boolean) => (p ? pad(n, 2) : String(n));

const MONTHS = ['january', 'february', 'march', 'april', 'may', 'june', 'july', 'august', 'september', 'october', 'november', 'december'];
const MON_RE = '(?:Jan(?:uary)?|Feb(?:ruary)?|Mar(?:ch)?|Apr(?:il)?|May|June?|July?|Aug(?:ust)?|Sep(?:t(?:ember)?)?|Oct(?:ober)?|Nov(?:ember)?|Dec(?:ember)?)';
function monthIndex(word: string): number {
  const w = word.toLowerCase().replace(/\.$/, '');
  return MONTHS.findIndex((m) => m.startsWith(w.slice(0, 3))) + 1;
}
function monthWord(m: number, like: string): string {
  const full = MONTHS[m - 1];
  const abbrev = like.replace(/\.$/, '').length <= 4 && like.toLowerCase().replace(/\.$/, '') !== full;
  let w = abbrev ? (full === 'september' && /^sept/i.test(like) ? 'sept' : full.slice(0, 3)) : full;
  w = like[0] === like[0].toUpperCase() ? w[0].toUpperCase() + w.slice(1) : w;
  if (like === like.toUpperCase() && like.length > 1) w = w.toUpperCase();
  return w + (like.endsWith('.') && abbrev ? '.' : '');
}
const ordinal = (d: number) => (d % 10 === 1 && d !== 11 ? 'st' : d % 10 === 2 && d !== 12 ? 'nd' : d % 10 === 3 && d !== 13 ? 'rd' : 'th');

/** Year used to shift a month-day without a year: a leap year, so 2月29日 stays valid. */
const NO_YEAR = 2000;

interface DateForm {
  re: string;
  /** Parse groups → y (null when absent), m, d (null when absent: month precision). */
  parse(g: string[]): { y: number | null; m: number; d: number | null } | null;
  format(g: string[], y: number, m: number, d: number): string;
}

// Each form is one alternative of a single compiled regex (one pass over the text).
const FORMS: DateForm[] = [
  { // 2023-05-01, 2023/5/1, 2023.05.01 (optionally followed by a time, which is kept)
    re: '(?<![\\d.])((?:19|20)\\d{2})(?<sepIso>[-/.])(\\d{1,2})\\k<sepIso>(\\d{1,2})(?![\\d])',
    parse: (g) => ({ y: +g[0], m: +g[2], d: +g[3] }),
    format: (g, y, m, d) => {
      const p = padded(g[2], g[3], true);
      return `${y}${g[1]}${num(m, p)}${g[1]}${num(d, p)}`;
    },
  },
  { // 2023年5月1日 / 2023年05月01号
    re: '((?:19|20)\\d{2})\\s*年\\s*(\\d{1,2})\\s*月\\s*(\\d{1,2})\\s*([日号])',
    parse: (g) => ({ y: +g[0], m: +g[1], d: +g[2] }),
    format: (g, y, m, d) => {
      const p = padded(g[1], g[2], false);
      return `${y}年${num(m, p)}月${num(d, p)}${g[3]}`;
    },
  },
  { // 2023年5月 (month precision)
    re: '((?:19|20)\\d{2})\\s*年\\s*(\\d{1,2})\\s*月(?![\\d份]*\\s*\\d)',
    parse: (g) => ({ y: +g[0], m: +g[1], d: null }),
    format: (g, y, m) => `${y}年${num(m, g[1][0] === '0')}月`,
  },
  { // 5月1日 (no year)
    re: '(?<![\\d年])(\\d{1,2})\\s*月\\s*(\\d{1,2})\\s*([日号])',
    parse: (g) => ({ y: null, m: +g[0], d: +g[1] }),
    format: (g, _y, m, d) => {
      const p = padded(g[0], g[1], false);
      return `${num(m, p)}月${num(d, p)}${g[2]}`;
    },
  },
  { // 05/01/2023, 5-1-2023 (US month first), 05/01/23
    re: '(?<![\\d./-])(\\d{1,2})(?<sepUs>[/-])(\\d{1,2})\\k<sepUs>((?:19|20)\\d{2}|\\d{2})(?![\\d/-])',
    parse: (g) => ({ y: g[3].length === 2 ? (+g[3] > 40 ? 1900 : 2000) + +g[3] : +g[3], m: +g[0], d: +g[2] }),
    format: (g, y, m, d) => {
      const p = padded(g[0], g[2], true);
      return `${num(m, p)}${g[1]}${num(d, p)}${g[1]}${g[3].length === 2 ? pad(y % 100, 2) : y}`;
    },
  },
  { // May 1, 2023 / May 1st 2023 / Jan. 5, 2023
    re: `\\b(${MON_RE}\\.?)\\s+(\\d{1,2})(st|nd|rd|th)?(,?\\s+)((?:19|20)\\d{2})\\b`,
    parse: (g) => ({ y: +g[4], m: monthIndex(g[0]), d: +g[1] }),
    format: (g, y, m, d) => `${monthWord(m, g[0])} ${d}${g[2] ? ordinal(d) : ''}${g[3]}${y}`,
  },
  { // 1 May 2023 / 1st of May, 2023
    re: `\\b(\\d{1,2})(st|nd|rd|th)?(\\s+(?:of\\s+)?)(${MON_RE}\\.?)(,?\\s+)((?:19|20)\\d{2})\\b`,
    parse: (g) => ({ y: +g[5], m: monthIndex(g[3]), d: +g[0] }),
    format: (g, y, m, d) => `${d}${g[1] ? ordinal(d) : ''}${g[2]}${monthWord(m, g[3])}${g[4]}${y}`,
  },
  { // May 2023 (month precision)
    re: `\\b(${MON_RE}\\.?)(,?\\s+)((?:19|20)\\d{2})\\b`,
    parse: (g) => ({ y: +g[2], m: monthIndex(g[0]), d: null }),
    format: (g, y, m) => `${monthWord(m, g[0])}${g[1]}${y}`,
  },
  { // on May 1 / May 1st (no year; needs a day that is not followed by more digits)
    re: `\\b(${MON_RE}\\.?)\\s+(\\d{1,2})(st|nd|rd|th)?\\b(?![,:]?\\s*\\d)`,
    parse: (g) => ({ y: null, m: monthIndex(g[0]), d: +g[1] }),
    format: (g, _y, m, d) => `${monthWord(m, g[0])} ${d}${g[2] ? ordinal(d) : ''}`,
  },
  { // on 06/12, since 3/4 (US month/day without a year: only after a preposition, so that
    // ratios and blood pressures such as 1/2 or 120/80 are never read as dates)
    re: '(?<=\\b(?:[Oo]n|[Ss]ince|[Uu]ntil|[Ff]rom|[Dd]ated|[Bb]efore|[Aa]fter|DOS:?)\\s)(\\d{1,2})/(\\d{1,2})(?![\\d/]|\\.\\d)',
    parse: (g) => ({ y: null, m: +g[0], d: +g[1] }),
    format: (g, _y, m, d) => {
      const p = padded(g[0], g[1], false);
      return `${num(m, p)}/${num(d, p)}`;
    },
  },
  { // 20230501 (compact; only years 19xx/20xx with a valid month and day)
    re: '(?<![\\d.])((?:19|20)\\d{2})(0[1-9]|1[0-2])(0[1-9]|[12]\\d|3[01])(?!\\d|\\.\\d)',
    parse: (g) => ({ y: +g[0], m: +g[1], d: +g[2] }),
    format: (_g, y, m, d) => `${y}${pad(m, 2)}${pad(d, 2)}`,
  },
];

// Group counts per alternative, to slice the capture groups of the combined regex.
const GROUP_COUNTS = FORMS.map((f) => new RegExp(f.re + '|').exec('')!.length - 1);
const DATE_RE = new RegExp(FORMS.map((f) => `(${f.re})`).join('|'), 'gu');

export interface DateMatch {
  start: number;
  end: number;
  text: string;
  /** The same date moved by `days`, written in the original format. */
  shifted(days: number): string;
}

/** All valid dates in text (one regex pass). Invalid calendar dates (2023-02-30) are skipped. */
export function findDates(text: string): DateMatch[] {
  const out: DateMatch[] = [];
  DATE_RE.lastIndex = 0;
  for (let m = DATE_RE.exec(text); m; m = DATE_RE.exec(text)) {
    let base = 1;
    for (let i = 0; i < FORMS.length; i++) {
      if (m[base] !== undefined) {
        const g = m.slice(base + 1, base + 1 + GROUP_COUNTS[i]).map((x) => x ?? '');
        const form = FORMS[i];
        const p = form.parse(g);
        if (p && p.m >= 1 && isValidYmd(p.y ?? NO_YEAR, p.m, p.d ?? 1)) {
          const text0 = m[0];
          out.push({
            start: m.index,
            end: m.index + text0.length,
            text: text0,
            shifted: (days) => {
              if (p.d === null) {
                // Month precision: move by whole months (never 0, so the real month is not kept).
                const months = Math.round(days / 30.4375) || Math.sign(days);
                const k = (p.y ?? NO_YEAR) * 12 + (p.m - 1) + months;
                return form.format(g, Math.floor(k / 12), (k % 12) + 1, 1);
              }
              const [y, mo, d] = addDays(p.y ?? NO_YEAR, p.m, p.d, days);
              return form.format(g, y, mo, d);
            },
          });
        }
        break;
      }
      base += GROUP_COUNTS[i] + 1;
    }
  }
  return out;
}
