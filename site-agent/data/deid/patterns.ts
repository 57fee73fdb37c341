// The compiled regular expressions of the detectors (built once at module load). Each is run
// once over a text; candidates are then validated and arbitrated in detect.ts.

import {
  COMPOUND_SURNAMES, SAFE_SURNAMES, AMBIGUOUS_SURNAMES, GIVEN_STOP_CHARS, ZH_TITLES_AFTER, ZH_CONTEXT_BEFORE,
  EN_FIRST_NAMES,
} from './lexicon.ts';

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\-]/g, '\\$&');
const alt = (xs: string[]) => [...xs].sort((a, b) => b.length - a.length).map(esc).join('|');

// ---- context-keyed identifiers: KEYWORD [sep] VALUE; the span is the value only ------------
const SEP = String.raw`\s*(?:码|号码)?\s*(?:is|为|是)?\s*[:：#＃]?\s*(?:No\.?\s*|#\s*)?`;
const VALUE = String.raw`([A-Za-z]{0,4}-?\d[A-Za-z0-9-]{0,24})(?![A-Za-z0-9])`;
// (?<![A-Za-z]): an English keyword must start a word ("Embed 12" is not a bed number).
const kw = (words: string) => new RegExp(`(?<![A-Za-z])(?:${words})${SEP}${VALUE}`, 'giu');

export const MRN_CTX = kw(
  String.raw`病历号|病案号|住院号|门诊号|就诊号|登记号|住院流水号|流水号|床位号|床号|检查号|影像号|体检编号|体检号|标本号|样本号|条码号|检验号|档案号|申请单号|医嘱号|编号|MRN|Accession(?:\s+(?:No\.?|Number|#))?|Specimen\s+(?:ID|No\.?|Number)|Medical\s+Record(?:\s+(?:No\.?|Number|#))?|Admission\s+(?:No\.?|Number|#|ID)|Encounter\s+(?:No\.?|Number|ID)|Account\s+(?:No\.?|Number)|Visit\s+(?:No\.?|Number|ID)|Bed(?:\s+(?:No\.?|Number))?|Room`,
);
/** "12床" / "3A床": the bed number written before 床. */
export const BED_ZH = /(?<![\d.A-Za-z])(\d{1,3}[A-Za-z]?|[A-Za-z]\d{1,3})(?=床(?!旁|边|头|上))/gu;
export const INSURANCE_CTX = kw(
  String.raw`医保卡号|医保号|医保账号|医保编号|社保卡号|社保号|社会保障卡号|社会保障号|医疗保险号|医疗保险卡号|新农合号|参保号|Member\s+(?:ID|No\.?|Number)|Policy\s+(?:No\.?|Number|ID)|Insurance\s+(?:ID|No\.?|Number)|Medicare\s+(?:ID|No\.?|Number)|Medicaid\s+(?:ID|No\.?|Number)|Subscriber\s+ID|Health\s+Plan\s+(?:ID|No\.?|Number)|Group\s+(?:No\.?|Number)`,
);
export const ID_CTX = kw(String.raw`身份证号|身份证|公民身份号码|证件号|SSN|Social\s+Security\s+(?:No\.?|Number)|ID\s+card(?:\s+(?:No\.?|number))?|National\s+ID`);
export const PASSPORT_CTX = kw(String.raw`护照号|护照|Passport(?:\s+(?:No\.?|Number))?`);
export const BANK_CTX = kw(String.raw`银行卡号|银行卡|银行账号|卡号|Card\s+(?:No\.?|Number)|Credit\s+card`);
export const PHONE_CTX = new RegExp(
  // case-sensitive on purpose: "cell 5000000" in a lab line is not a phone number
  String.raw`(?:联系电话|电话号码|电话|手机号码|手机号|手机|座机|传真|(?<![A-Za-z])(?:Tel(?:ephone)?|TEL|[Pp]hone|PHONE|[Mm]obile|Cell(?:\s+phone)?|cell\s+phone|[Ff]ax|FAX))\s*(?:No\.?|#)?\s*[:：]?\s*(\+?[\d(（][\d\s()（）-]{5,20}\d)(?!\d)`,
  'gu',
);

// ---- pattern identifiers ---------------------------------------------------------------------
export const EMAIL = /(?<![A-Za-z0-9._%+-])[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}/g;
export const URL_RE = /\b(?:https?|ftp):\/\/[^\s<>"'，。；！？、）】]+|\bwww\.[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)+(?:\/[^\s<>"'，。；！？、）】]*)?/g;
export const IPV4 = /(?<![\d.])(?:(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)\.){3}(?:25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)(?!\d|\.\d)/g;
export const IPV6 = /(?<![0-9A-Fa-f:])(?:[0-9A-Fa-f]{0,4}:){2,7}[0-9A-Fa-f]{0,4}(?![0-9A-Fa-f:])/g;
export const ID18 = /(?<![\dA-Za-z])\d{17}[\dXx](?![\dA-Za-z])/g;
export const DIGITS_13_19 = /(?<![\d.])\d{13,19}(?!\d|\.\d)/g;
export const CARD_GROUPED = /(?<![\d.])(?:\d{4}[ -]){3}\d{4}(?:[ -]?\d{1,3})?(?!\d|\.\d)|(?<![\d.])\d{4}[ -]\d{6}[ -]\d{5}(?!\d|\.\d)/g;
export const SSN = /(?<![\d-])\d{3}-\d{2}-\d{4}(?![\d-])/g;
export const PASSPORT_CN = /(?<![A-Za-z0-9])(?:[EG]\d{8}|E[A-HJ-NP-Z]\d{7})(?![A-Za-z0-9])/g;

export const PHONE = new RegExp(
  [
    // Chinese mobile, optional +86 / 0086, optional 3-4-4 grouping
    String.raw`(?<![\d+])(?:(?:\+|00)86[\s-]?)?1[3-9]\d(?:[\s-]?\d{4}){2}(?!\d)`,
    // Chinese landline: (0755)1234567, （010）12345678, 010-12345678, 0755 1234567, ext -123
    String.raw`(?<![\d])(?:(?:\+|00)86[\s-]?)?(?:\(0\d{2,3}\)|（0\d{2,3}）|0\d{2,3}[\s-])\s?\d{7,8}(?:-\d{1,5})?(?!\d)`,
    // international with + and separated groups: +86 10 1234 5678, +44 20 7946 0958
    String.raw`(?<![\d])\+\d{1,3}[\s-]\(?\d{1,4}\)?(?:[\s-]\d{2,8}){1,3}(?!\d)`,
    // US: (555) 123-4567, 555-123-4567, 555.123.4567, +1 555 123 4567
    String.raw`(?<![\d])(?:\+?1[\s.-]?)?(?:\(\d{3}\)\s?|\d{3}[.\s-])\d{3}[.-]\d{4}(?!\d)`,
  ].join('|'),
  'g',
);

// ---- ages ----------------------------------------------------------------------------------
export const AGE = new RegExp(
  [
    String.raw`(?<![\d.])(\d{2,3})(?=\s*(?:周岁|岁))`,
    String.raw`(?:年龄|享年)\s*[:：]?\s*(\d{2,3})(?!\d|\.\d)`,
    String.raw`(?<![\d.])(\d{2,3})(?=(?:\s+|-)(?:year|yr)s?(?:\s+|-)old|\s*(?:yo|y\/o|y\.o\.)\b)`,
    String.raw`\b(?:[Aa]ged?|AGE)\s*:?\s+(\d{2,3})(?!\d|\.\d)`,
  ].join('|'),
  'gu',
);

// ---- addresses -----------------------------------------------------------------------------
const CJK = '[\\u4e00-\\u9fff]';
const PROV = String.raw`(?:(?:北京|天津|上海|重庆)市?|(?:河北|山西|辽宁|吉林|黑龙江|江苏|浙江|安徽|福建|江西|山东|河南|湖北|湖南|广东|海南|四川|贵州|云南|陕西|甘肃|青海|台湾)省?|(?:内蒙古|广西|西藏|宁夏|新疆)(?:壮族|回族|维吾尔)?(?:自治区)?|(?:香港|澳门)(?:特别行政区)?)`;
const CITY_KNOWN = String.raw`(?:广州|深圳|珠海|汕头|佛山|东莞|中山|惠州|江门|湛江|杭州|宁波|温州|绍兴|嘉兴|湖州|金华|台州|南京|苏州|无锡|常州|南通|扬州|徐州|镇江|盐城|武汉|宜昌|襄阳|长沙|株洲|湘潭|衡阳|成都|绵阳|德阳|西安|咸阳|宝鸡|郑州|洛阳|开封|济南|青岛|烟台|潍坊|临沂|淄博|合肥|芜湖|福州|厦门|泉州|南昌|九江|赣州|沈阳|大连|鞍山|长春|哈尔滨|大庆|石家庄|唐山|保定|邯郸|太原|大同|昆明|贵阳|南宁|桂林|海口|三亚|兰州|西宁|银川|乌鲁木齐|拉萨|呼和浩特|包头)市?`;
const NUMZH = '(?:\\d+|[一二三四五六七八九十百]+)';
const TAIL =
  `(?:${CJK}{1,4}?(?:区|县|旗|市))?` + // district
  `(?:${CJK}{1,5}?(?:街道|镇|乡|村))?` + // town / street office
  `(?:[\\u4e00-\\u9fff\\d]{1,8}?(?:大道|大街|路|街|巷|胡同|弄)(?:${NUMZH}(?:号|弄))?)?` + // road + number
  `(?:${CJK}{2,6}?(?:小区|花园|公寓|大厦|新村|家园|苑))?` + // housing estate
  `(?:${NUMZH}(?:号楼|栋|幢|座))?(?:\\d+单元)?(?:\\d+(?:室|号房|房))?`;
export const ADDRESS_ZH = new RegExp(`(?:${PROV}(?:${CITY_KNOWN}|${CJK}{2,3}?(?:市|州|盟|地区))?|${CITY_KNOWN})${TAIL}`, 'gu');
/** After an address keyword, everything up to the next punctuation is the address. */
export const ADDRESS_ZH_CTX = /(?:住址|地址|家住|现住|住在|居住于|居住在|现居|户籍地址|户籍地|联系地址|家庭住址)\s*[:：]?\s*([\u4e00-\u9fffA-Za-z\d#（）()-]{2,40})/gu;

const STATES = 'AL|AK|AZ|AR|CA|CO|CT|DE|FL|GA|HI|ID|IL|IN|IA|KS|KY|LA|ME|MD|MA|MI|MN|MS|MO|MT|NE|NV|NH|NJ|NM|NY|NC|ND|OH|OK|OR|PA|RI|SC|SD|TN|TX|UT|VT|VA|WA|WV|WI|WY|DC';
const STREET_SUFFIX = 'Street|St|Avenue|Ave|Road|Rd|Boulevard|Blvd|Lane|Ln|Drive|Dr|Court|Ct|Way|Place|Pl|Terrace|Ter|Parkway|Pkwy|Circle|Cir|Highway|Hwy';
const CITY_EN = '(?:[A-Z][a-z]+\\s){0,2}[A-Z][a-z]+';
export const ADDRESS_EN = new RegExp(
  String.raw`\b\d{1,6}\s+(?:[NSEW]\.?\s+)?(?:[A-Z][a-z]+\.?\s+){1,3}(?:${STREET_SUFFIX})\b\.?(?:,?\s*(?:Apt|Apartment|Suite|Ste|Unit)\.?\s*#?\s*[A-Za-z0-9-]+|,?\s*#\s*[A-Za-z0-9-]+)?(?:,\s*${CITY_EN},?\s+(?:${STATES})\b)?` +
    // city, ST 12345 without a street line
    String.raw`|\b${CITY_EN},\s*(?:${STATES})(?=\s+\d{5}(?:-\d{4})?\b)`,
  'g',
);
export const ZIP = new RegExp(
  String.raw`(?<=\b(?:${STATES})\s{1,2})(\d{5}(?:-\d{4})?)\b|(?:ZIP(?:\s+code)?|Zip(?:\s+code)?|邮编|邮政编码|Postal\s+code)\s*[:：]?\s*(\d{5,6}(?:-\d{4})?)(?!\d)`,
  'gu',
);

// ---- names -----------------------------------------------------------------------------------
const STOP_CLASS = [...GIVEN_STOP_CHARS].filter((c) => /[\u4e00-\u9fff]/u.test(c)).join('');
const GIVEN = `(?:(?![${STOP_CLASS}])[\\u4e00-\\u9fff])`;
const SURNAME_ALL = `(?:${alt(COMPOUND_SURNAMES)}|[${SAFE_SURNAMES.join('')}${AMBIGUOUS_SURNAMES.join('')}])`;
const SURNAME_SAFE = `(?:${alt(COMPOUND_SURNAMES)}|[${SAFE_SURNAMES.join('')}])`;
const PATIENT_TITLES = ['患者', '病人', '老人', '老太'];
const TITLES_STRONG = ZH_TITLES_AFTER.filter((t) => !PATIENT_TITLES.includes(t));

/** 王医生, 张伟主任, 李某某: surname + 0-2 given characters before a title, or + 某. */
export const ZH_NAME_TITLE = new RegExp(
  `(?<![主责])(${SURNAME_ALL}${GIVEN}{0,2})(?=${alt(TITLES_STRONG)})|(${SURNAME_SAFE}${GIVEN}{1,2})(?=${alt(PATIENT_TITLES)})|(${SURNAME_ALL}某{1,2})`,
  'gu',
);
/** 患者张三, 姓名：王小明, 主治医师李明 — the name after a context word. */
export const ZH_NAME_CTX = new RegExp(`(?:${alt(ZH_CONTEXT_BEFORE)})\\s*[:：]?\\s*(${SURNAME_SAFE}${GIVEN}{1,2})`, 'gu');
/** 姓名：高明 — ambiguous surnames are accepted only after an explicit name label. */
export const ZH_NAME_LABEL = new RegExp(`(?:姓名|患者姓名|病人姓名)\\s*[:：]\\s*(${SURNAME_ALL}${GIVEN}{1,2})`, 'gu');
/** A bare name between boundaries: "张三，男，45岁". */
export const ZH_NAME_BARE = new RegExp(
  `(?<=^|[\\s，。；：:、,;（(“"])(${SURNAME_SAFE}${GIVEN}{1,2})(?=$|[\\s，。,；;、）)”"：:]|[男女]性?[，,、\\s])`,
  'gu',
);

const TOKEN = String.raw`(?:[A-Z]['’][A-Z][a-z]+|Mc[A-Z][a-z]+|[A-Z][a-z]+(?:['’-][A-Z]?[a-z]+)*)(?![A-Za-z])`;
const NAME_EN = String.raw`${TOKEN}(?:\s+(?:[A-Z]\.\s*)?${TOKEN}){0,2}`;
export const EN_NAME_TITLE = new RegExp(String.raw`\b(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Doctor|Professor)\.?\s+(${NAME_EN})`, 'g');
export const EN_NAME_CRED = new RegExp(String.raw`\b(${TOKEN}(?:\s+(?:[A-Z]\.\s*)?${TOKEN}){1,2}),?\s+(?:MD|M\.D\.|RN|NP|PA-C|DO|PhD|DNP|FNP|MBBS)\b`, 'g');
export const EN_NAME_CTX = new RegExp(
  String.raw`(?:\b[Pp]atient(?:'s)?(?:\s+[Nn]ame)?|\bName|\bPt\.?|\bSigned(?:\s+by)?|\bAttending(?:\s+physician)?|\bReferred\s+by|\bSeen\s+by|\bContact(?:\s+person)?|\b[Ee]mergency\s+contact|\b(?:[Dd]aughter|[Ss]on|[Ww]ife|[Hh]usband|[Mm]other|[Ff]ather|[Ss]ister|[Bb]rother|[Gg]uardian|[Ss]pouse|NOK))(?:\s+is)?\s*[:,]?\s+(${NAME_EN})`,
  'g',
);
export const EN_NAME_BARE = new RegExp(String.raw`\b((?:${EN_FIRST_NAMES.join('|')})\s+(?:[A-Z]\.\s*)?${TOKEN})\b`, 'g');

export function knownNamesRegex(names: string[]): RegExp | null {
  const forms = new Set<string>();
  const givens = new Set<string>();
  for (const n of names) {
    const t = n.trim();
    if (t.length < 2) continue;
    forms.add(t);
    // English names: each part of 3+ letters may appear alone ("Mr. Smith", "John").
    if (/^[A-Za-z .'’-]+$/.test(t)) for (const part of t.split(/\s+/)) if (part.replace(/\W/g, '').length >= 3) forms.add(part);
    // Chinese 3-character names: the 2-character given name is often used alone (小明).
    if (/^[\u4e00-\u9fff]{3}$/u.test(t) && !COMPOUND_SURNAMES.includes(t.slice(0, 2))) givens.add(t.slice(1));
  }
  if (forms.size === 0) return null;
  const body = [...forms]
    .sort((a, b) => b.length - a.length)
    .map((f) => (/^[A-Za-z]/.test(f) ? `\\b${esc(f)}\\b` : esc(f)))
    // a given name alone, unless it is part of a place name (建国路, 新华区)
    .concat([...givens].filter((g) => !forms.has(g)).map((g) => `${esc(g)}(?![路街道巷号区县市省镇村])`))
    .join('|');
  return new RegExp(body, 'gu');
}
