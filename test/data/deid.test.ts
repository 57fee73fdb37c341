// The de-identifier's building blocks: ID checksums, Luhn, date shifting, pseudonyms, the
// recognisers on hand-written cases in both languages, and the record-level helper.
import { describe, it, expect } from 'vitest';
import {
  deidentify, deidentifyRecord, chineseIdCheckChar, isValidChineseId18, isValidChineseId15, luhnValid, dateShiftDays,
  shiftDate, pseudonymFor, findDates,
} from '../../site-agent/data/deid/index.ts';
import { makeRng, makeChineseId18, makeBadChineseId18, makeBankCard } from '../../site-agent/data/deid/labelled-set.ts';

const KEY = Buffer.alloc(32, 7);
const types = (text: string, opts: Parameters<typeof deidentify>[1] = { mode: 'placeholder', key: KEY }) =>
  deidentify(text, opts).spans.map((s) => `${s.type}:${s.text}`);

describe('Chinese resident ID checksum (ISO 7064 MOD 11-2)', () => {
  it('computes the published check characters, including X', () => {
    // GB 11643-1999 examples: 11010519491231002X and 440524188001010014
    expect(chineseIdCheckChar('11010519491231002')).toBe('X');
    expect(chineseIdCheckChar('44052418800101001')).toBe('4');
    expect(isValidChineseId18('11010519491231002X')).toBe(true);
    expect(isValidChineseId18('11010519491231002x')).toBe(true);
  });
  it('rejects a wrong check character, an impossible birth date, a future birth year and a bad area', () => {
    expect(isValidChineseId18('110105194912310021')).toBe(false);
    const d = '1101051949023100'; // 1949-02-31 does not exist
    expect(isValidChineseId18(d + '2' + chineseIdCheckChar(d + '2'))).toBe(false);
    const f = '1101052999010100';
    expect(isValidChineseId18(f + '1' + chineseIdCheckChar(f + '1'))).toBe(false);
    const a = '0101051980010100';
    expect(isValidChineseId18(a + '1' + chineseIdCheckChar(a + '1'))).toBe(false);
    expect(isValidChineseId15('110105491231002')).toBe(true);
    expect(isValidChineseId15('110105491331002')).toBe(false); // month 13
  });
  it('generated valid IDs are detected in free text, invalid check characters are not', () => {
    const r = makeRng(1);
    for (let i = 0; i < 50; i++) {
      const good = makeChineseId18(r);
      const bad = makeBadChineseId18(r);
      expect(types(`检验条码${good}，`)).toEqual([`ID:${good}`]);
      expect(types(`检验条码${bad}，`).filter((t) => t.startsWith('ID:'))).toEqual([]);
      // ... but after an explicit ID-card label even a mistyped number is removed
      expect(types(`身份证号：${bad}`)).toEqual([`ID:${bad}`]);
    }
  });
});

describe('Luhn', () => {
  it('accepts valid card numbers and rejects a changed digit', () => {
    expect(luhnValid('4111111111111111')).toBe(true);
    expect(luhnValid('4111 1111 1111 1111')).toBe(true);
    expect(luhnValid('4111111111111112')).toBe(false);
    const r = makeRng(2);
    for (let i = 0; i < 50; i++) {
      const c = makeBankCard(r).replace(/ /g, '');
      expect(luhnValid(c)).toBe(true);
      const last = (Number(c.at(-1)) + 1 + (i % 8)) % 10;
      expect(luhnValid(c.slice(0, -1) + last)).toBe(false);
    }
  });
  it('a 16-digit number that fails Luhn is not a bank card', () => {
    expect(types('退费至4111111111111111。')).toEqual(['BANK_CARD:4111111111111111']);
    expect(types('参考序列4111111111111112。')).toEqual([]);
  });
});

describe('date shift', () => {
  it('is per patient, in [-365, 365] \\ {0}, and key dependent', () => {
    const seen = new Set<number>();
    for (let p = 0; p < 200; p++) {
      const d = dateShiftDays(KEY, `p${p}`);
      expect(Math.abs(d)).toBeGreaterThan(0);
      expect(Math.abs(d)).toBeLessThanOrEqual(365);
      expect(dateShiftDays(KEY, `p${p}`)).toBe(d);
      seen.add(d);
    }
    expect(seen.size).toBeGreaterThan(100);
    let differ = 0;
    for (let p = 0; p < 20; p++) if (dateShiftDays(Buffer.alloc(32, 8), `p${p}`) !== dateShiftDays(KEY, `p${p}`)) differ++;
    expect(differ).toBeGreaterThan(15);
  });
  it('keeps the written format and preserves intervals between a patient’s dates', () => {
    const text = '2023年5月1日入院，2023-05-11复查，05/21/2023 出院；June 3, 2023 随访；3 Jul 2023；2023/7/13；20230723。';
    const r = deidentify(text, { mode: 'placeholder', key: KEY, patientKey: 'alice' });
    expect(r.spans.map((s) => s.type)).toEqual(Array(7).fill('DATE'));
    const days = dateShiftDays(KEY, 'alice');
    const base = Date.UTC(2023, 4, 1) + days * 86_400_000;
    const iso = (k: number) => new Date(base + k * 86_400_000).toISOString().slice(0, 10);
    const [y, m, d] = iso(0).split('-').map(Number);
    expect(r.text).toContain(`${y}年${m}月${d}日入院`);
    expect(r.text).toContain(`${iso(10)}复查`);
    const [y2, m2, d2] = iso(20).split('-');
    expect(r.text).toContain(`${m2}/${d2}/${y2} 出院`);
    const jul23 = (Date.UTC(2023, 6, 23) - Date.UTC(2023, 4, 1)) / 86_400_000;
    expect(r.text).toContain(`${iso(jul23).replace(/-/g, '')}。`);
    // every detected date of the output parses back to the original + the same offset
    const out = findDates(r.text);
    expect(out).toHaveLength(7);
    expect(shiftDate('2023-05-01', KEY, 'alice')).toBe(iso(0));
  });
  it('month-name dates keep their style; invalid calendar dates are not dates', () => {
    const r = deidentify('Seen Jan. 5, 2023 and on 5 January 2023.', { mode: 'placeholder', key: KEY, patientKey: 'bob' });
    expect(r.text).toMatch(/^Seen [A-Z][a-z]{2}\.? \d{1,2}, \d{4} and on \d{1,2} [A-Z][a-z]+ \d{4}\.$/);
    expect(types('2023-02-30')).toEqual([]);
    expect(types('2019年确诊，since 2015')).toEqual([]); // years alone are kept
  });
  it('zero padding follows the written style (2022年12月10日 → 2022年9月1日, 2022-12-10 → 2022-09-01)', () => {
    const shift = (t: string, days: number) => findDates(t)[0].shifted(days);
    expect(shift('2022年12月10日', -100)).toBe('2022年9月1日');
    expect(shift('2022-12-10', -100)).toBe('2022-09-01');
    expect(shift('12/10/2022', -100)).toBe('09/01/2022');
    expect(shift('2022/9/1', 100)).toBe('2022/12/10');
    expect(shift('2022年09月01日', 100)).toBe('2022年12月10日');
    expect(shift('Dec 10, 2022', -100)).toBe('Sep 1, 2022');
    expect(shift('2022年12月', -100)).toBe('2022年9月'); // month precision moves by whole months
  });
  it('placeholder dates on request', () => {
    expect(deidentify('2023-05-01', { mode: 'placeholder', key: KEY, dates: 'placeholder' }).text).toBe('[DATE]');
  });
});

describe('pseudonyms', () => {
  it('the same real name maps to the same pseudonym for a patient, and depends on the key', () => {
    const a = pseudonymFor('张三', KEY, 'p1');
    expect(pseudonymFor('张三', KEY, 'p1')).toBe(a);
    expect(a).not.toBe('张三');
    expect(a).toHaveLength(2);
    let differKey = 0, differPatient = 0;
    for (const n of ['张三', '李四', '王小明', '欧阳娜娜', 'John Smith', 'Mary Jones']) {
      if (pseudonymFor(n, KEY, 'p1') !== pseudonymFor(n, Buffer.alloc(32, 9), 'p1')) differKey++;
      if (pseudonymFor(n, KEY, 'p1') !== pseudonymFor(n, KEY, 'p2')) differPatient++;
    }
    expect(differKey).toBeGreaterThanOrEqual(5);
    expect(differPatient).toBeGreaterThanOrEqual(5);
  });
  it('is consistent across mentions in a text: surname and English parts map on their own', () => {
    const opts = { mode: 'pseudonym' as const, key: KEY, patientKey: 'p1' };
    const r = deidentify('患者张三入院，张医生查房。张三诉胸痛。', { ...opts, knownNames: ['张三'] });
    const p = pseudonymFor('张三', KEY, 'p1');
    expect(r.text.split(p).length - 1).toBe(2);
    expect(r.text).toContain(`${p[0]}医生`);
    const e = deidentify('Mr. John Smith was seen. Mr. Smith denies pain.', opts).text;
    const last = pseudonymFor('Smith', KEY, 'p1');
    expect(e).toBe(`Mr. ${pseudonymFor('John Smith', KEY, 'p1')} was seen. Mr. ${last} denies pain.`);
    expect(pseudonymFor('John Smith', KEY, 'p1').endsWith(last)).toBe(true);
  });
});

describe('recognisers', () => {
  it('Chinese note: names in context, 某某, titles, IDs, phones, address, MRN, bed', () => {
    const t = '患者张三，男，92岁，身份证号110101199003074514，电话13812345678，住址：北京市朝阳区建国路88号3号楼2单元501室。病历号：A123456，12床。李医生查房，王某某陪同。';
    expect(types(t)).toEqual([
      'NAME:张三', 'AGE:92', 'ID:110101199003074514', 'PHONE:13812345678', 'ADDRESS:北京市朝阳区建国路88号3号楼2单元501室',
      'MRN:A123456', 'MRN:12', 'NAME:李', 'NAME:王某某',
    ]);
    expect(deidentify(t, { mode: 'placeholder', key: KEY }).text).toContain('≥90岁');
  });
  it('English note: titles, credentials, address + ZIP, US phone, SSN, email, URL, IPs, card', () => {
    const t = 'Mr. John Smith, 93-year-old, seen by Jane Doe, MD. 123 Main St, Springfield, IL 62704. (555) 123-4567. SSN 123-45-6789. john@example.com https://x.example.org/a?b=1. 10.1.2.3 and 2001:db8::8a2e:370:7334. Card 4111 1111 1111 1111.';
    expect(types(t)).toEqual([
      'NAME:John Smith', 'AGE:93', 'NAME:Jane Doe', 'ADDRESS:123 Main St, Springfield, IL', 'ZIP:62704', 'PHONE:(555) 123-4567',
      'ID:123-45-6789', 'EMAIL:john@example.com', 'URL:https://x.example.org/a?b=1', 'IP:10.1.2.3', 'IP:2001:db8::8a2e:370:7334',
      'BANK_CARD:4111 1111 1111 1111',
    ]);
    expect(deidentify(t, { mode: 'placeholder', key: KEY }).text).toContain('90+-year-old');
  });
  it('phones: landlines with area codes, international, grouped mobiles', () => {
    for (const p of ['010-12345678', '(0755)1234567', '（021）87654321', '+86 138 1234 5678', '+86-10-12345678', '138-1234-5678', '555.123.4567', '+1 555-123-4567']) {
      expect(types(`联系方式 ${p}。`)).toEqual([`PHONE:${p}`]);
    }
  });
  it('full-width digits and letters (common in Chinese records) are recognised, spans keep the input text', () => {
    const t = '电话：１３８１２３４５６７８，身份证１１０１０５１９４９１２３１００２Ｘ，２０２３年５月１日入院，邮箱ｚｈａｎｇ＠ｑｑ．ｃｏｍ。';
    const r = deidentify(t, { mode: 'placeholder', key: KEY, patientKey: 'fw' });
    expect(r.spans.map((s) => s.type)).toEqual(['PHONE', 'ID', 'DATE', 'EMAIL']);
    expect(r.spans[0].text).toBe('１３８１２３４５６７８');
    expect(r.text).toMatch(/^电话：\[PHONE\]，身份证\[ID\]，\d{4}年\d{1,2}月\d{1,2}日入院，邮箱\[EMAIL\]。$/);
  });
  it('passports, insurance, ZIP, ages ≤ 89 kept', () => {
    expect(types('护照号码E12345678，Passport No. 123456789，医保卡号：YB2023001234，Member ID: XJH12345678，邮编100020。')).toEqual([
      'PASSPORT:E12345678', 'PASSPORT:123456789', 'INSURANCE:YB2023001234', 'INSURANCE:XJH12345678', 'ZIP:100020',
    ]);
    expect(types('45岁，a 67-year-old, aged 89')).toEqual([]);
  });
  it('known names: full name, English parts, a Chinese given name alone (not inside a place name)', () => {
    const o = { mode: 'placeholder' as const, key: KEY, knownNames: ['王建国', 'Lee Ann Harper'] };
    expect(deidentify('王建国今日精神好，建国诉头痛，途经建国路。', o).text).toBe('[NAME]今日精神好，[NAME]诉头痛，途经建国路。');
    expect(deidentify('Harper was seen; Lee Ann Harper agreed.', o).text).toBe('[NAME] was seen; [NAME] agreed.');
    expect(deidentify('王建国今日精神好', { ...o, knownNames: [] }).spans).toEqual([]); // no context, not known: kept
  });
  it('clinical content survives verbatim', () => {
    const clinical = [
      '予阿司匹林100mg qd、氯吡格雷 75 mg、0.5g bid，HbA1c 8.2%，肌钙蛋白 2.3 ng/mL，BP 150/95 mmHg，血压130/80mmHg，诊断急性心肌梗死(I21.9)，',
      '高血压病史10年，2015年诊断2型糖尿病，患者高热3天，患者明显好转，黄疸，白细胞 12.5×10^9/L，NT-proBNP 12000 pg/mL，年收入1.8万，CA19-9 35 U/mL，',
      'Metformin 500 mg bid, INR 2.5, QTc 460 ms, EF 45%, COVID-19, E11.9, Type 2 Diabetes Mellitus, Emergency Department, 10:30, 1:1000, Gleason 3+4. ',
      'Embed 12 cells, CD4 cell 500000, take 1/2 tablet, G6PD, V1-V4, 38+2周, Apgar 9-10, 上海市第六人民医院心内科。',
    ].join('');
    const r = deidentify(clinical, { mode: 'pseudonym', key: KEY, patientKey: 'p' });
    expect(r.spans).toEqual([]);
    expect(r.text).toBe(clinical);
  });
  it('handles empty text and long input in one pass', () => {
    expect(deidentify('', { mode: 'placeholder', key: KEY })).toEqual({ text: '', spans: [] });
    const big = '患者张三，电话13812345678，HbA1c 8.2%。'.repeat(5000);
    const t0 = performance.now();
    const r = deidentify(big, { mode: 'placeholder', key: KEY });
    expect(r.spans).toHaveLength(10000);
    expect(performance.now() - t0).toBeLessThan(20_000); // sanity bound only; timing lives in the bench
  });
});

describe('deidentifyRecord', () => {
  it('pseudonymises name fields, shifts ISO date fields, removes identifier fields, cleans free text', () => {
    const rec = {
      patientId: 'H-0001', name: '张三', phone: '13812345678', idCard: '11010519491231002X', age: '93', admissionDate: '2023-05-01',
      history: '张三自诉胸痛，2023年5月3日加重。', diagnosis: '急性心肌梗死 I21.9', empty: undefined,
    };
    const { record, counts, removed } = deidentifyRecord(rec, { mode: 'pseudonym', key: KEY, patientKey: 'pk1' });
    const p = pseudonymFor('张三', KEY, 'pk1');
    expect(record.name).toBe(p);
    expect(record.admissionDate).toBe(shiftDate('2023-05-01', KEY, 'pk1'));
    expect(record.history).toContain(`${p}自诉胸痛`);
    expect(record.history).not.toContain('2023年5月3日');
    expect(record.diagnosis).toBe('急性心肌梗死 I21.9');
    expect(record.age).toBe('90+');
    expect(removed.sort()).toEqual(['idCard', 'patientId', 'phone']);
    expect('phone' in record).toBe(false);
    expect(counts).toMatchObject({ NAME: 2, DATE: 2, PHONE: 1, ID: 2, AGE: 1 });
  });
});
