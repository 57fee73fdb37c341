// A labelled evaluation set for the de-identifier, generated deterministically from a seed:
// Chinese and English clinical notes built from varied templates, with every planted
// identifier recorded as an exact gold span, and every planted piece of clinical content
// (doses, lab values, ICD codes, drugs, diseases, vitals, years, ages ≤ 89) recorded as a
// distractor that must survive untouched. The identifier makers are exported so that the
// synthetic-data generator and pipeline tests can plant the same formats.
//
// Caveat: these templates were written alongside the detector, so scores on this set are
// optimistic; test/data/deid-eval.test.ts therefore also runs the independently written
// synthetic generator (site-agent/data/synth) as a cross-check.

import type { PhiSpan, PhiType } from '../types.ts';
import { chineseIdCheckChar, luhnCheckDigit } from './validators.ts';
import { mulberry32 } from '../../../shared/prng.ts';

export type Rng = () => number;

/** mulberry32: small, fast, deterministic. */
export const makeRng: (seed: number) => Rng = mulberry32;
const int = (r: Rng, lo: number, hi: number) => lo + Math.floor(r() * (hi - lo + 1));
const pick = <T>(r: Rng, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
const digits = (r: Rng, n: number) => Array.from({ length: n }, () => int(r, 0, 9)).join('');
const pad2 = (n: number) => String(n).padStart(2, '0');

// ---- identifier makers ------------------------------------------------------------------------
const AREAS = ['110101', '110105', '310104', '440305', '440106', '330106', '320102', '510107', '420106', '370202', '610113'];

export function makeChineseId18(r: Rng): string {
  const y = int(r, 1930, 2015), m = int(r, 1, 12), d = int(r, 1, 28);
  const first17 = pick(r, AREAS) + y + pad2(m) + pad2(d) + digits(r, 3);
  return first17 + chineseIdCheckChar(first17);
}
/** An 18-character ID whose check character is wrong (a hard negative for checksum tests). */
export function makeBadChineseId18(r: Rng): string {
  const good = makeChineseId18(r);
  const bad = '0123456789X'.split('').filter((c) => c !== good[17]);
  return good.slice(0, 17) + pick(r, bad);
}
function makeChineseId15(r: Rng): string {
  return pick(r, AREAS) + pad2(int(r, 30, 98)) + pad2(int(r, 1, 12)) + pad2(int(r, 1, 28)) + digits(r, 3);
}
function makeMobileCN(r: Rng): string {
  const n = '1' + int(r, 3, 9) + digits(r, 9);
  const f = int(r, 0, 3);
  return f === 0 ? n : f === 1 ? `${n.slice(0, 3)}-${n.slice(3, 7)}-${n.slice(7)}` : f === 2 ? `${n.slice(0, 3)} ${n.slice(3, 7)} ${n.slice(7)}` : `+86 ${n}`;
}
function makeLandlineCN(r: Rng): string {
  const [area, len] = pick(r, [['010', 8], ['021', 8], ['0755', 7], ['0571', 8], ['020', 8], ['028', 8]] as const);
  const num = String(int(r, 2, 8)) + digits(r, len - 1);
  const f = int(r, 0, 3);
  return f === 0 ? `${area}-${num}` : f === 1 ? `(${area})${num}` : f === 2 ? `（${area}）${num}` : `+86 ${area.slice(1)} ${num.slice(0, 4)} ${num.slice(4)}`;
}
function makeUsPhone(r: Rng): string {
  const a = int(r, 201, 989), b = int(r, 200, 999), c = digits(r, 4);
  const f = int(r, 0, 3);
  return f === 0 ? `(${a}) ${b}-${c}` : f === 1 ? `${a}-${b}-${c}` : f === 2 ? `${a}.${b}.${c}` : `+1 ${a}-${b}-${c}`;
}
export function makeBankCard(r: Rng): string {
  const len = pick(r, [16, 16, 19]);
  const partial = pick(r, ['622202', '621700', '436742', '524094', '622848']) + digits(r, len - 7);
  const n = partial + luhnCheckDigit(partial);
  return len === 16 && r() < 0.5 ? n.replace(/(\d{4})(?=\d)/g, '$1 ') : n;
}
const makePassportCN = (r: Rng) => pick(r, ['E', 'G', 'E']) + digits(r, 8);
const makePassportUS = (r: Rng) => String(int(r, 1, 9)) + digits(r, 8);
const makeSsn = (r: Rng) => `${int(r, 100, 665)}-${pad2(int(r, 1, 99))}-${String(int(r, 1, 9999)).padStart(4, '0')}`;
const makeMrn = (r: Rng) => pick(r, ['', '', 'ZY', 'MZ', 'A', 'H-']) + digits(r, int(r, 6, 10));
const makeInsuranceCN = (r: Rng) => pick(r, ['YB', 'SB', 'NH', '']) + digits(r, int(r, 9, 12)) + (r() < 0.2 ? 'X' : '');
const makeInsuranceUS = (r: Rng) => pick(r, ['XJH', 'MBR', 'W', 'ZGP']) + digits(r, int(r, 7, 10));
const makeIpv4 = (r: Rng) => [int(r, 10, 223), int(r, 0, 255), int(r, 0, 255), int(r, 1, 254)].join('.');
function makeIpv6(r: Rng): string {
  const g = () => int(r, 0, 0xffff).toString(16);
  return r() < 0.5 ? Array.from({ length: 8 }, g).join(':') : `fe80::${g()}:${g()}:${g()}`;
}
const PINYIN = ['zhangwei', 'liuyang', 'wangfang', 'chenjing', 'lixia', 'john.smith', 'mary_jones', 'dr.lee', 'huangming'];
const makeEmail = (r: Rng) => `${pick(r, PINYIN)}${int(r, 1, 999)}@${pick(r, ['163.com', 'qq.com', 'gmail.com', 'hospital.org.cn', 'example.com'])}`;
const makeUrl = (r: Rng) =>
  pick(r, [`https://www.${pick(r, ['pumch', 'hx-hospital', 'mayo-demo'])}.org/patient/${digits(r, 6)}`, `http://portal.example.cn/p?id=${digits(r, 5)}`, `www.${pick(r, ['zsyy', 'rjyy', 'clinic'])}.cn`]);

const ZH_SURNAMES = ['王', '李', '张', '刘', '陈', '杨', '赵', '吴', '周', '徐', '孙', '朱', '胡', '郭', '林', '欧阳', '诸葛', '司马'];
const ZH_GIVEN = ['伟', '芳', '娜', '秀英', '敏', '静', '丽', '强', '磊', '军', '洋', '勇', '艳', '杰', '建华', '小明', '国强', '桂兰', '淑珍', '志刚'];
const makeChineseName = (r: Rng) => pick(r, ZH_SURNAMES) + pick(r, ZH_GIVEN);
const EN_FIRST = ['John', 'Mary', 'Robert', 'Linda', 'Michael', 'Susan', 'David', 'Karen', 'James', 'Emily', 'Thomas', 'Grace'];
const EN_LAST = ['Smith', 'Johnson', 'Miller', 'Garcia', 'Brown', "O'Brien", 'McDonald', 'Nguyen', 'Kowalski', 'Harris', 'Doe', 'Baker'];
const makeEnglishName = (r: Rng) => `${pick(r, EN_FIRST)} ${r() < 0.2 ? pick(r, ['A.', 'J.', 'R.']) + ' ' : ''}${pick(r, EN_LAST)}`;

function makeChineseAddress(r: Rng, anchored: boolean): string {
  const top = pick(r, ['北京市朝阳区', '上海市浦东新区', '广东省深圳市南山区', '浙江省杭州市西湖区', '四川省成都市武侯区', '武汉市洪山区', '南京市鼓楼区', '湖南省长沙市岳麓区']);
  const road = pick(r, ['建国路', '张江路', '科技园路', '文三路', '人民南路', '珞喻路', '中山北路', '麓山南路']) + int(r, 1, 999) + '号';
  const bld = r() < 0.6 ? `${int(r, 1, 30)}${pick(r, ['号楼', '栋', '幢'])}` + (r() < 0.5 ? `${int(r, 1, 6)}单元` : '') + `${int(r, 1, 30)}0${int(r, 1, 9)}室` : '';
  const estate = r() < 0.3 ? pick(r, ['阳光花园', '锦绣家园', '翠湖小区']) : '';
  if (anchored) return top + road + estate + bld;
  return top.replace(/^.*?(?:省|市)/, '').replace(/^.*?市/, '') + road + estate + bld; // district onwards
}
const STREETS = ['Main St', 'Oak Avenue', 'Maple Rd', 'N. Elm Street', 'Sunset Blvd', 'Lakeview Drive', 'Park Ln'];
const CITIES: [string, string, string][] = [['Springfield', 'IL', '62704'], ['Boston', 'MA', '02115'], ['Austin', 'TX', '78701'], ['Salt Lake City', 'UT', '84101'], ['Madison', 'WI', '53703']];

// ---- clinical distractors (must survive verbatim) ---------------------------------------------
const ZH_DRUGS = ['阿司匹林', '氯吡格雷', '阿托伐他汀', '二甲双胍', '华法林', '甘精胰岛素', '美托洛尔', '头孢曲松', '雷贝拉唑', '万古霉素'];
const ZH_DOSES = ['100mg qd', '75 mg qd', '20mg qn', '0.5g bid', '10 U 皮下注射', '2.5mg', '1g q12h', '5 mg'];
const ZH_DISEASES = ['急性心肌梗死', '2型糖尿病', '高血压', '社区获得性肺炎', '慢性肾脏病3期', '心房颤动', '高脂血症', '冠心病'];
const ZH_LABS = ['HbA1c 8.2%', '肌钙蛋白 2.3 ng/mL', 'BP 150/95 mmHg', '血压 130/80mmHg', '血小板 250×10^9/L', '白细胞 12.5×10^9/L', 'NT-proBNP 12000 pg/mL', 'LDL-C 3.4 mmol/L', '肌酐 88 μmol/L', '心率 110次/分', '体温 38.5℃', 'SpO2 95%', 'D-二聚体 0.5 mg/L', 'CA19-9 35 U/mL', 'INR 2.5', 'EF 45%', '血糖 13.9 mmol/L'];
const ICD = ['I21.9', 'E11.9', 'J18.9', 'I10', 'N18.3', 'I48.0', 'E78.5', 'I25.1'];
const EN_DRUGS = ['Metformin', 'Atorvastatin', 'Clopidogrel', 'Warfarin', 'Aspirin', 'Lisinopril', 'Insulin glargine', 'Ceftriaxone'];
const EN_DOSES = ['500 mg bid', '40 mg daily', '75 mg qd', '5 mg', '0.5 g IV q12h', '10 units at bedtime', '81 mg'];
const EN_DISEASES = ['type 2 diabetes mellitus', 'acute myocardial infarction', 'community-acquired pneumonia', 'atrial fibrillation', 'chronic kidney disease stage 3', 'hypertension', 'COVID-19'];
const EN_LABS = ['HbA1c 8.2%', 'troponin I 2.3 ng/mL', 'BP 150/95 mmHg', 'BP 130/80', 'platelets 250 x10^9/L', 'WBC 12.5', 'NT-proBNP 12000 pg/mL', 'LDL 3.4 mmol/L', 'creatinine 1.2 mg/dL', 'HR 110 bpm', 'T 38.5 C', 'SpO2 95% on RA', 'INR 2.5', 'EF 45%', 'QTc 460 ms'];

// ---- documents ----------------------------------------------------------------------------------
export interface LabelledDoc {
  lang: 'zh' | 'en';
  text: string;
  gold: PhiSpan[];
  /** Clinical content that must survive verbatim (offsets into text). */
  distractors: { start: number; end: number; text: string }[];
  patientKey: string;
  knownNames: string[];
}

type Part = string | { phi: PhiType; text: string } | { keep: string };

class DocBuilder {
  text = '';
  gold: PhiSpan[] = [];
  distractors: LabelledDoc['distractors'] = [];
  push(...parts: Part[]): this {
    for (const p of parts) {
      const start = this.text.length;
      if (typeof p === 'string') this.text += p;
      else if ('phi' in p) {
        this.text += p.text;
        this.gold.push({ type: p.phi, start, end: this.text.length, text: p.text });
      } else {
        this.text += p.keep;
        this.distractors.push({ start, end: this.text.length, text: p.keep });
      }
    }
    return this;
  }
}
const phi = (type: PhiType, text: string): Part => ({ phi: type, text });
const keep = (text: string): Part => ({ keep: text });

function zhDate(r: Rng): string {
  const y = int(r, 2015, 2024), m = int(r, 1, 12), d = int(r, 1, 28);
  return pick(r, [`${y}年${m}月${d}日`, `${y}-${pad2(m)}-${pad2(d)}`, `${y}/${m}/${d}`, `${m}月${d}日`, `${y}年${pad2(m)}月${pad2(d)}日`, `${y}.${pad2(m)}.${pad2(d)}`]);
}
function enDate(r: Rng): string {
  const y = int(r, 2015, 2024), m = int(r, 1, 12), d = int(r, 1, 28);
  const mon = ['January', 'February', 'March', 'April', 'May', 'June', 'July', 'August', 'September', 'October', 'November', 'December'][m - 1];
  return pick(r, [`${mon} ${d}, ${y}`, `${pad2(m)}/${pad2(d)}/${y}`, `${d} ${mon} ${y}`, `${y}-${pad2(m)}-${pad2(d)}`, `${mon.slice(0, 3)}. ${d}, ${y}`, `${m}/${d}/${y}`]);
}
/** Age part: > 89 is PHI (grouped), ≤ 89 must survive. */
const agePart = (r: Rng): Part => {
  const a = r() < 0.4 ? int(r, 90, 104) : int(r, 18, 89);
  return a > 89 ? phi('AGE', String(a)) : keep(String(a));
};

function zhDoc(r: Rng, i: number): [DocBuilder, string] {
  const b = new DocBuilder();
  const name = makeChineseName(r);
  const sex = pick(r, ['男', '女']);
  const t = i % 15;
  if (t === 0) {
    b.push(phi('NAME', name), `，${sex}，`, agePart(r), '岁，因胸痛3小时于', phi('DATE', zhDate(r)), '入院。既往', keep(pick(r, ZH_DISEASES)), '病史', keep('10年'), '，');
    b.push(keep(`${int(r, 2001, 2020)}年`), '诊断', keep(pick(r, ZH_DISEASES)), '。身份证号：', phi('ID', makeChineseId18(r)), '，联系电话：', phi('PHONE', makeMobileCN(r)), '。');
  } else if (t === 1) {
    b.push('患者', phi('NAME', name), '，', agePart(r), '岁，住址：', phi('ADDRESS', makeChineseAddress(r, r() < 0.5)), '，病历号：', phi('MRN', makeMrn(r)), '，');
    b.push(phi('MRN', String(int(r, 1, 60))), '床。查', keep(pick(r, ZH_LABS)), '，', keep(pick(r, ZH_LABS)), '，诊断', keep(pick(r, ZH_DISEASES)), '（', keep(pick(r, ICD)), '）。');
  } else if (t === 2) {
    const doc = pick(r, ZH_SURNAMES);
    b.push(phi('NAME', doc + (r() < 0.5 ? pick(r, ZH_GIVEN) : '')), pick(r, ['医生', '主任', '医师']), '查房：予', keep(pick(r, ZH_DRUGS)), ' ', keep(pick(r, ZH_DOSES)), '，');
    b.push(phi('DATE', zhDate(r)), '复查', keep(pick(r, ZH_LABS)), '。家属', phi('NAME', makeChineseName(r)), '（其子）电话', phi('PHONE', makeLandlineCN(r)), '。');
  } else if (t === 3) {
    b.push('医保卡号：', phi('INSURANCE', makeInsuranceCN(r)), '；退费银行卡', phi('BANK_CARD', makeBankCard(r)), '。护照号码', phi('PASSPORT', makePassportCN(r)), '，');
    b.push('旧身份证', phi('ID', makeChineseId15(r)), '。住院号', phi('MRN', makeMrn(r)), '，', keep(pick(r, ZH_LABS)), '，年收入约', keep(`${int(r, 1, 9)}.${int(r, 1, 9)}万`), '元。');
  } else if (t === 4) {
    b.push(phi('NAME', pick(r, ZH_SURNAMES) + pick(r, ['某', '某某'])), '，', agePart(r), '岁，', phi('DATE', zhDate(r)), '行PCI术，术后', keep(pick(r, ZH_DRUGS)), keep(pick(r, ZH_DOSES)), '。');
    b.push('邮箱', phi('EMAIL', makeEmail(r)), '，随访平台', phi('URL', makeUrl(r)), ' ，登录IP ', phi('IP', makeIpv4(r)), '。');
  } else if (t === 5) {
    b.push('家住', phi('ADDRESS', makeChineseAddress(r, true)), '，邮编', phi('ZIP', String(int(r, 100000, 850000))), '。', keep(pick(r, ZH_DISEASES)), '，血压', keep(`${int(r, 100, 180)}/${int(r, 60, 110)}mmHg`), '，');
    b.push('心率', keep(`${int(r, 50, 130)}次/分`), '。', phi('DATE', zhDate(r)), '出院，', keep(pick(r, ZH_DRUGS)), keep(pick(r, ZH_DOSES)), '。');
  } else if (t === 6) {
    b.push('主治医师：', phi('NAME', makeChineseName(r)), '。患者', phi('NAME', name), '于', phi('DATE', zhDate(r)), '门诊就诊，', keep(pick(r, ZH_LABS)), '。');
    b.push('证件号', phi('ID', makeChineseId18(r)), '，手机', phi('PHONE', makeMobileCN(r)), '，', keep(pick(r, ICD)), '。');
  } else if (t === 8) {
    b.push('联系人：', phi('NAME', makeChineseName(r)), '（', keep('配偶'), '），手机号码：', phi('PHONE', makeMobileCN(r)), '；', phi('NAME', pick(r, ZH_SURNAMES)), pick(r, ['女士', '先生', '护士长']), '陪同。');
    b.push(keep('患者高热3天'), '，', keep('黄疸'), '，', keep(pick(r, ZH_LABS)), '，', keep(pick(r, ['患者明显好转', '患者安静入睡', '患者康复出院', '金水宝胶囊3粒tid'])), '。');
    b.push('由责任护士', phi('NAME', makeChineseName(r)), '执行，', phi('NAME', makeChineseName(r)), '之母签字；', pick(r, ['标本号', '体检编号：']), phi('MRN', pick(r, ['TJ', '', 'S']) + digits(r, 11)), '。');
  } else if (t === 9) {
    const y = int(r, 2016, 2023), m = int(r, 1, 12), d = int(r, 1, 28);
    b.push('入院日期：', phi('DATE', `${y}${pad2(m)}${pad2(d)}`), '，', pick(r, ['出院日期：', '手术时间']), phi('DATE', zhDate(r)), '，住院', keep(`${int(r, 3, 30)}天`), '。');
    b.push(phi('DATE', `${int(r, 2010, 2022)}年${int(r, 1, 12)}月`), '起规律服用', keep(pick(r, ZH_DRUGS)), '。', keep(pick(r, ['年收入1.8万', '费用2.3万元', 'CA19-9 35 U/mL', '白细胞 9.8×10^9/L'])), '。');
  } else if (t === 10) {
    b.push(pick(r, ['公民身份号码', '身份证号码：', '身份证号 ']), phi('ID', makeChineseId18(r)), '，', pick(r, ['病案号', '门诊号：', '就诊号']), phi('MRN', makeMrn(r)), '。');
    b.push('绑定邮箱：', phi('EMAIL', makeEmail(r)), '。', keep('COVID-19'), '核酸阴性，', keep(pick(r, ICD)), '，', keep('Ⅱ度'), '房室传导阻滞。');
  } else if (t === 11) {
    b.push(pick(r, ['户籍地址：', '联系地址：', '家庭住址 ']), phi('ADDRESS', makeChineseAddress(r, r() < 0.5)), '；', pick(r, ['社保卡号', '医保号：', '新农合号']), phi('INSURANCE', makeInsuranceCN(r)), '。');
    b.push(keep(pick(r, ZH_DISEASES)), '，', keep(pick(r, ['体重 65 kg', 'BMI 24.5', '尿蛋白 2+', 'pH 7.35'])), '。');
  } else if (t === 12) {
    b.push('如有不适请拨打', phi('PHONE', r() < 0.5 ? makeLandlineCN(r) : makeMobileCN(r)), '或', phi('PHONE', makeMobileCN(r)), '。', keep(pick(r, ZH_DRUGS)), ' ', keep(pick(r, ZH_DOSES)), '，');
    b.push(keep(pick(r, ['血钾 3.2 mmol/L', 'Hb 95 g/L', '3-5天', 'q6h', '1:1000', '10:30'])), '，', keep(pick(r, ZH_LABS)), '。');
  } else if (t === 13) {
    b.push('远程会诊', phi('URL', makeUrl(r)), ' ，终端', phi('IP', makeIpv6(r)), '。年龄：', agePart(r), '，', phi('NAME', makeChineseName(r)), pick(r, ['主任医师', '教授']), '会诊，');
    b.push(keep(pick(r, ZH_DISEASES)), '，', keep(`${int(r, 1990, 2020)}年`), '行', keep('PCI术'), '。');
  } else {
    // the patient's name appears without context: only the knownNames list can find it
    b.push(keep(pick(r, ZH_DISEASES)), '，', phi('NAME', name), '自诉乏力。', keep(pick(r, ZH_LABS)), '。享年', agePart(r), '。');
    b.push('身份证', phi('ID', makeChineseId18(r)), '，现住', phi('ADDRESS', makeChineseAddress(r, false)), '。');
  }
  return [b, name];
}

function enDoc(r: Rng, i: number): [DocBuilder, string] {
  const b = new DocBuilder();
  const name = makeEnglishName(r);
  const t = i % 15;
  if (t === 0) {
    b.push(pick(r, ['Mr. ', 'Mrs. ', 'Ms. ']), phi('NAME', name), ' is a ', agePart(r), '-year-old admitted on ', phi('DATE', enDate(r)), ' with ', keep(pick(r, EN_DISEASES)), '. ');
    b.push('History of ', keep(pick(r, EN_DISEASES)), ' since ', keep(String(int(r, 1995, 2020))), '. ', keep(pick(r, EN_LABS)), ', ', keep(pick(r, EN_LABS)), '.');
  } else if (t === 1) {
    b.push('Patient Name: ', phi('NAME', name), '. DOB: ', phi('DATE', enDate(r)), '. MRN: ', phi('MRN', makeMrn(r)), '. Bed ', phi('MRN', String(int(r, 1, 40))), '. ICD-10 ', keep(pick(r, ICD)), '.');
  } else if (t === 2) {
    b.push('Seen by Dr. ', phi('NAME', makeEnglishName(r)), ' on ', phi('DATE', enDate(r)), '. Started ', keep(pick(r, EN_DRUGS)), ' ', keep(pick(r, EN_DOSES)), '; ', keep(pick(r, EN_LABS)), '. ');
    b.push('Phone: ', phi('PHONE', makeUsPhone(r)), ', email ', phi('EMAIL', makeEmail(r)), '.');
  } else if (t === 3) {
    const [city, st, zip] = pick(r, CITIES);
    b.push('Address: ', phi('ADDRESS', `${int(r, 1, 9999)} ${pick(r, STREETS)}${r() < 0.3 ? `, Apt ${int(r, 1, 40)}` : ''}, ${city}, ${st}`), ' ', phi('ZIP', zip), '. ');
    b.push('SSN ', phi('ID', makeSsn(r)), '. Passport No. ', phi('PASSPORT', makePassportUS(r)), '. Member ID: ', phi('INSURANCE', makeInsuranceUS(r)), '.');
  } else if (t === 4) {
    b.push(phi('NAME', makeEnglishName(r)), ', RN, called the daughter, ', phi('NAME', `${pick(r, EN_FIRST)} ${pick(r, EN_LAST)}`), ', at ', phi('PHONE', makeUsPhone(r)), '. ');
    b.push('Card on file ', phi('BANK_CARD', makeBankCard(r)), '. ', keep(pick(r, EN_LABS)), ', ', keep(pick(r, EN_DRUGS)), ' ', keep(pick(r, EN_DOSES)), '.');
  } else if (t === 5) {
    b.push(agePart(r), ' yo with ', keep(pick(r, EN_DISEASES)), ' (', keep(pick(r, ICD)), '), ', keep(pick(r, EN_LABS)), '. Logged in from ', phi('IP', r() < 0.5 ? makeIpv6(r) : makeIpv4(r)), ' via ', phi('URL', makeUrl(r)), '. ');
    b.push('Follow-up on ', phi('DATE', enDate(r)), '. Admission No. ', phi('MRN', makeMrn(r)), '. Accession ', phi('MRN', digits(r, 13)), '. ');
    b.push(keep(pick(r, ['Parkinson Disease', 'Graves disease', 'Crohn disease', 'Down syndrome'])), ', ', keep(pick(r, ['Temp 98.6 F', 'G2P1', 'Apgar 9-10'])), '.');
  } else if (t === 6) {
    const [city, st, zip] = pick(r, CITIES);
    b.push('Lives in ', phi('ADDRESS', `${city}, ${st}`), ' ', phi('ZIP', zip), '. Aged ', agePart(r), '. Insurance ID: ', phi('INSURANCE', makeInsuranceUS(r)), '. ', keep(pick(r, EN_LABS)), '.');
  } else if (t === 8) {
    b.push('Pt: ', phi('NAME', name), ', ', agePart(r), ' y/o F. Attending: Dr. ', phi('NAME', pick(r, EN_LAST)), '. Emergency contact: ', phi('NAME', makeEnglishName(r)), ' (son) ', phi('PHONE', makeUsPhone(r)), '.');
    b.push(' Seen in the ', keep('Emergency Department'), ' for ', keep('Type 2 Diabetes Mellitus'), '.');
  } else if (t === 9) {
    const y = int(r, 2015, 2023);
    b.push('Signed: ', phi('NAME', makeEnglishName(r)), ', MD, ', phi('DATE', pick(r, [`May ${y}`, `March 3rd, ${y}`, `12 March ${y}`, `Sept. 9, ${y}`])), '. ');
    b.push(keep(pick(r, EN_LABS)), '; ', keep(pick(r, ['Gleason 3+4', 'pH 7.35', '1:1000', 'q6h', '10:30'])), '.');
  } else if (t === 10) {
    b.push(pick(r, ['Medical Record Number: ', 'MRN#', 'Encounter ID ']), phi('MRN', makeMrn(r)), '; ', pick(r, ['Account No. ', 'Visit ID: ']), phi('MRN', makeMrn(r)), '; ');
    b.push(pick(r, ['Policy Number ', 'Medicare ID: ', 'Subscriber ID ']), phi('INSURANCE', makeInsuranceUS(r)), '. ', keep(pick(r, EN_DISEASES)), '.');
  } else if (t === 11) {
    const [city, st, zip] = pick(r, CITIES);
    b.push('Mailing address ', phi('ADDRESS', `${int(r, 1, 9999)} ${pick(r, STREETS)}, Suite ${int(r, 100, 900)}, ${city}, ${st}`), ' ', phi('ZIP', zip), '; fax ', phi('PHONE', makeUsPhone(r)), '. ');
    b.push(keep(pick(r, EN_DRUGS)), ' ', keep(pick(r, EN_DOSES)), '.');
  } else if (t === 12) {
    b.push('Seen ', phi('DATE', enDate(r)), ' and on ', phi('DATE', `${int(r, 1, 12)}/${int(r, 1, 28)}`), '; ', keep('take 1/2 tablet'), ' ', keep('BP 130/80'), ', ', keep(pick(r, EN_LABS)), ', ', keep(pick(r, ['QRS 120 ms', 'BMI 31.2', '2-3 times a week'])), '.');
  } else if (t === 13) {
    b.push('Mrs. ', phi('NAME', pick(r, EN_LAST)), ' was accompanied by her husband ', phi('NAME', `${pick(r, EN_FIRST)} ${pick(r, EN_LAST)}`), '. Age: ', agePart(r), '. ', keep(pick(r, EN_LABS)), '.');
  } else {
    b.push(keep(pick(r, EN_DISEASES)), '. ', phi('NAME', name.split(' ').pop()!), ' tolerated ', keep(pick(r, EN_DRUGS)), ' ', keep(pick(r, EN_DOSES)), ' well; ', keep(pick(r, EN_LABS)), '. ');
    b.push('Discharged ', phi('DATE', enDate(r)), ', Chinese passport ', phi('PASSPORT', makePassportCN(r)), '.');
  }
  return [b, name];
}

/** The evaluation set: `n` documents alternating Chinese and English (deterministic in seed). */
export function generateLabelledSet(seed = 20240501, n = 240): LabelledDoc[] {
  const r = makeRng(seed);
  const docs: LabelledDoc[] = [];
  for (let i = 0; i < n; i++) {
    const zh = i % 2 === 0;
    const [b, patientName] = zh ? zhDoc(r, i >> 1) : enDoc(r, i >> 1);
    // Known names: the structured patient name, as ingest passes it (only the last template
    // needs it: there the name appears without any context).
    const known = [7, 14].includes((i >> 1) % 15) ? [patientName] : []; // both fall to the last template
    docs.push({ lang: zh ? 'zh' : 'en', text: b.text, gold: b.gold, distractors: b.distractors, patientKey: `patient-${i}`, knownNames: known });
  }
  return docs;
}
