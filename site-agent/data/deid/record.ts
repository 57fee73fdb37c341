// Structured records: fields whose NAME says what they hold are handled as a whole (a name
// field becomes a pseudonym, an ISO date field is shifted, an identifier field is removed);
// every other string is de-identified as free text, with the record's names as known names.

import type { PhiType } from '../types.ts';
import { deidentify, type DeidOptionsExt } from './index.ts';
import { shiftDate } from './dates.ts';
import { pseudonymFor } from './pseudonym.ts';
import { emptyCounts, countSpans, type PhiCounts } from './report.ts';

/** Field names → what the whole value is. Matched on the key with separators removed, lowercased. */
const NAME_KEYS = /^(name|patientname|fullname|firstname|lastname|givenname|familyname|surname|contactname|guardianname|doctor|doctorname|physician|attending|nurse|姓名|患者姓名|病人姓名|联系人|医生|医师)$/;
const REMOVE_KEYS: [RegExp, PhiType][] = [
  [/^(id|patientid|idcard|idnumber|idno|nationalid|ssn|socialsecuritynumber|身份证|身份证号|身份证号码)$/, 'ID'],
  [/^(passport|passportno|passportnumber|护照|护照号)$/, 'PASSPORT'],
  [/^(phone|mobile|tel|telephone|cell|fax|contactphone|phonenumber|电话|手机|联系电话)$/, 'PHONE'],
  [/^(email|mail|emailaddress|邮箱|电子邮箱)$/, 'EMAIL'],
  [/^(mrn|medicalrecordnumber|recordno|admissionno|admissionnumber|encounterid|visitid|bed|bedno|病历号|住院号|门诊号|床号)$/, 'MRN'],
  [/^(address|addr|street|homeaddress|住址|地址|家庭住址)$/, 'ADDRESS'],
  [/^(zip|zipcode|postalcode|postcode|邮编)$/, 'ZIP'],
  [/^(insuranceid|insuranceno|memberid|policyno|policynumber|医保卡号|社保卡号|医保号)$/, 'INSURANCE'],
  [/^(bankcard|cardno|cardnumber|accountno|银行卡号)$/, 'BANK_CARD'],
  [/^(ip|ipaddress)$/, 'IP'],
  [/^(url|website|homepage)$/, 'URL'],
];
const DATE_KEY = /(date|dob|birth|time|日期|时间)$|^(admitted|discharged)(at)?$/;
const AGE_KEY = /^(age|年龄)$/;

const norm = (k: string) => k.replace(/[\s_\-.]/g, '').toLowerCase();

export interface DeidRecordResult<T> {
  record: T;
  counts: PhiCounts;
  /** Keys of removed identifier fields (dotted paths). */
  removed: string[];
}

function isNameKey(k: string): boolean {
  return NAME_KEYS.test(norm(k));
}

/** Values of name fields anywhere in a JSON value (used as known names for the free text). */
export function collectNames(v: unknown, out: string[] = [], depth = 0): string[] {
  if (depth > 32 || v === null || typeof v !== 'object') return out;
  for (const [k, x] of Object.entries(v as Record<string, unknown>)) {
    if (typeof x === 'string' && isNameKey(k) && x.trim()) out.push(x.trim());
    else if (typeof x === 'object') collectNames(x, out, depth + 1);
  }
  return out;
}

/** De-identify any JSON value recursively (strings in arrays and objects), structured keys first. */
export function deidentifyValue(value: unknown, opts: DeidOptionsExt, counts: PhiCounts = emptyCounts(), removed: string[] = [], path = ''): unknown {
  if (typeof value === 'string') {
    const r = deidentify(value, opts);
    countSpans(r.spans, counts);
    return r.text;
  }
  if (Array.isArray(value)) return value.map((x, i) => deidentifyValue(x, opts, counts, removed, `${path}[${i}]`));
  if (value === null || typeof value !== 'object') return value;
  const out: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(value as Record<string, unknown>)) {
    const p = path ? `${path}.${k}` : k;
    const nk = norm(k);
    const rm = REMOVE_KEYS.find(([re]) => re.test(nk));
    if (rm && x !== undefined && x !== null && typeof x !== 'object') {
      counts[rm[1]]++;
      removed.push(p);
      continue;
    }
    if (typeof x === 'string' && isNameKey(k) && x.trim()) {
      out[k] = opts.mode === 'pseudonym' ? pseudonymFor(x.trim(), opts.key, opts.patientKey ?? '') : '[NAME]';
      counts.NAME++;
      continue;
    }
    if (typeof x === 'string' && DATE_KEY.test(nk) && /^\d{4}-\d{2}-\d{2}$/.test(x)) {
      try {
        out[k] = opts.dates === 'placeholder' ? '[DATE]' : shiftDate(x, opts.key, opts.patientKey ?? '');
        counts.DATE++;
        continue;
      } catch {
        // not a real calendar date: falls through to the free-text rules
      }
    }
    if (AGE_KEY.test(nk) && (typeof x === 'number' || (typeof x === 'string' && /^\s*\d+\s*$/.test(x)))) {
      const n = Number(x);
      if (n > 89) {
        out[k] = typeof x === 'number' ? 90 : '90+';
        counts.AGE++;
      } else out[k] = x;
      continue;
    }
    out[k] = deidentifyValue(x, opts, counts, removed, p);
  }
  return out;
}

/** De-identify a flat record of strings; names found in its name fields are also searched
 *  for in every free-text field. Identifier fields are dropped from the result. */
export function deidentifyRecord<T extends Record<string, unknown>>(record: T, opts: DeidOptionsExt): DeidRecordResult<Partial<T>> {
  const names = collectNames(record, [...(opts.knownNames ?? [])]);
  const counts = emptyCounts();
  const removed: string[] = [];
  const cleaned = deidentifyValue(record, { ...opts, knownNames: names }, counts, removed) as Partial<T>;
  return { record: cleaned, counts, removed };
}
