// Consistent pseudonyms: HMAC(site key, patient, real name part) picks a replacement, so the
// same real name gets the same pseudonym within one patient's records, different keys give
// unrelated pseudonyms, and nobody without the key can map a pseudonym back.

import { createHmac } from 'node:crypto';
import { COMPOUND_SURNAMES, EN_FIRST_NAMES, EN_LAST_NAMES, SAFE_SURNAMES } from './lexicon.ts';

const GIVEN_CHARS = [...'伟芳娜敏静丽强磊军洋勇艳杰娟涛明超秀霞平刚桂英华玉兰萍红鹏辉宇浩然欣怡子轩梓涵俊峰建国志文斌亮琳晨颖佳瑶嘉睿博思雨晴晓'];
const FIRST = new Set(EN_FIRST_NAMES);

function pick<T>(key: Buffer | string, label: string, list: readonly T[]): T {
  const h = createHmac('sha256', key).update(label).digest();
  return list[h.readUInt32BE(0) % list.length];
}

const isCjk = (s: string) => /[\u4e00-\u9fff]/u.test(s);

/** Pseudonym for one detected name, consistent per (key, patientKey, name). */
export function pseudonymFor(name: string, key: Buffer | string, patientKey: string): string {
  const pk = patientKey + '\0';
  if (isCjk(name)) {
    const compound = COMPOUND_SURNAMES.find((c) => name.startsWith(c));
    const surname = compound ?? name[0];
    const rest = name.slice(surname.length);
    // The surname maps on its own so that 张三 and 张医生 keep a common pseudonymous surname.
    const fake = compound
      ? pick(key, `zh-compound\0${pk}${surname}`, COMPOUND_SURNAMES.filter((c) => c !== surname))
      : pick(key, `zh-surname\0${pk}${surname}`, SAFE_SURNAMES.filter((c) => c !== surname));
    let given = '';
    for (let i = 0; i < rest.length; i++) {
      given += rest[i] === '某' ? '某' : pick(key, `zh-given\0${pk}${name}\0${i}`, GIVEN_CHARS);
    }
    return fake + given;
  }
  // English: every part maps on its own ("John Smith" / "Mr. Smith" stay consistent).
  return name.replace(/[A-Za-z][A-Za-z'’-]*\.?/g, (tok) => {
    if (/^[A-Z]\.$/.test(tok)) return pick(key, `en-initial\0${pk}${tok}`, [...'ABCDEFGHJKLMNPRSTW']) + '.';
    const list = FIRST.has(tok) ? EN_FIRST_NAMES : EN_LAST_NAMES;
    return pick(key, `en-name\0${pk}${tok.toLowerCase()}`, list.filter((x) => x !== tok));
  });
}
