// The structured fields taken from free text at ingest: vital signs and common labs, each with
// ONE canonical unit (the typed column's name carries it) and the conversions from the other
// units clinicians write. Our own rules, not a library: no maintained library extracts these
// from bilingual (Chinese + English) clinical notes offline.
//
// Conversion factors (value in the written unit × factor = canonical value):
//   blood pressure   kPa → mmHg × 7.50062
//   temperature      °F → °C: (F − 32) × 5/9 (not a factor)
//   HbA1c            IFCC mmol/mol → NGSP %: 0.09148 × mmol/mol + 2.152 (NGSP master equation)
//   glucose          mg/dL → mmol/L × 1/18.016 (glucose 180.16 g/mol)
//   troponin         ng/L, pg/mL → ng/mL × 0.001; µg/L → ng/mL × 1
//   WBC              /µL, /mm³ → 10^9/L × 0.001; 10^3/µL, K/µL, G/L → × 1
//   creatinine       mg/dL → µmol/L × 88.42 (creatinine 113.12 g/mol)
//   hemoglobin       g/dL → g/L × 10
//   potassium/sodium mEq/L → mmol/L × 1 (monovalent)
//   CRP              mg/dL → mg/L × 10
//   BNP              ng/L → pg/mL × 1
// A value without a unit is read in the canonical unit when that is plausible, else in the one
// other unit that makes it plausible (glucose 140 → mg/dL → 7.77 mmol/L); a value outside the
// plausible range in every reading is not taken (counted as implausible).
//
// `normal` is the value the `impute: normal` missing-value policy writes: the middle of the
// adult reference interval, the convention of clinical scores that read an unmeasured value as
// normal (e.g. APACHE II). It is recorded as imputed, never as measured.

export type FieldKind = 'vital' | 'lab';

export interface UnitSpec {
  /** Regex source of how the unit is written (matched case-insensitively right after the number). */
  re: string;
  /** Canonical value from the written one. */
  toCanonical: (v: number) => number;
}

export interface FieldSpec {
  key: FieldKey;
  kind: FieldKind;
  /** Typed column in data_record_fields. */
  column: string;
  unit: string;
  label: { zh: string; en: string };
  /** Plausible canonical values (a measurement outside is not taken). */
  plausible: [number, number];
  normal: number;
  /** Other units; the canonical unit's own spellings are `canonicalRe`. */
  canonicalRe: string;
  units: UnitSpec[];
}

export const FIELD_KEYS = [
  'sbp', 'dbp', 'hr', 'rr', 'temp', 'spo2',
  'hba1c', 'glucose', 'troponin', 'wbc', 'creatinine', 'hemoglobin', 'potassium', 'sodium', 'crp', 'bnp',
] as const;
export type FieldKey = (typeof FIELD_KEYS)[number];

const same = (v: number) => v;
const times = (k: number) => (v: number) => v * k;
const PER_MIN = '(?:次\\s*/\\s*(?:分钟?|min)|次每分|/\\s*min(?:ute)?|bpm|beats?\\s*/\\s*min|breaths?\\s*/\\s*min|per\\s+min(?:ute)?)';

const F = (key: FieldKey, kind: FieldKind, column: string, unit: string, zh: string, en: string, plausible: [number, number], normal: number, canonicalRe: string, units: UnitSpec[] = []): FieldSpec =>
  ({ key, kind, column, unit, label: { zh, en }, plausible, normal, canonicalRe, units });

export const FIELDS: Record<FieldKey, FieldSpec> = {
  sbp: F('sbp', 'vital', 'sbp_mmhg', 'mmHg', '收缩压', 'systolic BP', [50, 280], 120, 'mm\\s*hg|毫米汞柱', [{ re: 'kpa', toCanonical: times(7.50062) }]),
  dbp: F('dbp', 'vital', 'dbp_mmhg', 'mmHg', '舒张压', 'diastolic BP', [20, 180], 75, 'mm\\s*hg|毫米汞柱', [{ re: 'kpa', toCanonical: times(7.50062) }]),
  hr: F('hr', 'vital', 'hr_per_min', '/min', '心率', 'heart rate', [20, 250], 75, PER_MIN),
  rr: F('rr', 'vital', 'rr_per_min', '/min', '呼吸频率', 'respiratory rate', [4, 70], 16, PER_MIN),
  temp: F('temp', 'vital', 'temp_c', '°C', '体温', 'temperature', [30, 45], 36.8, '°\\s*c|℃|度|deg(?:rees?)?\\s*c(?:elsius)?|celsius|c(?![a-z])', [
    { re: '°\\s*f|℉|deg(?:rees?)?\\s*f(?:ahrenheit)?|fahrenheit|f(?![a-z])', toCanonical: (f) => ((f - 32) * 5) / 9 },
  ]),
  spo2: F('spo2', 'vital', 'spo2_pct', '%', '血氧饱和度', 'SpO2', [50, 100], 98, '%'),
  hba1c: F('hba1c', 'lab', 'hba1c_pct', '% (NGSP)', '糖化血红蛋白', 'HbA1c', [3, 20], 5.2, '%', [{ re: 'mmol\\s*/\\s*mol', toCanonical: (v) => 0.09148 * v + 2.152 }]),
  glucose: F('glucose', 'lab', 'glucose_mmol_l', 'mmol/L', '血糖', 'glucose', [1, 60], 5.0, 'mmol\\s*/\\s*l', [{ re: 'mg\\s*/\\s*dl', toCanonical: (v) => v / 18.016 }]),
  troponin: F('troponin', 'lab', 'troponin_ng_ml', 'ng/mL', '肌钙蛋白', 'troponin', [0, 300], 0.01, 'ng\\s*/\\s*ml|[µμu]g\\s*/\\s*l', [
    { re: 'ng\\s*/\\s*l|pg\\s*/\\s*ml', toCanonical: times(0.001) },
  ]),
  wbc: F('wbc', 'lab', 'wbc_10e9_l', '10^9/L', '白细胞', 'WBC', [0.1, 200], 7, '[x×*]\\s*10\\s*(?:\\^|\\*\\*|e)?\\s*9\\s*/\\s*l|[x×*]\\s*10⁹\\s*/\\s*l|10\\^9\\s*/\\s*l|g\\s*/\\s*l|[x×*]?\\s*10\\s*(?:\\^|e)?\\s*3\\s*/\\s*[µμu]l|k\\s*/\\s*[µμu]l', [
    { re: '(?:/|per\\s*|个\\s*/\\s*)(?:[µμu]l|mm3|mm³|cumm)', toCanonical: times(0.001) },
  ]),
  creatinine: F('creatinine', 'lab', 'creatinine_umol_l', 'µmol/L', '肌酐', 'creatinine', [10, 3000], 80, '[µμu]mol\\s*/\\s*l|微摩尔\\s*/\\s*升', [{ re: 'mg\\s*/\\s*dl', toCanonical: times(88.42) }]),
  hemoglobin: F('hemoglobin', 'lab', 'hemoglobin_g_l', 'g/L', '血红蛋白', 'hemoglobin', [30, 250], 140, 'g\\s*/\\s*l|克\\s*/\\s*升', [{ re: 'g\\s*/\\s*dl', toCanonical: times(10) }]),
  potassium: F('potassium', 'lab', 'potassium_mmol_l', 'mmol/L', '血钾', 'potassium', [1.5, 10], 4.2, 'mmol\\s*/\\s*l', [{ re: 'meq\\s*/\\s*l', toCanonical: same }]),
  sodium: F('sodium', 'lab', 'sodium_mmol_l', 'mmol/L', '血钠', 'sodium', [100, 190], 140, 'mmol\\s*/\\s*l', [{ re: 'meq\\s*/\\s*l', toCanonical: same }]),
  crp: F('crp', 'lab', 'crp_mg_l', 'mg/L', 'C反应蛋白', 'CRP', [0, 600], 3, 'mg\\s*/\\s*l', [{ re: 'mg\\s*/\\s*dl', toCanonical: times(10) }]),
  bnp: F('bnp', 'lab', 'bnp_pg_ml', 'pg/mL', '脑钠肽', 'BNP', [0, 50000], 50, 'pg\\s*/\\s*ml|ng\\s*/\\s*l'),
};

// A single letter (T, P, R, K) names a field only before ":", "=" or a space and a number ("T 38.5",
// "P: 88"), or glued to a number only when the field's unit follows ("P88次/分", "T38.5℃"),
// never otherwise ("Free T4 45"). Latin names match as whole words.
const LETTER = (l: string, gluedUnit: string) => `=${l}(?=\\s*[:：=]\\s*\\d|\\s+\\d|\\d{1,3}(?:\\.\\d+)?\\s*(?:${gluedUnit}))`;
const GLUED_PER_MIN = '次|/\\s*min|bpm';
const GLUED_CELSIUS = '℃|°|度';
// A one-character Chinese name (钾, 钠) is not the ion inside a longer word (左甲状腺素钠, 氯化钾).
const ION = (c: string) => `(?<![\\u3400-\\u9fff])${c}`;

/** How each field is named in notes (regex sources). Latin names match in any case unless they
 *  start with "=" (HR, not "hr" = hours; Cr, T, P, R, K, Na, Hb as written). */
export const FIELD_NAMES: Record<FieldKey, string[]> = {
  sbp: [], // blood pressure is one mention: see BP_NAMES
  dbp: [],
  hr: ['心率', '脉搏', '脉率', '=HR', 'heart rate', 'pulse(?: rate)?', LETTER('P', GLUED_PER_MIN)],
  rr: ['呼吸频率', '呼吸(?=\\s*[:：]?\\s*\\d)', '=RR', 'resp(?:iratory)?\\.? rate', 'respirations', LETTER('R', GLUED_PER_MIN)],
  temp: ['体温', '腋温', '口温', '肛温', 'temp(?:erature)?', LETTER('T', GLUED_CELSIUS), '=Tmax'],
  spo2: ['SpO2', 'SpO₂', 'SaO2', 'O2 sat(?:uration)?', 'oxygen saturation', 'sats?', '血氧饱和度', '指脉氧', '经皮血氧', '血氧'],
  hba1c: ['HbA1c', 'Hb A1c', 'HbAlc', 'A1c', 'glycated ha?emoglobin', 'glycosylated ha?emoglobin', '糖化血红蛋白', '糖化'],
  glucose: ['空腹血糖', '随机血糖', '餐后2小时血糖', '血糖', '葡萄糖', 'FBG', 'FPG', 'fasting (?:blood |plasma )?glucose', 'random glucose', 'blood glucose', 'glucose', '=GLU', '=BG'],
  troponin: ['高敏肌钙蛋白[IT]?', '肌钙蛋白[IT]?', 'hs-?cTn[IT]', 'cTn[IT]', 'hs-?Tn[IT]', 'Tn[IT]', '(?:high[- ]sensitivity )?troponin(?: [IT])?'],
  wbc: ['白细胞计数', '白细胞', 'WBC', 'white blood cells?(?: count)?', 'white cell count', 'leukocytes?', 'leucocytes?'],
  creatinine: ['血肌酐', '肌酐', 'creatinine', '=SCr', '=Scr', '=Cr'],
  hemoglobin: ['血红蛋白', 'ha?emoglobin', 'Hgb', '=Hb(?![A-Za-z0-9])'],
  potassium: ['血钾', ION('钾'), 'potassium', '=K\\+?(?=\\s*[:：=]?\\s*\\d)'],
  sodium: ['血钠', ION('钠'), 'sodium', '=Na\\+?(?=\\s*[:：=]?\\s*\\d)'],
  crp: ['超敏C反应蛋白', 'C反应蛋白', 'C-reactive protein', 'hs-?CRP', 'CRP'],
  bnp: ['B型钠尿肽', '脑钠肽', 'brain natriuretic peptide', 'BNP'],
};

/** Blood pressure: one mention gives sbp and dbp. */
export const BP_NAMES = ['血压', 'BP', 'B/P', 'blood pressure', 'NBP', 'NIBP'];

/** Words right before a name that make the mention something else (urine, CSF, a target). */
export const BLOCK_BEFORE = /(?:尿|urine|urinary|脑脊液|CSF|胸水|腹水|目标|target|goal|控制在|keep|NT-?pro|N末端|糖化|氯化|枸橼酸)\s*$/i;
/** Words right after a name that make it another quantity (clearance, NT-proBNP, per high-power field). */
export const BLOCK_AFTER = /^\s*(?:清除率|clearance|前体|-?proBNP|变异|variability|目标|target|goal)/i;
