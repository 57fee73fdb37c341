// Medications with dose, frequency and route from a note's text (after cleaning, which has
// already expanded b.i.d. → "twice daily" and the like; both forms are read). A drug is found by
// its generic or common brand name (Chinese or English, the lexicon below); its dose, frequency
// and route are looked for after it, up to the next drug or the end of the sentence. A drug
// named in an allergy or as stopped (对青霉素过敏, allergic to, 停用, discontinued) is not a
// medication. Doses are normalised to mg (g × 1000, µg × 0.001), U (IU, 单位) or mL.

export interface Medication {
  /** Generic name, English, lower case. */
  name: string;
  dose: number | null;
  doseUnit: 'mg' | 'U' | 'mL' | null;
  /** qd | bid | tid | qid | q4h | q6h | q8h | q12h | qn | qod | qw | prn | once */
  frequency: string | null;
  /** Administrations a day (prn and once: null). */
  perDay: number | null;
  /** po | iv | im | sc | inh | sl | top */
  route: string | null;
}

/** generic → the names notes use for it (generic and brand, zh and en). */
const DRUGS: Record<string, string[]> = {
  aspirin: ['阿司匹林', '拜阿司匹林', 'aspirin', 'acetylsalicylic acid'],
  clopidogrel: ['氯吡格雷', '波立维', 'clopidogrel', 'plavix'],
  ticagrelor: ['替格瑞洛', 'ticagrelor', 'brilinta'],
  atorvastatin: ['阿托伐他汀', '立普妥', 'atorvastatin', 'lipitor'],
  rosuvastatin: ['瑞舒伐他汀', 'rosuvastatin', 'crestor'],
  metoprolol: ['美托洛尔', '倍他乐克', 'metoprolol'],
  bisoprolol: ['比索洛尔', 'bisoprolol'],
  amlodipine: ['氨氯地平', '络活喜', 'amlodipine'],
  nifedipine: ['硝苯地平', 'nifedipine'],
  valsartan: ['缬沙坦', 'valsartan'],
  losartan: ['氯沙坦', 'losartan'],
  enalapril: ['依那普利', 'enalapril'],
  furosemide: ['呋塞米', '速尿', 'furosemide', 'lasix'],
  spironolactone: ['螺内酯', 'spironolactone'],
  nitroglycerin: ['硝酸甘油', 'nitroglycerin', 'glyceryl trinitrate'],
  metformin: ['二甲双胍', '格华止', 'metformin'],
  gliclazide: ['格列齐特', 'gliclazide'],
  acarbose: ['阿卡波糖', 'acarbose'],
  'insulin glargine': ['甘精胰岛素', 'insulin glargine', 'glargine', 'lantus'],
  insulin: ['胰岛素', 'insulin'],
  methimazole: ['甲巯咪唑', '他巴唑', 'methimazole', 'thiamazole'],
  levothyroxine: ['左甲状腺素钠?', '优甲乐', 'levothyroxine'],
  omeprazole: ['奥美拉唑', 'omeprazole'],
  pantoprazole: ['泮托拉唑', 'pantoprazole'],
  ceftriaxone: ['头孢曲松', 'ceftriaxone'],
  azithromycin: ['阿奇霉素', 'azithromycin'],
  levofloxacin: ['左氧氟沙星', 'levofloxacin'],
  amoxicillin: ['阿莫西林', 'amoxicillin'],
  penicillin: ['青霉素', 'penicillin'],
  prednisone: ['泼尼松', 'prednisone'],
  methylprednisolone: ['甲泼尼龙', 'methylprednisolone'],
  salbutamol: ['沙丁胺醇', 'salbutamol', 'albuterol'],
  'budesonide/formoterol': ['布地奈德福莫特罗', 'budesonide[- /]formoterol'],
  rivaroxaban: ['利伐沙班', 'rivaroxaban'],
  warfarin: ['华法林', 'warfarin'],
  enoxaparin: ['依诺肝素', 'enoxaparin'],
  heparin: ['肝素', 'heparin'],
  alteplase: ['阿替普酶', 'alteplase'],
  ibuprofen: ['布洛芬', 'ibuprofen'],
  paracetamol: ['对乙酰氨基酚', 'paracetamol', 'acetaminophen'],
  sumatriptan: ['舒马普坦', 'sumatriptan'],
  morphine: ['吗啡', 'morphine'],
  'potassium chloride': ['氯化钾', 'potassium chloride', 'KCl'],
};

// Frequency phrases → code and administrations a day (longest phrases first at match time).
const FREQUENCIES: [string, string, number | null][] = [
  ['(?:每日|每天|一日|一天|日)\\s*(?:一|1)\\s*次|(?:1|一)\\s*次\\s*/\\s*(?:日|天|d)|q\\.?d\\.?|o\\.?d\\.?|once (?:a |per )?day|once daily|every day|daily', 'qd', 1],
  ['(?:每日|每天|一日|一天|日)\\s*(?:两|二|2)\\s*次|(?:2|两|二)\\s*次\\s*/\\s*(?:日|天|d)|b\\.?i\\.?d\\.?|twice (?:a |per )?day|twice daily|two times (?:a |per )?day', 'bid', 2],
  ['(?:每日|每天|一日|一天|日)\\s*(?:三|3)\\s*次|(?:3|三)\\s*次\\s*/\\s*(?:日|天|d)|t\\.?i\\.?d\\.?|three times (?:a |per )?day|three times daily|thrice daily', 'tid', 3],
  ['(?:每日|每天|一日|一天|日)\\s*(?:四|4)\\s*次|(?:4|四)\\s*次\\s*/\\s*(?:日|天|d)|q\\.?i\\.?d\\.?|four times (?:a |per )?day|four times daily', 'qid', 4],
  ['q\\s*4\\s*h|every 4 hours|每\\s*4\\s*小时(?:一次|1次)?', 'q4h', 6],
  ['q\\s*6\\s*h|every 6 hours|每\\s*6\\s*小时(?:一次|1次)?', 'q6h', 4],
  ['q\\s*8\\s*h|every 8 hours|每\\s*8\\s*小时(?:一次|1次)?', 'q8h', 3],
  ['q\\s*12\\s*h|every 12 hours|每\\s*12\\s*小时(?:一次|1次)?', 'q12h', 2],
  ['q\\.?n\\.?|q\\.?h\\.?s\\.?|at bedtime|nightly|every night|每晚|睡前', 'qn', 1],
  ['隔日\\s*(?:一|1)?\\s*次?|隔天\\s*(?:一|1)?\\s*次?|q\\.?o\\.?d\\.?|every other day|on alternate days', 'qod', 0.5],
  ['q\\.?w\\.?|once (?:a |per )?week|weekly|每周一次|每周1次', 'qw', 1 / 7],
  ['p\\.?r\\.?n\\.?|as needed|when needed|if needed|必要时|需要时', 'prn', null],
  ['stat|once only|立即|顿服', 'once', null],
];
const ROUTES: [string, string][] = [
  ['口服|p\\.?o\\.?|by mouth|orally|oral', 'po'],
  ['静脉滴注|静脉注射|静脉推注|静滴|静推|静脉|i\\.?v\\.?|intravenous(?:ly)?', 'iv'],
  ['肌肉注射|肌注|i\\.?m\\.?|intramuscular(?:ly)?', 'im'],
  ['皮下注射|皮下|s\\.?c\\.?|subcut(?:aneous(?:ly)?)?|s\\.?q\\.?', 'sc'],
  ['雾化吸入|雾化|吸入|inhaled|inhalation|nebuli[sz]ed|neb', 'inh'],
  ['舌下含服|舌下|sublingual(?:ly)?|s\\.?l\\.?', 'sl'],
  ['外用|topical(?:ly)?', 'top'],
];

const CJK = /[\u3400-\u9fff]/;

/** Split a regex source at its top-level "|". */
function topLevelAlternatives(src: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (let i = 0; i < src.length; i++) {
    const c = src[i];
    if (c === '\\') {
      cur += c + src[++i];
      continue;
    }
    if (c === '(') depth++;
    if (c === ')') depth--;
    if (c === '|' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += c;
  }
  return [...out, cur];
}

/** Latin alternatives match as whole words, Chinese ones anywhere. */
const bound = (src: string) => topLevelAlternatives(src).map((a) => (CJK.test(a) ? `(?:${a})` : `(?<![A-Za-z])(?:${a})(?![A-Za-z])`)).join('|');
const alternation = (pairs: [string, string][]) => pairs.sort((a, b) => b[1].length - a[1].length).map(([, src]) => bound(src)).join('|');

const DRUG_ENTRIES = Object.entries(DRUGS).flatMap(([generic, names]) => names.map((n) => [generic, n] as [string, string]));
const DRUG_RE = new RegExp(alternation(DRUG_ENTRIES), 'gi');
const DRUG_TESTS = DRUG_ENTRIES.map(([generic, src]) => [generic, new RegExp(`^(?:${src})$`, 'i')] as const);
const FREQ_TESTS = FREQUENCIES.map(([src, code, perDay]) => ({ re: new RegExp(bound(src), 'i'), code, perDay }));
const ROUTE_TESTS = ROUTES.map(([src, code]) => ({ re: new RegExp(bound(src), 'i'), code }));
// A Latin unit is a whole word ("5 u" but not "5 units" read as "u"); a Chinese one needs no boundary.
const DOSE_RE = /(\d+(?:\.\d+)?)\s*(?:(毫克|微克|克|国际单位|单位|毫升)|(mg|g|mcg|[µμu]g|iu|u|units?|ml)(?![a-z]))/i;
// "20mgqd", "75 mgbid": a dose unit glued to a frequency or route code gets a space back.
const GLUED_UNIT = /(\d\s*(?:mg|g|mcg|[µμu]g|iu|u|ml))(?=(?:q\d*h|qd|qn|qhs|qw|bid|tid|qid|prn|po|iv|im|sc)(?![a-z]))/gi;
const NOT_TAKEN_BEFORE = /(?:过敏|allergic to|allergy to|allergies?:?|停用|停服|已停|stopped|discontinued|held|denies|未服用?|no)\s*$/i;
const NOT_TAKEN_AFTER = /^\s*(?:过敏|allergy|allergies|不耐受|intolerance|was stopped|停用)/i;
const SENTENCE_END = /[。；;\n]/;

function dose(window: string): Pick<Medication, 'dose' | 'doseUnit'> {
  const m = DOSE_RE.exec(window);
  if (!m) return { dose: null, doseUnit: null };
  const v = Number(m[1]);
  const u = (m[2] ?? m[3]).toLowerCase();
  if (u === 'mg' || u === '毫克') return { dose: v, doseUnit: 'mg' };
  if (u === 'g' || u === '克') return { dose: Math.round(v * 1000 * 1e6) / 1e6, doseUnit: 'mg' };
  if (/^(?:mcg|[µμu]g|微克)$/.test(u)) return { dose: v / 1000, doseUnit: 'mg' };
  if (u === 'ml' || u === '毫升') return { dose: v, doseUnit: 'mL' };
  return { dose: v, doseUnit: 'U' };
}

/** The earliest-starting phrase of a table in the window. */
function earliest<T extends { re: RegExp }>(tests: T[], window: string): T | null {
  let best: { t: T; at: number; len: number } | null = null;
  for (const t of tests) {
    const m = t.re.exec(window);
    if (m && (!best || m.index < best.at || (m.index === best.at && m[0].length > best.len))) best = { t, at: m.index, len: m[0].length };
  }
  return best?.t ?? null;
}

export function extractMedications(text: string): Medication[] {
  const hits: { generic: string; start: number; end: number }[] = [];
  DRUG_RE.lastIndex = 0;
  for (let m = DRUG_RE.exec(text); m; m = DRUG_RE.exec(text)) {
    const generic = DRUG_TESTS.find(([, re]) => re.test(m![0]))![0];
    hits.push({ generic, start: m.index, end: m.index + m[0].length });
  }
  const out: Medication[] = [];
  for (const [k, h] of hits.entries()) {
    if (NOT_TAKEN_BEFORE.test(text.slice(Math.max(0, h.start - 12), h.start)) || NOT_TAKEN_AFTER.test(text.slice(h.end, h.end + 16))) continue;
    if (out.some((o) => o.name === h.generic)) continue;
    let window = text.slice(h.end, Math.min(hits[k + 1]?.start ?? text.length, h.end + 48));
    const stop = SENTENCE_END.exec(window);
    if (stop) window = window.slice(0, stop.index);
    window = window.replace(GLUED_UNIT, '$1 ');
    const f = earliest(FREQ_TESTS, window);
    const r = earliest(ROUTE_TESTS, window);
    out.push({ name: h.generic, ...dose(window), frequency: f?.code ?? null, perDay: f?.perDay ?? null, route: r?.code ?? null });
  }
  return out;
}
