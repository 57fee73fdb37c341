// Structured fields at ingest: typed columns and medications beside the stored (de-identified)
// text, the missing-value policy per field (errors name the field), near-duplicates by MinHash
// (reported, optionally merged), and the figures in the data report.
import { describe, it, expect, afterAll } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import { openSiteDataStore, ingestFiles, defaultDataConfig, generateSites, dataReport, formatReport, parseDataConfig, backfillFields, type SiteDataStore } from '../../site-agent/data/index.ts';
import { toCsv, type SynthRecord } from '../../site-agent/data/synth/generate.ts';
import { minhashSignature, signatureSimilarity } from '../../site-agent/data/extract/near-duplicates.ts';
import { tempDir, stubDeid } from './helpers.ts';

const t = tempDir();
afterAll(t.cleanup);
const key = randomBytes(32);
let n = 0;

function rec(over: Partial<SynthRecord>): SynthRecord {
  return {
    patient_id: 'P1', patient_name: '王伟', department: '内分泌科', chief_complaint: '多饮多尿3个月',
    history: '患者王伟，男，56岁，3个月前出现多饮、多尿、体重下降，无发热。既往高血压病史5年，规律服药，血压控制可。',
    exam: '血压 150/90 mmHg，心率 88次/分，体温 36.8℃，神志清，双肺呼吸音清，心律齐，腹软无压痛，双下肢无水肿。',
    labs: '糖化血红蛋白 8.1%；空腹血糖 9.6 mmol/L；血肌酐 88 μmol/L；血钾 4.1 mmol/L',
    diagnosis: '2型糖尿病', icd10: 'E11.9', treatment: '二甲双胍 500mg 每日两次 口服；氨氯地平 5mg qd',
    admission_date: '2024-03-01', discharge_date: '2024-03-05', lang: 'zh', sex: 'M', age: '56', ...over,
  };
}

async function ingest(records: SynthRecord[], fields: unknown = {}): Promise<{ store: SiteDataStore; summary: Awaited<ReturnType<typeof ingestFiles>> }> {
  const dir = join(t.dir, `s${++n}`);
  const csv = join(t.dir, `in${n}.csv`);
  writeFileSync(csv, toCsv(records));
  const store = openSiteDataStore(join(dir, 'site.sqlite'));
  const summary = await ingestFiles(store, [csv], { format: 'csv', config: parseDataConfig({ fields }), key, deidentifier: stubDeid(key) });
  return { store, summary };
}

const fieldsRow = (store: SiteDataStore, id: string) => store.db.prepare('SELECT * FROM data_record_fields WHERE record_id = ?').get(id) as Record<string, unknown>;

describe('fields stored at ingest', () => {
  it('typed columns in canonical units and medications beside each record; the report counts them and shows precision/recall', async () => {
    const { store } = await ingest([
      rec({}),
      rec({ patient_id: 'P2', patient_name: 'John Smith', lang: 'en', history: 'Mr. John Smith, 61, with polyuria.', exam: 'BP 20.0/12.0 kPa, HR 72 bpm, T 101.3 F', labs: 'HbA1c 53 mmol/mol; glucose 180 mg/dL; Cr 1.2 mg/dL', treatment: 'metformin 1 g b.i.d.; insulin glargine 10 units at bedtime; allergic to penicillin' }),
    ]);
    const [zh, en] = ['P1', 'P2'].map((p) => store.allRecords().find((r) => r.history!.includes(p === 'P1' ? '多饮' : 'polyuria'))!);
    expect(fieldsRow(store, zh.id)).toMatchObject({ sbp_mmhg: 150, dbp_mmhg: 90, hr_per_min: 88, temp_c: 36.8, hba1c_pct: 8.1, glucose_mmol_l: 9.6, creatinine_umol_l: 88, potassium_mmol_l: 4.1, imputed: '[]' });
    const e = fieldsRow(store, en.id);
    expect(e.sbp_mmhg).toBeCloseTo(150.01, 2);
    expect(e.temp_c).toBeCloseTo(38.5, 4);
    expect(e.hba1c_pct).toBeCloseTo(7.0, 1);
    expect(e.glucose_mmol_l).toBeCloseTo(9.991, 3);
    expect(e.creatinine_umol_l).toBeCloseTo(106.104, 3);
    expect(store.db.prepare('SELECT name, dose, dose_unit, frequency, per_day, route FROM data_medications WHERE record_id = ? ORDER BY ord').all(en.id)).toEqual([
      { name: 'metformin', dose: 1000, dose_unit: 'mg', frequency: 'bid', per_day: 2, route: null },
      { name: 'insulin glargine', dose: 10, dose_unit: 'U', frequency: 'qn', per_day: 1, route: null },
    ]);
    const rep = dataReport(store);
    expect(rep.fields.recordsWithFields).toBe(2);
    expect(rep.fields.fields.sbp).toMatchObject({ unit: 'mmHg', measured: 2, imputed: 0 });
    expect(rep.fields.fields.spo2.measured).toBe(0);
    expect(rep.fields.medications).toMatchObject({ records: 2, rows: 4, withDose: 4, withFrequency: 4 });
    expect(rep.fields.quality.fields.sbp.support).toBeGreaterThan(100);
    const text = formatReport(rep);
    expect(text).toMatch(/structured fields \(read from the text at ingest: 2 records\)/);
    expect(text).toMatch(/glucose\s+mmol\/L\s+2\s+0\s+0\s+1\.000\s+0\.9\d\d\s+\d+/);
    expect(text).toMatch(/drug \+ dose\s+\d\.\d{3}\s+\d\.\d{3}/);
    store.close();
  });

  it('the demo generator\'s site: every record has its routine labs as typed values', async () => {
    const [site] = generateSites({ sites: 1, records: 40, seed: 11, lang: 'mixed' });
    const { store, summary } = await ingest(site.records);
    expect(summary.accepted).toBe(40);
    const c = store.db.prepare('SELECT count(*) AS n, count(wbc_10e9_l) AS wbc, count(hemoglobin_g_l) AS hb, count(sodium_mmol_l) AS na, count(glucose_mmol_l) AS glu FROM data_record_fields').get();
    expect(c).toEqual({ n: 40, wbc: 40, hb: 40, na: 40, glu: 40 });
    store.close();
  });
});

describe('missing-value policy per field', () => {
  const noA1c = rec({ patient_id: 'P9', labs: '空腹血糖 7.2 mmol/L；血肌酐 70 μmol/L', exam: '神志清，心肺未见异常，腹软。' });

  it('drop quarantines the record naming the field; keep leaves NULL', async () => {
    const { store, summary } = await ingest([rec({}), noA1c], { missing: { hba1c: 'drop' } });
    expect(summary.accepted).toBe(1);
    expect(summary.quarantineByReason).toEqual({ missing_value: 1 });
    expect(store.quarantined()[0].detail).toBe('hba1c: no HbA1c (% (NGSP)) found in the text (data.fields.missing.hba1c: drop)');
    store.close();
    const kept = await ingest([noA1c], { missing: { hba1c: 'keep' } });
    expect(fieldsRow(kept.store, kept.store.allRecords()[0].id)).toMatchObject({ hba1c_pct: null, glucose_mmol_l: 7.2, imputed: '[]' });
    kept.store.close();
  });

  it('impute writes the normal value or a constant and records it as imputed, never as measured', async () => {
    const { store } = await ingest([rec({}), noA1c], { missing: { hba1c: { impute: 'normal' }, sbp: { impute: 120 }, spo2: 'keep' } });
    const row = fieldsRow(store, store.allRecords().find((r) => r.labs!.includes('7.2'))!.id);
    expect(row).toMatchObject({ hba1c_pct: 5.2, sbp_mmhg: 120, dbp_mmhg: null, spo2_pct: null });
    expect(JSON.parse(row.imputed as string).sort()).toEqual(['hba1c', 'sbp']);
    const f = dataReport(store).fields.fields;
    expect(f.hba1c).toMatchObject({ measured: 1, imputed: 1 });
    expect(f.sbp).toMatchObject({ measured: 1, imputed: 1 });
    store.close();
  });

  it('medications: drop quarantines a record with no drug found', async () => {
    const { store, summary } = await ingest([rec({}), rec({ patient_id: 'P5', treatment: '饮食运动指导' })], { missing: { medications: 'drop' } });
    expect(summary.accepted).toBe(1);
    expect(store.quarantined()[0].detail).toMatch(/^medications: no medication found in the text \(data\.fields\.missing\.medications: drop\)/);
    store.close();
  });

  it('config errors name the field', () => {
    const err = (fields: unknown) => { try { parseDataConfig({ fields }); } catch (e) { return String((e as Error).message); } return 'no error'; };
    expect(err({ missing: { hba1cc: 'drop' } })).toMatch(/data\.fields\.missing\.hba1cc: unknown field "hba1cc"; the fields are sbp, dbp/);
    expect(err({ missing: { hba1c: { impute: 40 } } })).toMatch(/data\.fields\.missing\.hba1c\.impute: 40 is outside the plausible % \(NGSP\) range 3\.\.20 of hba1c/);
    expect(err({ missing: { medications: { impute: 'normal' } } })).toMatch(/data\.fields\.missing\.medications: medications cannot be imputed/);
    expect(err({ missing: { glucose: 'impute' } })).toMatch(/data\.fields\.missing\.glucose/);
    expect(err({ extract: false, missing: { crp: 'drop' } })).toMatch(/data\.fields\.missing\.crp: a missing-value policy for crp needs data\.fields\.extract: true/);
    expect(err({ near_duplicates: { threshold: 0.2 } })).toMatch(/data\.fields\.near_duplicates\.threshold/);
  });
});

describe('records stored before extraction', () => {
  it('fedlora site data extract reads their fields and signatures from the stored text; drop is counted, nothing deleted', async () => {
    const noA1c = rec({ patient_id: 'P4', labs: '空腹血糖 7.2 mmol/L', treatment: '阿卡波糖 50mg tid' });
    const copy = rec({ labs: rec({}).labs.replace('9.6', '9.7') });
    const { store } = await ingest([rec({}), noA1c, copy]);
    const snapshot = (sql: string) => store.db.prepare(sql).all();
    const before = ['SELECT * FROM data_record_fields ORDER BY record_id', 'SELECT * FROM data_medications ORDER BY record_id, ord', 'SELECT record_id, duplicate_of, same_patient FROM data_near_duplicates ORDER BY record_id'].map(snapshot);
    expect(before[2]).toHaveLength(1);
    // As a site upgraded from a version without extraction has them.
    for (const t of ['data_record_fields', 'data_medications', 'data_minhash', 'data_minhash_bands', 'data_near_duplicates']) store.db.exec(`DELETE FROM ${t}`);
    expect(formatReport(dataReport(store))).toMatch(/0 records; 3 stored without: ingested before extraction \(`fedlora site data extract` reads them\)/);
    const s = backfillFields(store.db, parseDataConfig({ fields: { missing: { hba1c: 'drop' } } }).fields);
    expect(s).toEqual({ records: 3, signaturesOnly: 0, nearDuplicatePairs: 1, wouldDrop: { hba1c: 1 } });
    expect(['SELECT * FROM data_record_fields ORDER BY record_id', 'SELECT * FROM data_medications ORDER BY record_id, ord', 'SELECT record_id, duplicate_of, same_patient FROM data_near_duplicates ORDER BY record_id'].map(snapshot)).toEqual(before);
    expect(store.countRecords()).toBe(3);
    // Run again: nothing left to do.
    expect(backfillFields(store.db, defaultDataConfig().fields)).toEqual({ records: 0, signaturesOnly: 0, nearDuplicatePairs: 0, wouldDrop: {} });
    // Ingested with extraction off: signatures only; turned on later, the fields are read.
    const off = await ingest([rec({ patient_id: 'P6' })], { extract: false });
    expect(off.store.db.prepare('SELECT count(*) FROM data_record_fields').pluck().get()).toBe(0);
    expect(backfillFields(off.store.db, parseDataConfig({ fields: { extract: false } }).fields)).toEqual({ records: 0, signaturesOnly: 0, nearDuplicatePairs: 0, wouldDrop: {} });
    expect(backfillFields(off.store.db, defaultDataConfig().fields)).toEqual({ records: 1, signaturesOnly: 0, nearDuplicatePairs: 0, wouldDrop: {} });
    expect(off.store.db.prepare('SELECT hba1c_pct FROM data_record_fields').pluck().get()).toBe(8.1);
    off.store.close();
    store.close();
  });
});

describe('near-duplicates (MinHash)', () => {
  const base = rec({});
  // The same visit re-exported with one value changed and SpO2 added.
  const edited = rec({ labs: base.labs.replace('9.6', '9.8'), exam: base.exam.replace('体温 36.8℃', '体温 36.8℃，SpO2 97%'), admission_date: '2024-03-02' });
  const otherPatient = rec({ patient_id: 'P7', patient_name: '李娜', history: base.history.replace('王伟', '李娜'), labs: base.labs.replace('88', '91') });
  const unrelated = rec({
    patient_id: 'P8', patient_name: '赵强', chief_complaint: '胸痛2小时', history: '患者赵强，男，63岁，2小时前突发胸骨后压榨样疼痛，伴大汗。',
    exam: '血压 100/60 mmHg，心率 110次/分，面色苍白。', labs: '肌钙蛋白I 6.5 ng/mL；白细胞 11.2×10^9/L', diagnosis: '急性心肌梗死', icd10: 'I21.9', treatment: '阿司匹林 300mg 嚼服',
  });

  it('MinHash estimates the Jaccard similarity of the 4-gram sets: an edited copy is near, another case is not', () => {
    const text = (r: SynthRecord) => [r.chief_complaint, r.history, r.exam, r.labs, r.diagnosis, r.treatment].join('\n');
    // The exact Jaccard similarity, computed here from the shingle sets.
    const grams = (x: string) => { const c = [...x.toLowerCase().replace(/\s+/g, ' ').trim()]; return new Set(c.slice(0, c.length - 3).map((_, i) => c.slice(i, i + 4).join(''))); };
    const jaccard = (a: string, b: string) => { const A = grams(a), B = grams(b); const inter = [...A].filter((g) => B.has(g)).length; return inter / (A.size + B.size - inter); };
    for (const [a, b] of [[base, edited], [base, otherPatient], [base, unrelated]]) {
      const est = signatureSimilarity(minhashSignature(text(a)), minhashSignature(text(b)));
      expect(Math.abs(est - jaccard(text(a), text(b)))).toBeLessThan(0.1); // 120 hashes: standard error ≤ 0.046
    }
    expect(jaccard(text(base), text(edited))).toBeGreaterThan(0.88);
    expect(jaccard(text(base), text(unrelated))).toBeLessThan(0.2);
  });

  it('are reported with the record they duplicate (same patient or not) and stored by default', async () => {
    const { store, summary } = await ingest([base, edited, otherPatient, unrelated]);
    expect(summary.accepted).toBe(4);
    expect(summary.nearDuplicates.merged).toBe(0);
    const pairs = store.db.prepare('SELECT record_id, duplicate_of, same_patient, merged, similarity FROM data_near_duplicates').all() as { record_id: string; duplicate_of: string; same_patient: number; merged: number; similarity: number }[];
    expect(summary.nearDuplicates.pairs).toBe(pairs.length);
    const byHistory = (h: string) => store.allRecords().find((r) => r.labs === h)!.id;
    const idOf = (r: SynthRecord) => byHistory(r.labs);
    expect(pairs.find((p) => p.record_id === idOf(edited))).toMatchObject({ duplicate_of: idOf(base), same_patient: 1, merged: 0 });
    expect(pairs.filter((p) => p.record_id === idOf(otherPatient)).every((p) => p.same_patient === 0)).toBe(true);
    expect(pairs.some((p) => p.record_id === idOf(otherPatient))).toBe(true);
    expect(pairs.some((p) => p.record_id === idOf(unrelated) || p.duplicate_of === idOf(unrelated))).toBe(false);
    for (const p of pairs) expect(p.similarity).toBeGreaterThanOrEqual(0.85);
    expect(formatReport(dataReport(store))).toMatch(new RegExp(`near-duplicates \\(MinHash\\): ${pairs.length} pairs \\(${pairs.filter((p) => p.same_patient).length} same patient\\), 0 merged`));
    store.close();
  });

  it('merge: a near-copy of the same patient\'s stored record is not stored (listed as merged, its values fill the kept record\'s gaps); another patient\'s is', async () => {
    const { store, summary } = await ingest([base, edited, otherPatient, unrelated], { near_duplicates: { merge: true } });
    expect(summary.accepted).toBe(3);
    expect(summary.nearDuplicates.merged).toBe(1);
    expect(store.allRecords().map((r) => r.labs).sort()).toEqual([base.labs, otherPatient.labs, unrelated.labs].sort());
    const merged = store.db.prepare('SELECT record_id, duplicate_of FROM data_near_duplicates WHERE merged = 1').all() as { record_id: string; duplicate_of: string }[];
    expect(merged).toHaveLength(1);
    expect(store.hasRecord(merged[0].record_id)).toBe(false);
    expect(merged[0].duplicate_of).toBe(store.allRecords().find((r) => r.labs === base.labs)!.id);
    // The kept record's own glucose stays; the SpO2 only the copy had is filled in.
    expect(fieldsRow(store, merged[0].duplicate_of)).toMatchObject({ glucose_mmol_l: 9.6, spo2_pct: 97, imputed: '[]' });
    expect(dataReport(store).fields.nearDuplicates.merged).toBe(1);
    store.close();
  });

  it('threshold: at 0.99 the one-value edit is not a near-duplicate', async () => {
    const { store, summary } = await ingest([base, edited], { near_duplicates: { threshold: 0.99 } });
    expect(summary.nearDuplicates.pairs).toBe(0);
    store.close();
  });
});
