// A labelled set for the field extractor, generated deterministically from a seed: Chinese and
// English notes (exam, labs, treatment) with the true value of every vital sign and lab in its
// canonical unit and the true medications. Varied on purpose: each field in several of the
// units clinicians write (the written number is the true one converted and rounded, as a
// laboratory prints it), spacing and separators, full-width digits, letter case, misspellings
// the rules know (HbAlc, mmhg) and ones they do not (tropnin); and hard negatives whose
// numbers are not the field's measurement: targets, bounds (<0.01), urine/CSF values, another
// quantity named alike (NT-proBNP, creatinine clearance, Free T4), results not done, drugs
// named as allergies or stopped. Hard cases where the rules are known to fail stay in (a date
// between the name and the value, a family member's drug): the figures measure, they do not
// confirm. Caveat: the templates were written alongside the rules, so the figures are an
// optimistic bound; the test also runs the independently written demo generator's notes.
import { mulberry32 } from '../../../shared/prng.ts';
import { FIELD_KEYS, type FieldKey } from './catalog.ts';

type Rng = () => number;
const pick = <T>(r: Rng, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
const uniform = (r: Rng, lo: number, hi: number) => lo + r() * (hi - lo);
const fix = (v: number, d: number) => v.toFixed(d);

export interface TrueMedication {
  name: string;
  /** mg, U or mL, as the extractor normalises. */
  dose: number | null;
  frequency: string | null;
}

export interface LabelledNote {
  lang: 'zh' | 'en';
  exam: string;
  labs: string;
  treatment: string;
  truth: Partial<Record<FieldKey, number>>;
  medications: TrueMedication[];
}

/** One way a field's value is written: the text for a true canonical value. */
type Writer = (r: Rng, v: number, lang: 'zh' | 'en') => string;
interface FieldGen {
  /** True canonical value range (a mix of normal and abnormal). */
  range: [number, number];
  decimals: number;
  zh: Writer[];
  en: Writer[];
}

const sep = (r: Rng, lang: 'zh' | 'en') => pick(r, lang === 'zh' ? ['', ' ', '：', '： ', ':'] : [' ', ': ', ':', '  ', ' = ']);
const sp = (r: Rng) => pick(r, ['', ' ', ' ']);
const n = (v: number, d: number) => fix(v, d);

// Blood pressure (one mention, sbp and dbp) is bloodPressure() below.
const GEN: Record<Exclude<FieldKey, 'sbp' | 'dbp'>, FieldGen> = {
  hr: {
    range: [45, 150], decimals: 0,
    zh: [(r, v) => `心率${sep(r, 'zh')}${n(v, 0)}${sp(r)}次/分`, (r, v) => `脉搏${sep(r, 'zh')}${n(v, 0)}次/分钟`, (r, v) => `P${sep(r, 'zh')}${n(v, 0)}次/分`, (r, v) => `心率${n(v, 0)}bpm`],
    en: [(r, v) => `HR${sep(r, 'en')}${n(v, 0)}${sp(r)}bpm`, (r, v) => `pulse ${n(v, 0)}/min`, (r, v) => `P ${n(v, 0)}`, (r, v) => `heart rate of ${n(v, 0)} beats/min`, (r, v) => `Pulse: ${n(v, 0)}`],
  },
  rr: {
    range: [10, 36], decimals: 0,
    zh: [(r, v) => `呼吸${sep(r, 'zh')}${n(v, 0)}次/分`, (r, v) => `呼吸频率 ${n(v, 0)} 次/分`, (r, v) => `R${sep(r, 'zh')}${n(v, 0)}次/分`],
    en: [(r, v) => `RR${sep(r, 'en')}${n(v, 0)}`, (r, v) => `resp rate ${n(v, 0)}/min`, (r, v) => `R ${n(v, 0)}`, (r, v) => `respiratory rate ${n(v, 0)} breaths/min`],
  },
  temp: {
    range: [35.8, 40.5], decimals: 1,
    zh: [(r, v) => `体温${sep(r, 'zh')}${n(v, 1)}${sp(r)}℃`, (r, v) => `T${sep(r, 'zh')}${n(v, 1)}℃`, (r, v) => `体温${n(v, 1)}度`, (r, v) => `腋温 ${n(v, 1)}°C`],
    en: [(r, v) => `T${sep(r, 'en')}${n(v, 1)}${sp(r)}°C`, (r, v) => `temp ${n((v * 9) / 5 + 32, 1)} F`, (r, v) => `Temperature: ${n(v, 1)} C`, (r, v) => `Tmax ${n((v * 9) / 5 + 32, 1)}°F`, (r, v) => `temp ${n(v, 1)}`],
  },
  spo2: {
    range: [82, 100], decimals: 0,
    zh: [(r, v) => `SpO2${sep(r, 'zh')}${n(v, 0)}%`, (r, v) => `血氧饱和度${sep(r, 'zh')}${n(v, 0)}${sp(r)}%`, (r, v) => `指脉氧${n(v, 0)}%`, (r, v) => `SPO2 ${n(v, 0)} %`],
    en: [(r, v) => `SpO2${sep(r, 'en')}${n(v, 0)}%`, (r, v) => `sats ${n(v, 0)}% on room air`, (r, v) => `O2 sat ${n(v, 0)}%`, (r, v) => `oxygen saturation ${n(v, 0)} %`, (r, v) => `SPO2 ${n(v, 0)}%`],
  },
  hba1c: {
    range: [4.6, 12.5], decimals: 1,
    zh: [(r, v) => `糖化血红蛋白${sep(r, 'zh')}${n(v, 1)}%`, (r, v) => `HbA1c ${n(v, 1)}%`, (r, v) => `HbA1c ${n((v - 2.152) / 0.09148, 0)} mmol/mol`],
    en: [(r, v) => `HbA1c${sep(r, 'en')}${n(v, 1)}%`, (r, v) => `HbAlc ${n(v, 1)} %`, (r, v) => `A1c ${n(v, 1)}%`, (r, v) => `HbA1c ${n((v - 2.152) / 0.09148, 0)} mmol/mol`],
  },
  glucose: {
    range: [3.5, 22], decimals: 1,
    zh: [(r, v) => `空腹血糖${sep(r, 'zh')}${n(v, 1)}${sp(r)}mmol/L`, (r, v) => `血糖 ${n(v, 1)}mmol/l`, (r, v) => `随机血糖${n(v, 1)} mmol/L`, (r, v) => `葡萄糖 ${n(v * 18.016, 0)} mg/dL`],
    en: [(r, v) => `glucose${sep(r, 'en')}${n(v * 18.016, 0)} mg/dL`, (r, v) => `FPG ${n(v, 1)} mmol/L`, (r, v) => `blood glucose ${n(v * 18.016, 0)} mg/dl`, (r, v) => `Glucose ${n(v, 1)} mmol/L`, (r, v) => `glucose ${n(v * 18.016, 0)}`],
  },
  troponin: {
    range: [0.02, 20], decimals: 2,
    zh: [(r, v) => `肌钙蛋白I${sep(r, 'zh')}${n(v, 2)}${sp(r)}ng/mL`, (r, v) => `高敏肌钙蛋白T ${n(v * 1000, 0)} ng/L`, (r, v) => `肌钙蛋白 ${n(v, 2)}ng/ml`],
    en: [(r, v) => `troponin I${sep(r, 'en')}${n(v, 2)} ng/mL`, (r, v) => `hs-cTnT ${n(v * 1000, 0)} ng/L`, (r, v) => `Troponin ${n(v * 1000, 0)} pg/mL`, (r, v) => `TnI ${n(v, 2)} ug/L`],
  },
  wbc: {
    range: [2.5, 25], decimals: 1,
    zh: [(r, v) => `白细胞${sep(r, 'zh')}${n(v, 1)}×10^9/L`, (r, v) => `白细胞计数 ${n(v, 1)} ×10⁹/L`, (r, v) => `WBC ${n(v, 1)}x10^9/L`],
    en: [(r, v) => `WBC${sep(r, 'en')}${n(v, 1)} x 10^9/L`, (r, v) => `WBC ${(Math.round(v * 10) * 100).toLocaleString('en-US')}/uL`, (r, v) => `white cell count ${n(v, 1)} K/uL`, (r, v) => `WBC ${n(v, 1)}`],
  },
  creatinine: {
    range: [45, 600], decimals: 0,
    zh: [(r, v) => `血肌酐${sep(r, 'zh')}${n(v, 0)}${sp(r)}μmol/L`, (r, v) => `肌酐 ${n(v, 0)} umol/L`, (r, v) => `Cr ${n(v, 0)}µmol/L`],
    en: [(r, v) => `creatinine${sep(r, 'en')}${n(v / 88.42, 2)} mg/dL`, (r, v) => `Cr ${n(v / 88.42, 2)} mg/dl`, (r, v) => `Creatinine ${n(v, 0)} umol/L`, (r, v) => `SCr ${n(v, 0)} µmol/L`, (r, v) => `Cr ${n(v / 88.42, 2)}`],
  },
  hemoglobin: {
    range: [60, 175], decimals: 0,
    zh: [(r, v) => `血红蛋白${sep(r, 'zh')}${n(v, 0)}${sp(r)}g/L`, (r, v) => `Hb ${n(v, 0)}g/L`, (r, v) => `血红蛋白 ${n(v, 0)} 克/升`],
    en: [(r, v) => `Hb${sep(r, 'en')}${n(v / 10, 1)} g/dL`, (r, v) => `hemoglobin ${n(v / 10, 1)} g/dl`, (r, v) => `Hgb ${n(v, 0)} g/L`, (r, v) => `haemoglobin ${n(v, 0)} g/L`, (r, v) => `Hb ${n(v / 10, 1)}`],
  },
  potassium: {
    range: [2.6, 6.8], decimals: 1,
    zh: [(r, v) => `血钾${sep(r, 'zh')}${n(v, 1)}${sp(r)}mmol/L`, (r, v) => `钾 ${n(v, 1)}mmol/L`, (r, v) => `K+ ${n(v, 1)} mmol/L`],
    en: [(r, v) => `K${sep(r, 'en')}${n(v, 1)}`, (r, v) => `potassium ${n(v, 1)} mEq/L`, (r, v) => `K+ ${n(v, 1)} mmol/L`, (r, v) => `Potassium: ${n(v, 1)} mmol/L`],
  },
  sodium: {
    range: [118, 158], decimals: 0,
    zh: [(r, v) => `血钠${sep(r, 'zh')}${n(v, 0)}${sp(r)}mmol/L`, (r, v) => `钠 ${n(v, 0)}mmol/L`, (r, v) => `Na ${n(v, 0)} mmol/L`],
    en: [(r, v) => `Na${sep(r, 'en')}${n(v, 0)}`, (r, v) => `sodium ${n(v, 0)} mEq/L`, (r, v) => `Na+ ${n(v, 0)} mmol/L`, (r, v) => `Sodium: ${n(v, 0)} mmol/L`],
  },
  crp: {
    range: [1, 250], decimals: 1,
    zh: [(r, v) => `C反应蛋白${sep(r, 'zh')}${n(v, 1)}${sp(r)}mg/L`, (r, v) => `超敏C反应蛋白 ${n(v, 1)} mg/L`, (r, v) => `CRP ${n(v, 1)}mg/L`],
    en: [(r, v) => `CRP${sep(r, 'en')}${n(v, 1)} mg/L`, (r, v) => `CRP ${n(v / 10, 2)} mg/dL`, (r, v) => `C-reactive protein ${n(v, 1)} mg/L`, (r, v) => `hs-CRP ${n(v, 1)} mg/L`],
  },
  bnp: {
    range: [15, 4000], decimals: 0,
    zh: [(r, v) => `脑钠肽${sep(r, 'zh')}${n(v, 0)}${sp(r)}pg/mL`, (r, v) => `BNP ${n(v, 0)} pg/ml`, (r, v) => `B型钠尿肽 ${n(v, 0)}pg/mL`],
    en: [(r, v) => `BNP${sep(r, 'en')}${n(v, 0)} pg/mL`, (r, v) => `brain natriuretic peptide ${n(v, 0)} pg/mL`, (r, v) => `BNP ${n(v, 0)} ng/L`],
  },
};

function bloodPressure(r: Rng, sbp: number, dbp: number, lang: 'zh' | 'en'): string {
  const kpa = (x: number) => fix(x / 7.50062, 1);
  const forms = lang === 'zh'
    ? [`血压${sep(r, 'zh')}${sbp}/${dbp}${sp(r)}mmHg`, `血压 ${sbp}/${dbp}毫米汞柱`, `BP ${sbp}/${dbp} mmhg`, `血压${kpa(sbp)}/${kpa(dbp)}kPa`, `血压：${sbp}／${dbp} mmHg`]
    : [`BP${sep(r, 'en')}${sbp}/${dbp}${sp(r)}mmHg`, `blood pressure ${sbp} over ${dbp}`, `B/P ${sbp}/${dbp}`, `BP: ${sbp} / ${dbp} mm Hg`, `NIBP ${sbp}/${dbp}`];
  return pick(r, forms);
}

/** Text that names a field (or a drug) without its measurement: nothing may be extracted from it. */
const NEGATIVES: Record<'zh' | 'en', string[]> = {
  zh: ['目标血压<130/80 mmHg', '尿肌酐 5600 μmol/L', '肌酐清除率 58 ml/min', 'NT-proBNP 1250 pg/mL', '游离T4 45 pmol/L', '肌钙蛋白I <0.01 ng/mL',
    '血糖未测', '糖化血红蛋白控制目标 7%', '脑脊液葡萄糖 2.1 mmol/L', '尿钠 40 mmol/L', '心律齐', '尿白细胞 15/HP'],
  en: ['target BP < 130/80', 'urine creatinine 5600 umol/L', 'creatinine clearance 58 mL/min', 'NT-proBNP 1250 pg/mL', 'Free T4 45 pmol/L', 'troponin <0.01 ng/mL',
    'glucose not done', 'HbA1c goal < 7%', 'CSF glucose 2.1 mmol/L', 'urine sodium 40 mmol/L', 'symptoms for 3 hrs', 'WBC pending'],
};
/** Known misses: a field named in a way the rules do not know, or a value they cannot reach. */
const HARD_POSITIVES: { field: Exclude<FieldKey, 'sbp' | 'dbp'>; write: (v: string) => string; decimals: number }[] = [
  { field: 'troponin', write: (v) => `tropnin ${v} ng/mL`, decimals: 2 },
  { field: 'glucose', write: (v) => `glucse ${v} mmol/L`, decimals: 1 },
  { field: 'hba1c', write: (v) => `HbA1c (2023-05-01) ${v}%`, decimals: 1 },
  { field: 'potassium', write: (v) => `K ${v}↓`, decimals: 1 },
];

interface DrugGen { name: string; zh: string; en: string; doses: [number, 'mg' | 'g' | 'mcg' | 'U' | 'mL'][] }
const DRUG_GEN: DrugGen[] = [
  { name: 'aspirin', zh: '阿司匹林', en: 'aspirin', doses: [[100, 'mg'], [81, 'mg']] },
  { name: 'clopidogrel', zh: '氯吡格雷', en: 'Plavix', doses: [[75, 'mg']] },
  { name: 'atorvastatin', zh: '阿托伐他汀', en: 'atorvastatin', doses: [[20, 'mg'], [40, 'mg']] },
  { name: 'metoprolol', zh: '倍他乐克', en: 'metoprolol', doses: [[25, 'mg'], [47.5, 'mg']] },
  { name: 'amlodipine', zh: '氨氯地平', en: 'amlodipine', doses: [[5, 'mg']] },
  { name: 'furosemide', zh: '呋塞米', en: 'Lasix', doses: [[20, 'mg'], [40, 'mg']] },
  { name: 'metformin', zh: '二甲双胍', en: 'metformin', doses: [[500, 'mg'], [0.5, 'g']] },
  { name: 'insulin glargine', zh: '甘精胰岛素', en: 'insulin glargine', doses: [[10, 'U'], [16, 'U']] },
  { name: 'levothyroxine', zh: '左甲状腺素钠', en: 'levothyroxine', doses: [[50, 'mcg'], [100, 'mcg']] },
  { name: 'ceftriaxone', zh: '头孢曲松', en: 'ceftriaxone', doses: [[2, 'g'], [1, 'g']] },
  { name: 'methimazole', zh: '甲巯咪唑', en: 'methimazole', doses: [[10, 'mg']] },
  { name: 'salbutamol', zh: '沙丁胺醇', en: 'albuterol', doses: [[2.5, 'mg']] },
  { name: 'enoxaparin', zh: '依诺肝素', en: 'enoxaparin', doses: [[40, 'mg']] },
  { name: 'omeprazole', zh: '奥美拉唑', en: 'omeprazole', doses: [[20, 'mg']] },
];
const FREQ_GEN: { code: string; zh: string[]; en: string[] }[] = [
  { code: 'qd', zh: ['每日一次', '每天1次', 'qd', '1次/日'], en: ['once daily', 'q.d.', 'daily', 'QD'] },
  { code: 'bid', zh: ['每日两次', '一日2次', 'bid', '2次/日'], en: ['b.i.d.', 'twice daily', 'BID', 'twice a day'] },
  { code: 'tid', zh: ['每日三次', 'tid', '3次/日'], en: ['t.i.d.', 'three times daily', 'TID'] },
  { code: 'q12h', zh: ['每12小时一次', 'q12h'], en: ['q12h', 'every 12 hours'] },
  { code: 'qn', zh: ['每晚', '睡前'], en: ['at bedtime', 'qhs', 'nightly'] },
  { code: 'prn', zh: ['必要时'], en: ['p.r.n.', 'as needed', 'PRN'] },
  { code: 'qod', zh: ['隔日一次'], en: ['every other day'] },
  // Not in the rules' table: a known miss.
  { code: 'tiw', zh: ['每周三次'], en: ['three times a week'] },
];
/** Brand names the lexicon does not know (known misses) and drugs named but not taken by the
 *  patient that the rules do take (known false positives). */
const DRUG_HARD = {
  missed: [{ name: 'nifedipine', zh: '拜新同 30mg 每日一次', en: 'Adalat 30 mg daily' }, { name: 'amlodipine', zh: '络活喜片 5mg qd', en: 'Norvasc 5 mg daily' }],
  notTaken: { zh: ['母亲长期服用华法林', '必要时考虑加用二甲双胍'], en: ['father is on warfarin', 'consider starting metformin'] },
};
const ROUTE_GEN = { zh: ['口服', '静滴', '皮下注射', '雾化吸入', ''], en: ['p.o.', 'PO', 'IV', 'orally', ''] };

function doseText(v: number, u: string, lang: 'zh' | 'en', r: Rng): { text: string; mg: number; unit: 'mg' | 'U' | 'mL' } {
  const unitText = lang === 'zh' ? pick(r, [u, { mg: '毫克', g: '克', mcg: '微克', U: '单位', mL: '毫升' }[u]!]) : pick(r, [u, u === 'mcg' ? 'µg' : u === 'U' ? 'units' : u]);
  const canonical = u === 'g' ? v * 1000 : u === 'mcg' ? v / 1000 : v;
  return { text: `${v}${sp(r)}${unitText}`, mg: canonical, unit: u === 'U' ? 'U' : u === 'mL' ? 'mL' : 'mg' };
}

function medications(r: Rng, lang: 'zh' | 'en'): { text: string; truth: TrueMedication[] } {
  const k = Math.floor(r() * 4);
  const drugs = [...DRUG_GEN].sort(() => r() - 0.5).slice(0, k + 1);
  const parts: string[] = [];
  const truth: TrueMedication[] = [];
  for (const [i, d] of drugs.entries()) {
    if (i === k && r() < 0.5) {
      // The last drug named only as an allergy or stopped: not a medication.
      parts.push(lang === 'zh' ? (r() < 0.5 ? `对${d.zh}过敏` : `已停用${d.zh}`) : r() < 0.5 ? `allergic to ${d.en}` : `${d.en} was stopped`);
      continue;
    }
    const [v, u] = pick(r, d.doses);
    const withDose = r() < 0.85;
    const ds = doseText(v, u, lang, r);
    // The known-miss frequency (the table's last) is rarer, as it is in practice.
    const f = r() < 0.85 ? pick(r, r() < 0.3 ? FREQ_GEN : FREQ_GEN.slice(0, -1)) : null;
    const route = pick(r, ROUTE_GEN[lang]);
    const fText = f ? pick(r, f[lang]) : '';
    const name = lang === 'zh' ? d.zh : d.en;
    parts.push([name, withDose ? ds.text : '', route, fText].filter(Boolean).join(lang === 'zh' ? pick(r, [' ', '']) : ' '));
    truth.push({ name: d.name, dose: withDose ? ds.mg : null, frequency: f?.code ?? null });
  }
  if (r() < 0.1) {
    const h = pick(r, DRUG_HARD.missed);
    if (!truth.some((t) => t.name === h.name)) {
      parts.push(h[lang]);
      truth.push({ name: h.name, dose: h.name === 'nifedipine' ? 30 : 5, frequency: 'qd' });
    }
  }
  if (r() < 0.06) parts.push(pick(r, DRUG_HARD.notTaken[lang]));
  const lead = lang === 'zh' ? pick(r, ['予', '治疗：', '']) : pick(r, ['Started ', 'Plan: ', '']);
  return { text: lead + parts.join(lang === 'zh' ? '；' : '; ') + (lang === 'zh' ? '。' : '.'), truth };
}

const FULL_WIDTH = (s: string) => s.replace(/[0-9]/g, (d) => String.fromCharCode(d.charCodeAt(0) + 0xfee0));

function note(r: Rng, lang: 'zh' | 'en'): LabelledNote {
  const truth: Partial<Record<FieldKey, number>> = {};
  const exam: string[] = [];
  const labs: string[] = [];
  const joiner = lang === 'zh' ? pick(r, ['，', '；', ' ']) : pick(r, [', ', '; ', '. ']);
  for (const f of FIELD_KEYS) {
    if (f === 'dbp' || r() >= 0.55) continue;
    if (f === 'sbp') {
      const s = Math.round(uniform(r, 85, 200));
      const d = Math.round(Math.min(s - 20, uniform(r, 50, 115)));
      const text = bloodPressure(r, s, d, lang);
      exam.push(text);
      const kpa = /kpa/i.test(text);
      truth.sbp = kpa ? Number(fix(s / 7.50062, 1)) * 7.50062 : s;
      truth.dbp = kpa ? Number(fix(d / 7.50062, 1)) * 7.50062 : d;
      continue;
    }
    const g = GEN[f];
    const v = Number(fix(uniform(r, ...g.range), g.decimals));
    const text = pick(r, g[lang])(r, v, lang);
    (FIELD_KEYS.indexOf(f) < 6 ? exam : labs).push(text);
    truth[f] = v;
  }
  if (r() < 0.25) {
    const h = pick(r, HARD_POSITIVES);
    if (truth[h.field] === undefined) {
      const v = Number(fix(uniform(r, ...GEN[h.field].range), h.decimals));
      labs.push(h.write(fix(v, h.decimals)));
      truth[h.field] = v;
    }
  }
  // Hard negatives, before the true values so that a rule that takes them also shadows the truth.
  for (let i = 0; i < 2; i++) if (r() < 0.4) (r() < 0.5 ? labs : exam).unshift(pick(r, NEGATIVES[lang]));
  const meds = medications(r, lang);
  let examText = exam.sort(() => r() - 0.5).join(joiner);
  let labsText = labs.join(joiner);
  if (lang === 'zh' && r() < 0.15) {
    examText = FULL_WIDTH(examText);
    labsText = FULL_WIDTH(labsText);
  }
  return { lang, exam: examText, labs: labsText, treatment: meds.text, truth, medications: meds.truth };
}

export function labelledExtractionSet(count: number, seed = 20261202): LabelledNote[] {
  const r = mulberry32(seed);
  return Array.from({ length: count }, (_, i) => note(r, i % 2 === 0 ? 'zh' : 'en'));
}
