// Synthetic hospitals for demos and tests: realistic case records whose diagnosis follows from
// symptoms, labs and history; non-IID across sites (site i mostly department i, by --skew);
// identifiers planted in the free text (names, ID numbers, phones, addresses, dates, MRNs) so
// the de-identifier has something to find. Deterministic for a seed.

import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { PhiType } from '../types.ts';
import {
  DEPARTMENTS, DIAGNOSES, LABS, ROUTINE_LABS, SURNAMES_ZH, GIVEN_ZH, FIRST_EN, LAST_EN, CITIES_ZH, STREETS_EN, CITIES_EN,
  type Diagnosis, type Lang,
} from './catalog.ts';
import { recordToBundle } from './fhir-out.ts';
import { mulberry32 } from '../../../shared/prng.ts';
import { fail } from '../../../shared/errors.ts';
import { plantCanaries, type CanaryPlan, type PlantedCanary } from './canaries.ts';

export interface SynthOptions {
  sites: number;
  /** Records per site: one count for all, or one per site (unequal hospitals, e.g. a small one). */
  records: number | number[];
  lang?: 'zh' | 'en' | 'mixed';
  /** 0 = every site has the same department mix; 1 = site i only sees department i (mod 5). */
  skew?: number;
  seed?: number;
  format?: 'csv' | 'jsonl' | 'fhir';
  /** When given, writes <out>/site-<k>/records.<ext>, phi.jsonl, manifest.json and <out>/manifest.json. */
  out?: string;
  /** Canaries for the privacy audit, planted in one site's records before they are written. */
  canaries?: CanaryPlan;
}

/** One generated case; keys are the default data.mapping column names. */
export interface SynthRecord {
  patient_id: string;
  patient_name: string;
  department: string;
  chief_complaint: string;
  history: string;
  exam: string;
  labs: string;
  diagnosis: string;
  icd10: string;
  treatment: string;
  admission_date: string;
  discharge_date: string;
  lang: Lang;
  /** F | M, and age in years at admission (subgroup figures use them). */
  sex: 'F' | 'M';
  age: string;
}

export interface PlantedPhi {
  record: number;
  type: PhiType;
  text: string;
}

export interface SynthSite {
  index: number;
  name: string;
  records: SynthRecord[];
  /** Diagnosis catalogue key per record (e.g. 'ami'), language independent. */
  diagnosisKeys: string[];
  planted: PlantedPhi[];
  /** Canaries planted in this site's records (SynthOptions.canaries). */
  canaries?: PlantedCanary[];
  file?: string;
}

const SYNTH_COLUMNS: (keyof SynthRecord)[] = [
  'patient_id', 'patient_name', 'department', 'chief_complaint', 'history', 'exam', 'labs', 'diagnosis', 'icd10', 'treatment',
  'admission_date', 'discharge_date', 'lang', 'sex', 'age',
];

/** mulberry32: small, fast, deterministic. */
const rng = mulberry32;

export interface Patient {
  mrn: string;
  name: string;
  nationalId: string;
  phone: string;
  address: string;
  birth: Date;
  sex: 'M' | 'F';
  lang: Lang;
}

const pad = (n: number, w: number): string => String(n).padStart(w, '0');
const iso = (d: Date): string => d.toISOString().slice(0, 10);

/** 18-digit Chinese resident ID with a valid ISO 7064 check digit. */
export function chineseId(region: string, birth: Date, seq: number): string {
  const body = `${region}${birth.getUTCFullYear()}${pad(birth.getUTCMonth() + 1, 2)}${pad(birth.getUTCDate(), 2)}${pad(seq, 3)}`;
  const w = [7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2];
  const sum = [...body].reduce((s, c, i) => s + Number(c) * w[i], 0);
  return body + '10X98765432'[sum % 11];
}

export function generateSites(opts: SynthOptions): SynthSite[] {
  const seed = opts.seed ?? 42;
  const skew = Math.min(1, Math.max(0, opts.skew ?? 0.6));
  const langOpt = opts.lang ?? 'mixed';
  const sites: SynthSite[] = [];
  for (let s = 0; s < opts.sites; s++) {
    const r = rng(seed * 1000 + s * 7919 + 1);
    const pick = <T>(a: T[]): T => a[Math.floor(r() * a.length)];
    const int = (lo: number, hi: number): number => lo + Math.floor(r() * (hi - lo + 1));
    const siteLang = (): Lang => (langOpt === 'mixed' ? (r() < 0.5 ? 'zh' : 'en') : langOpt);
    const patients: Patient[] = [];
    const newPatient = (): Patient => {
      const lang = siteLang();
      const birth = new Date(Date.UTC(int(1940, 2000), int(0, 11), int(1, 28)));
      const sex = r() < 0.5 ? 'M' : 'F';
      if (lang === 'zh') {
        const c = pick(CITIES_ZH);
        return {
          mrn: `ZY${pad(s + 1, 2)}${pad(int(0, 999999), 6)}`, name: pick(SURNAMES_ZH) + pick(GIVEN_ZH), lang, birth, sex,
          nationalId: chineseId(pick(['110105', '310115', '440106', '510107', '330106']), birth, int(1, 999)),
          phone: `1${pick(['38', '39', '58', '86', '35'])}${pad(int(0, 99999999), 8)}`,
          address: `${c[0]}${c[1]}${c[2]}${int(1, 300)}号${int(1, 30)}栋${int(101, 2505)}室`,
        };
      }
      const c = pick(CITIES_EN);
      return {
        mrn: `${pad(s + 1, 2)}${pad(int(0, 9999999), 7)}`, name: `${pick(FIRST_EN)} ${pick(LAST_EN)}`, lang, birth, sex,
        nationalId: `${int(100, 665)}-${pad(int(1, 99), 2)}-${pad(int(1, 9999), 4)}`,
        phone: `(${int(201, 989)}) 555-${pad(int(100, 199), 4)}`,
        address: `${int(10, 9999)} ${pick(STREETS_EN)}, ${c[0]}, ${c[1]} ${c[2]}`,
      };
    };
    const site: SynthSite = { index: s, name: `site-${s + 1}`, records: [], diagnosisKeys: [], planted: [] };
    const count = Array.isArray(opts.records) ? opts.records[s] : opts.records;
    if (!Number.isInteger(count) || count < 0) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `synth: records for site ${s + 1} is ${count}; give a whole number per site`);
    for (let i = 0; i < count; i++) {
      // Revisits: about a quarter of cases are a known patient coming back.
      const p = patients.length > 0 && r() < 0.25 ? pick(patients) : (patients.push(newPatient()), patients[patients.length - 1]);
      const dept = r() < skew ? s % DEPARTMENTS.length : int(0, DEPARTMENTS.length - 1);
      const dx = pick(DIAGNOSES.filter((d) => d.dept === dept));
      const rec = makeCase(p, dx, r, pick, int, i, site.planted);
      site.records.push(rec);
      site.diagnosisKeys.push(dx.key);
    }
    sites.push(site);
  }
  if (opts.canaries) {
    const at = opts.canaries.site ?? 0;
    if (!Number.isInteger(at) || at < 0 || at >= sites.length) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `canaries: site index ${at} is not one of the ${sites.length} sites (0-based)`);
    sites[at].canaries = plantCanaries(sites[at].records, opts.canaries);
  }
  if (opts.out) writeSites(sites, opts.out, opts.format ?? 'csv', { ...opts, seed, skew, lang: langOpt });
  return sites;
}

function labLine(key: string, abnormal: boolean, lang: Lang, r: () => number): string {
  const l = LABS[key];
  const [lo, hi] = abnormal ? l.abnormal : l.normal;
  const v = (lo + r() * (hi - lo)).toFixed(l.decimals);
  const flag = abnormal ? (lang === 'zh' ? (l.flag === 'H' ? ' ↑' : ' ↓') : ` (${l.flag})`) : '';
  return `${l.name[lang]} ${v}${l.unit ? ' ' + l.unit : ''}${flag}`;
}

export function makeCase(
  p: Patient, dx: Diagnosis, r: () => number, pick: <T>(a: T[]) => T, int: (a: number, b: number) => number, index: number, planted: PlantedPhi[],
): SynthRecord {
  const lang = p.lang;
  const admit = new Date(Date.UTC(2021, 0, 1) + int(0, 3 * 365) * 86_400_000);
  const discharge = new Date(admit.getTime() + int(1, 14) * 86_400_000);
  const age = admit.getUTCFullYear() - p.birth.getUTCFullYear();
  const shuffled = [...dx.symptoms].sort(() => r() - 0.5);
  const sym = shuffled.slice(0, int(2, Math.min(3, shuffled.length)));
  const hist = dx.history.filter(() => r() < 0.7);
  const durN = int(1, 10);
  const plant = (type: PhiType, text: string): string => {
    planted.push({ record: index, type, text });
    return text;
  };
  const labKeys = [...dx.labs, ...ROUTINE_LABS.filter((k) => !dx.labs.includes(k))];
  let chief: string, history: string, exam: string, labs: string, treatment: string;
  if (lang === 'zh') {
    const dur = `${durN}${pick(['小时', '天', '周'])}`;
    chief = `${sym.map((x) => x.zh).join('、')}${dur}`;
    const dateText = `${admit.getUTCFullYear()}年${admit.getUTCMonth() + 1}月${admit.getUTCDate()}日`;
    history =
      `患者${plant('NAME', p.name)}，${p.sex === 'M' ? '男' : '女'}，${age}岁，身份证号${plant('ID', p.nationalId)}，` +
      `联系电话${plant('PHONE', p.phone)}，住址${plant('ADDRESS', p.address)}。` +
      `因“${chief}”于${plant('DATE', dateText)}入院，住院号${plant('MRN', p.mrn)}。` +
      (hist.length ? `既往${hist.map((h) => h.zh).join('，')}。` : '既往体健。') +
      (dx.key === 'ami' && r() < 0.5 ? '家属诉其父有心梗病史。' : '');
    exam = dx.exam.map((e) => e.zh).join('；') + '。';
    labs = labKeys.map((k) => labLine(k, dx.labs.includes(k), 'zh', r)).join('；');
    treatment = dx.treatment.zh;
  } else {
    const dur = `${durN} ${pick(['hours', 'days', 'weeks'])}`;
    chief = `${sym.map((x) => x.en).join(', ')} for ${dur}`;
    const dateText = `${pad(admit.getUTCMonth() + 1, 2)}/${pad(admit.getUTCDate(), 2)}/${admit.getUTCFullYear()}`;
    history =
      `${p.sex === 'M' ? 'Mr.' : 'Ms.'} ${plant('NAME', p.name)}, a ${age}-year-old ${p.sex === 'M' ? 'man' : 'woman'} ` +
      `(SSN ${plant('ID', p.nationalId)}, phone ${plant('PHONE', p.phone)}, lives at ${plant('ADDRESS', p.address)}), ` +
      `presented on ${plant('DATE', dateText)} with ${chief}. MRN ${plant('MRN', p.mrn)}. ` +
      (hist.length ? `History of ${hist.map((h) => h.en).join(' and ')}.` : 'No significant past history.');
    exam = dx.exam.map((e) => e.en).join('; ') + '.';
    labs = labKeys.map((k) => labLine(k, dx.labs.includes(k), 'en', r)).join('; ');
    // Some exports abbreviate dosing (the cleaner expands it).
    treatment = r() < 0.5 ? dx.treatment.en.replace('twice daily', 'b.i.d.').replace('every day', 'q.d.') : dx.treatment.en;
  }
  return {
    patient_id: p.mrn, patient_name: p.name, department: DEPARTMENTS[dx.dept][lang], chief_complaint: chief, history, exam, labs,
    diagnosis: dx.name[lang], icd10: dx.icd10, treatment, admission_date: iso(admit), discharge_date: iso(discharge), lang,
    sex: p.sex, age: String(age),
  };
}

function csvField(v: string): string {
  return /[",\n\r]/.test(v) ? `"${v.replace(/"/g, '""')}"` : v;
}

export function toCsv(records: SynthRecord[]): string {
  return [SYNTH_COLUMNS.join(','), ...records.map((rec) => SYNTH_COLUMNS.map((c) => csvField(rec[c])).join(','))].join('\n') + '\n';
}

const SYNTH_EXT = { csv: 'csv', jsonl: 'jsonl', fhir: 'ndjson' } as const;

function writeSites(sites: SynthSite[], out: string, format: 'csv' | 'jsonl' | 'fhir', meta: Record<string, unknown>): void {
  mkdirSync(out, { recursive: true });
  const overview = [];
  for (const site of sites) {
    const dir = join(out, site.name);
    mkdirSync(dir, { recursive: true });
    const file = join(dir, `records.${SYNTH_EXT[format]}`);
    if (format === 'csv') writeFileSync(file, toCsv(site.records));
    else if (format === 'jsonl') writeFileSync(file, site.records.map((x) => JSON.stringify(x)).join('\n') + '\n');
    else writeFileSync(file, site.records.map((x, i) => JSON.stringify(recordToBundle(x, `${site.name}-${i}`))).join('\n') + '\n');
    site.file = file;
    const count = (xs: string[]) => xs.reduce<Record<string, number>>((m, x) => ((m[x] = (m[x] ?? 0) + 1), m), {});
    // the run's options first: this site's own record count replaces a per-site list
    const manifest = {
      ...meta, out: undefined, site: site.name, index: site.index, file: `records.${SYNTH_EXT[format]}`, format, records: site.records.length,
      departments: count(site.records.map((x) => x.department)), diagnoses: count(site.diagnosisKeys),
      planted: site.planted.length, canaries: site.canaries,
    };
    writeFileSync(join(dir, 'manifest.json'), JSON.stringify(manifest, null, 2) + '\n');
    writeFileSync(join(dir, 'phi.jsonl'), site.planted.map((p) => JSON.stringify(p) + '\n').join(''));
    overview.push(manifest);
  }
  writeFileSync(join(out, 'manifest.json'), JSON.stringify({ generator: 'fedlora synth', ...meta, out: undefined, sites: overview }, null, 2) + '\n');
}
