// Finds PHI spans in a text: every detector is one compiled regex run once over the text;
// candidates are validated (checksums, calendars, word lists) and then arbitrated so that no
// two spans overlap (higher priority first, then longer). Cost is linear in the text length
// times the (fixed) number of detectors.

import type { PhiSpan, PhiType } from '../types.ts';
import { findDates, type DateMatch } from './dates.ts';
import { isValidChineseId15, isValidChineseId18, isValidIpv6, luhnValid } from './validators.ts';
import { CLINICAL_WORDS, EN_NAME_STOPWORDS } from './lexicon.ts';
import * as P from './patterns.ts';

export interface Candidate extends PhiSpan {
  priority: number;
  /** For DATE: the date, to be shifted on replacement. */
  date?: DateMatch;
}

const PRIORITY: Record<string, number> = {
  EMAIL: 100, URL: 95, ID: 90, CTX: 85, PASSPORT: 80, PHONE: 70, BANK_CARD: 65, IP: 60, ADDRESS: 55, DATE: 52,
  ZIP: 45, NAME_KNOWN: 44, NAME: 40, AGE: 30,
};

const CLINICAL_PREFIXES = new Set(CLINICAL_WORDS);
function startsWithClinicalWord(s: string): boolean {
  for (let n = 2; n <= Math.min(4, s.length); n++) if (CLINICAL_PREFIXES.has(s.slice(0, n))) return true;
  return false;
}

/** Trim English name tokens that are capitalised ordinary words ("John Smith Presented"). */
function trimEnglishName(s: string): string | null {
  const toks = s.split(/\s+/);
  const stop = (t: string) => !/^[A-Z]\.$/.test(t) && EN_NAME_STOPWORDS.has(t.replace(/\.$/, '')); // initials are never stop words
  if (stop(toks[0])) return null;
  let k = 1;
  while (k < toks.length && !stop(toks[k])) k++;
  return toks.slice(0, k).join(' ').replace(/\s+[A-Z]\.$/, '');
}

type Sink = (type: PhiType, start: number, end: number, priority: number) => void;

/** Run a global regex once over text, calling fn for every non-empty match. */
function scan(re: RegExp, text: string, fn: (m: RegExpExecArray) => void): void {
  re.lastIndex = 0;
  for (let m = re.exec(text); m; m = re.exec(text)) {
    if (m[0].length === 0) {
      re.lastIndex++;
      continue;
    }
    fn(m);
  }
}
/** Start offset of the last non-empty capture group (context-keyed patterns put the value last). */
function valueAt(m: RegExpExecArray): [number, string] | null {
  for (let i = m.length - 1; i >= 1; i--) {
    const v = m[i];
    if (v) {
      // The value group is the last thing matched, or is followed only by a lookahead.
      const off = m[0].lastIndexOf(v);
      return [m.index + off, v];
    }
  }
  return null;
}

function findCandidates(text: string, knownNames: string[] = []): Candidate[] {
  const out: Candidate[] = [];
  const add: Sink = (type, start, end, priority) => {
    if (end > start) out.push({ type, start, end, text: text.slice(start, end), priority });
  };
  const whole = (re: RegExp, type: PhiType, prio: number, ok: (s: string) => boolean = () => true) =>
    scan(re, text, (m) => ok(m[0]) && add(type, m.index, m.index + m[0].length, prio));
  const group = (re: RegExp, type: PhiType, prio: number, ok: (s: string) => boolean = () => true) =>
    scan(re, text, (m) => {
      const v = valueAt(m);
      if (v && ok(v[1])) add(type, v[0], v[0] + v[1].length, prio);
    });

  whole(P.EMAIL, 'EMAIL', PRIORITY.EMAIL);
  scan(P.URL_RE, text, (m) => {
    const s = m[0].replace(/[.,;:!?)\]}'"]+$/, '');
    add('URL', m.index, m.index + s.length, PRIORITY.URL);
  });

  whole(P.ID18, 'ID', PRIORITY.ID, (s) => isValidChineseId18(s));
  scan(P.DIGITS_13_19, text, (m) => {
    const s = m[0];
    if (s.length === 15 && isValidChineseId15(s)) add('ID', m.index, m.index + 15, PRIORITY.ID);
    else if (luhnValid(s) && !(s.length === 18 && isValidChineseId18(s))) add('BANK_CARD', m.index, m.index + s.length, PRIORITY.BANK_CARD);
  });
  whole(P.CARD_GROUPED, 'BANK_CARD', PRIORITY.BANK_CARD, luhnValid);
  whole(P.SSN, 'ID', PRIORITY.ID, (s) => !s.startsWith('000') && !s.startsWith('666') && s[0] !== '9');

  group(P.ID_CTX, 'ID', PRIORITY.CTX);
  group(P.PASSPORT_CTX, 'PASSPORT', PRIORITY.CTX);
  group(P.MRN_CTX, 'MRN', PRIORITY.CTX);
  group(P.INSURANCE_CTX, 'INSURANCE', PRIORITY.CTX);
  group(P.BANK_CTX, 'BANK_CARD', PRIORITY.CTX, (s) => s.replace(/\D/g, '').length >= 8);
  group(P.PHONE_CTX, 'PHONE', PRIORITY.CTX, (s) => s.replace(/\D/g, '').length >= 7);
  group(P.BED_ZH, 'MRN', PRIORITY.CTX);
  whole(P.PASSPORT_CN, 'PASSPORT', PRIORITY.PASSPORT);

  scan(P.PHONE, text, (m) => {
    const s = m[0].replace(/\s+$/, '');
    if (s.replace(/\D/g, '').length >= 7) add('PHONE', m.index, m.index + s.length, PRIORITY.PHONE);
  });

  whole(P.IPV4, 'IP', PRIORITY.IP);
  whole(P.IPV6, 'IP', PRIORITY.IP, (s) => isValidIpv6(s) && (s.includes('::') || s.split(':').length === 8) && /[0-9a-f]/i.test(s));

  for (const d of findDates(text)) out.push({ type: 'DATE', start: d.start, end: d.end, text: d.text, priority: PRIORITY.DATE, date: d });

  whole(P.ADDRESS_ZH, 'ADDRESS', PRIORITY.ADDRESS, (s) => !/^(?:北京|天津|上海|重庆)市?$/.test(s) && s.length >= 3);
  group(P.ADDRESS_ZH_CTX, 'ADDRESS', PRIORITY.ADDRESS);
  scan(P.ADDRESS_EN, text, (m) => add('ADDRESS', m.index, m.index + m[0].length, PRIORITY.ADDRESS));
  group(P.ZIP, 'ZIP', PRIORITY.ZIP);

  // Names
  const known = P.knownNamesRegex(knownNames);
  if (known) whole(known, 'NAME', PRIORITY.NAME_KNOWN);
  group(P.ZH_NAME_TITLE, 'NAME', PRIORITY.NAME, (s) => !startsWithClinicalWord(s));
  group(P.ZH_NAME_CTX, 'NAME', PRIORITY.NAME, (s) => !startsWithClinicalWord(s));
  group(P.ZH_NAME_LABEL, 'NAME', PRIORITY.NAME, (s) => !startsWithClinicalWord(s));
  group(P.ZH_NAME_BARE, 'NAME', PRIORITY.NAME, (s) => !startsWithClinicalWord(s));
  for (const re of [P.EN_NAME_TITLE, P.EN_NAME_CRED, P.EN_NAME_CTX, P.EN_NAME_BARE]) {
    scan(re, text, (m) => {
      const v = valueAt(m);
      if (!v) return;
      const name = trimEnglishName(v[1]);
      // A bare "Firstname Lastname" needs both parts to survive the stop-word trim.
      if (name && (re !== P.EN_NAME_BARE || /\s/.test(name))) add('NAME', v[0], v[0] + name.length, PRIORITY.NAME);
    });
  }

  scan(P.AGE, text, (m) => {
    const v = valueAt(m);
    if (v && +v[1] > 89 && +v[1] < 150) add('AGE', v[0], v[0] + v[1].length, PRIORITY.AGE);
  });
  return out;
}

/** Keep a set of non-overlapping candidates: higher priority first, then longer, then earlier. */
function arbitrate(cands: Candidate[], length: number): Candidate[] {
  const order = [...cands].sort((a, b) => b.priority - a.priority || b.end - b.start - (a.end - a.start) || a.start - b.start);
  const taken = new Uint8Array(length);
  const kept: Candidate[] = [];
  outer: for (const c of order) {
    for (let i = c.start; i < c.end; i++) if (taken[i]) continue outer;
    taken.fill(1, c.start, c.end);
    kept.push(c);
  }
  return kept.sort((a, b) => a.start - b.start);
}

/** Full-width digits, Latin letters and - . / @ + (common in Chinese records) read as ASCII.
 *  One UTF-16 unit maps to one, so offsets into the normalised text are offsets into the input. */
function foldFullWidth(text: string): string {
  return /[\uff0b\uff0d-\uff0f\uff10-\uff19\uff20-\uff3a\uff41-\uff5a]/.test(text)
    ? text.replace(/[\uff0b\uff0d-\uff0f\uff10-\uff19\uff20-\uff3a\uff41-\uff5a]/g, (c) => String.fromCharCode(c.charCodeAt(0) - 0xfee0))
    : text;
}

export function detectPhi(text: string, knownNames: string[] = []): Candidate[] {
  const folded = foldFullWidth(text);
  const found = arbitrate(findCandidates(folded, knownNames.map(foldFullWidth)), text.length);
  if (folded !== text) for (const c of found) c.text = text.slice(c.start, c.end);
  return found;
}
