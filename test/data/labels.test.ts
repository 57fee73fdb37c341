// Doctors' labels in a real site.sqlite: Cohen's kappa per doctor pair and overall against a hand
// computation; a double-read record going from one read to dispute to adjudication with its
// provenance (who, when, previous label, suggestion shown, audit entries); the rules that keep
// a dispute for adjudication; codes from the site's CSV code list; agreement with the model's suggestion when shown and when hidden; the report's lines.
import { describe, it, expect, afterAll } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { AuditLog } from '../../shared/audit.ts';
import { openSiteDataStore, type SiteDataStore } from '../../site-agent/data/index.ts';
import type { CaseRecord } from '../../site-agent/data/types.ts';
import { cohenKappa } from '../../site-agent/data/labels/kappa.ts';
import { addLabel, labelHistory, labelRecord, type LabelInput } from '../../site-agent/data/labels/store.ts';
import { labelReport, formatLabelReport } from '../../site-agent/data/labels/report.ts';
import { loadCodeList } from '../../site-agent/data/labels/code-list.ts';
import { readsNeeded } from '../../site-agent/data/labels/status.ts';
import { tempDir } from './helpers.ts';

const t = tempDir('fedlora-labels-');
afterAll(t.cleanup);

function siteWith(name: string, n: number, exportDx: (i: number) => string | undefined = () => undefined): SiteDataStore {
  const store = openSiteDataStore(join(t.dir, name, 'site.sqlite'));
  store.tx(() => {
    for (let i = 1; i <= n; i++) {
      const rec: CaseRecord = { id: `r${String(i).padStart(2, '0')}`, patientKey: `p${i}`, lang: 'en', chiefComplaint: `complaint ${i}`, diagnosis: exportDx(i) };
      store.insertRecord(rec, 'test');
    }
  });
  return store;
}

const read = (recordId: string, user: string, icd10: string, over: Partial<LabelInput> = {}): LabelInput => ({
  recordId, user, kind: 'annotation', diagnosis: icd10, icd10, queue: 'unlabelled', suggestionShown: false, modelVersion: 'base', ...over,
});

describe("Cohen's kappa", () => {
  it('matches the hand computation per doctor pair and overall', async () => {
    const store = siteWith('kappa', 14);
    const db = store.db;
    const codes = await loadCodeList(null);
    const MI = 'I21.9', AF = 'I48.91', PN = 'J18.9';
    // Records 1-10: dr.a then dr.b; records 11-14: dr.a then dr.c. Every record is double-read.
    const ab: [string, string][] = [[MI, MI], [MI, MI], [MI, AF], [AF, AF], [AF, AF], [AF, PN], [PN, PN], [PN, PN], [PN, MI], [MI, MI]];
    const ac: [string, string][] = [[MI, MI], [AF, AF], [PN, PN], [MI, AF]];
    const o = { doubleReadFraction: 1, codes };
    ab.forEach(([a, b], i) => {
      addLabel(db, read(`r${String(i + 1).padStart(2, '0')}`, 'dr.a', a), o);
      addLabel(db, read(`r${String(i + 1).padStart(2, '0')}`, 'dr.b', b), o);
    });
    ac.forEach(([a, c], i) => {
      addLabel(db, read(`r${i + 11}`, 'dr.a', a), o);
      addLabel(db, read(`r${i + 11}`, 'dr.c', c), o);
    });
    const rep = labelReport(db);
    // By hand, dr.a × dr.b (10 records): agree on 1,2,4,5,7,8,10 → p_o = 0.7. dr.a's marginals
    // MI 4, AF 3, PN 3; dr.b's MI 4, AF 3, PN 3 → p_e = .4·.4 + .3·.3 + .3·.3 = 0.34;
    // kappa = (0.7 − 0.34) / 0.66 = 6/11.
    const pAB = rep.agreement.pairs.find((p) => p.doctors.join() === 'dr.a,dr.b')!;
    expect(pAB.n).toBe(10);
    expect(pAB.observed).toBeCloseTo(0.7, 12);
    expect(pAB.expected).toBeCloseTo(0.34, 12);
    expect(pAB.kappa).toBeCloseTo(6 / 11, 12);
    // dr.a × dr.c (4 records): p_o = 3/4; marginals a: MI 2, AF 1, PN 1; c: MI 1, AF 2, PN 1 →
    // p_e = .5·.25 + .25·.5 + .25·.25 = 0.3125; kappa = 0.4375 / 0.6875 = 7/11.
    const pAC = rep.agreement.pairs.find((p) => p.doctors.join() === 'dr.a,dr.c')!;
    expect([pAC.n, pAC.observed, pAC.expected]).toEqual([4, 0.75, 0.3125]);
    expect(pAC.kappa).toBeCloseTo(7 / 11, 12);
    // Overall, first reader (dr.a) vs second reader, 14 records: p_o = 10/14; first MI 6, AF 4,
    // PN 4; second MI 5, AF 5, PN 4 → p_e = (30 + 20 + 16)/196; kappa = (140 − 66)/(196 − 66) = 74/130.
    expect(rep.agreement.overall.n).toBe(14);
    expect(rep.agreement.overall.kappa).toBeCloseTo(74 / 130, 12);
    expect(rep.records).toMatchObject({ agreed: 10, disputed: 4, pending_second: 0 });
    expect(rep.adjudicationQueue).toBe(4);
    const text = formatLabelReport(rep);
    expect(text).toMatch(/dr\.a × dr\.b\s+n\s+10\s+observed 0\.700\s+chance 0\.340\s+kappa 0\.545/);
    expect(text).toMatch(/overall \(1st vs 2nd reader\)\s+n\s+14 .* kappa 0\.569/);
    expect(text).toContain('adjudication queue: 4');
    store.close();
  });

  it('is undefined when both raters used one label throughout, and 1 for perfect agreement on two labels', () => {
    expect(cohenKappa([['x', 'x'], ['x', 'x']]).kappa).toBeNull();
    expect(cohenKappa([['x', 'x'], ['y', 'y']]).kappa).toBe(1);
    expect(cohenKappa([['x', 'y'], ['y', 'x']]).kappa).toBe(-1);
    expect(cohenKappa([]).n).toBe(0);
  });
});

describe('agreement with the model\'s suggestion, shown vs hidden', () => {
  it('counts each doctor\'s latest read of a record against the ranking it was recorded with, by hand', async () => {
    const store = siteWith('suggestion-bias', 9, (i) => (i === 9 ? 'Acute myocardial infarction' : undefined));
    const db = store.db;
    const codes = await loadCodeList(null);
    const MI = 'I21.9', AF = 'I48.91', PN = 'J18.9';
    const o = { doubleReadFraction: 0, codes };
    // The model's top suggestion is MI for every record.
    const sid: Record<string, number> = {};
    for (let i = 1; i <= 9; i++) {
      const id = `r0${i}`;
      sid[id] = Number(db.prepare("INSERT INTO label_suggestions (record_id, model_version, top_diagnosis, top_key, items) VALUES (?, 'base', 'Acute myocardial infarction', 'icd10:I21.9', '[]')").run(id).lastInsertRowid);
    }
    const shown = (id: string, dx: string, over: Partial<LabelInput> = {}) => addLabel(db, read(id, 'dr.a', dx, { suggestionShown: true, suggestionId: sid[id], ...over }), o);
    const hidden = (id: string, dx: string) => addLabel(db, read(id, 'dr.a', dx, { suggestionShown: false, suggestionId: sid[id] }), o);
    // Shown: r01 MI, r02 MI, r03 AF then corrected to MI (the latest read counts), r04 PN → 3 of 4.
    shown('r01', MI); shown('r02', MI); shown('r03', AF); shown('r04', PN);
    shown('r03', MI, { queue: 'mine' });
    // Hidden: r05 AF, r06 MI, r07 PN → 1 of 3; r08 was read with no ranking recorded: not counted.
    hidden('r05', AF); hidden('r06', MI); hidden('r07', PN);
    addLabel(db, read('r08', 'dr.a', MI), o);
    // The disagreement queue always shows the suggestion: not part of the comparison.
    shown('r09', MI, { queue: 'disagree' });
    const rep = labelReport(db);
    expect(rep.suggestions.shown).toMatchObject({ n: 4, agreed: 3, rate: 0.75 });
    expect(rep.suggestions.hidden).toMatchObject({ n: 3, agreed: 1 });
    expect(rep.suggestions.hidden.rate).toBeCloseTo(1 / 3, 12);
    // 95% Wilson intervals by hand (z = 1.96): 3/4 → 0.627 ± 0.327 = [0.30, 0.95]; 1/3 → 0.427 ± 0.365 = [0.06, 0.79].
    expect(formatLabelReport(rep)).toContain("model's top suggestion chosen: shown 3/4 = 0.75 (95% CI 0.30–0.95); hidden 1/3 = 0.33 (95% CI 0.06–0.79)");
    store.close();
  });
});

describe('label provenance and dispute rules', () => {
  it('one read, a disagreeing second read, adjudication by a third doctor; history and audit kept', async () => {
    const store = siteWith('provenance', 3, (i) => (i === 1 ? 'Acute myocardial infarction' : undefined));
    const db = store.db;
    const audit = new AuditLog(db, 'site_audit');
    const codes = await loadCodeList(null);
    const o = { doubleReadFraction: 1, codes, audit };
    db.prepare("INSERT INTO label_suggestions (record_id, model_version, top_diagnosis, top_key, items) VALUES ('r01', 'job/v2', 'Atrial fibrillation', 'icd10:I48.91', '[]')").run();

    const a = addLabel(db, { ...read('r01', 'dr.a', ''), icd10: null, diagnosis: ' atrial   fibrillation ', suggestionShown: true, suggestionId: 1, modelVersion: 'job/v2' }, o);
    // The typed name is matched to the code list; the export's diagnosis is the previous label.
    expect(a.entry).toMatchObject({ diagnosis: 'atrial fibrillation', icd10: 'I48.91', previous_label_id: null, previous_diagnosis: 'Acute myocardial infarction', previous_source: 'export', suggestion_shown: 1, suggestion_id: 1, model_version: 'job/v2', user_name: 'dr.a' });
    expect(a.entry.created_at).toMatch(/^\d{4}-\d\d-\d\dT/);
    expect(a.record).toMatchObject({ needed: 2, status: 'pending_second', final_label_id: null });

    const b = addLabel(db, read('r01', 'dr.b', 'I21.9', { comment: 'troponin high' }), o);
    expect(b.entry).toMatchObject({ previous_label_id: a.entry.id, previous_diagnosis: 'atrial fibrillation', previous_source: 'label', comment: 'troponin high' });
    expect(b.record.status).toBe('disputed');

    // Neither reader adjudicates; a new doctor cannot add a third read to a dispute.
    expect(() => addLabel(db, read('r01', 'dr.b', 'I21.9', { kind: 'adjudication', queue: 'dispute' }), o)).toThrow(/dr\.b read record r01; a doctor who did not read it adjudicates/);
    expect(() => addLabel(db, read('r01', 'dr.c', 'I21.9'), o)).toThrow(/in dispute between two doctors; it is resolved by adjudication/);
    // Only a record in dispute is adjudicated.
    expect(() => addLabel(db, read('r02', 'dr.c', 'I21.9', { kind: 'adjudication', queue: 'dispute' }), o)).toThrow(/FEDLORA_ERR_LABEL_STATE|not labelled; only a record in dispute/);

    const c = addLabel(db, read('r01', 'dr.c', 'I21.9', { kind: 'adjudication', queue: 'dispute' }), o);
    expect(c.record).toMatchObject({ status: 'adjudicated', final_label_id: c.entry.id });
    expect(() => addLabel(db, read('r01', 'dr.a', 'I48.91'), o)).toThrow(/adjudicated; a change to it is a new adjudication/);
    expect(labelHistory(db, 'r01').map((e) => [e.kind, e.user_name, e.icd10, e.previous_label_id])).toEqual([
      ['annotation', 'dr.a', 'I48.91', null], ['annotation', 'dr.b', 'I21.9', a.entry.id], ['adjudication', 'dr.c', 'I21.9', b.entry.id],
    ]);

    // Labels are append-only; every label is in the hash-chained audit log.
    expect(() => db.prepare("UPDATE label_entries SET diagnosis = 'x' WHERE id = ?").run(a.entry.id)).toThrow(/append-only/);
    expect(() => db.prepare('DELETE FROM label_entries WHERE id = ?').run(a.entry.id)).toThrow(/append-only/);
    const logged = db.prepare("SELECT actor, subject, details FROM site_audit WHERE action = 'label_added' ORDER BY seq").all() as { actor: string; subject: string; details: string }[];
    expect(logged.map((l) => [l.actor, l.subject, JSON.parse(l.details).status])).toEqual([['dr.a', 'r01', 'pending_second'], ['dr.b', 'r01', 'disputed'], ['dr.c', 'r01', 'adjudicated']]);
    expect(audit.verify().ok).toBe(true);

    // A doctor correcting their own read replaces it: the record follows the newest read.
    addLabel(db, read('r02', 'dr.a', 'J18.9'), o);
    addLabel(db, read('r02', 'dr.b', 'J44.1'), o);
    expect(labelRecord(db, 'r02')!.status).toBe('disputed');
    const fix = addLabel(db, read('r02', 'dr.b', 'J18.9', { queue: 'mine' }), o);
    expect(fix.record).toMatchObject({ status: 'agreed', final_label_id: fix.entry.id });
    // A code the site's list does not have is refused, naming the list.
    expect(() => addLabel(db, read('r03', 'dr.a', 'Z99.99'), o)).toThrow(/icd10: Z99\.99 is not in the site's code list \(.*icd10-sample\.csv\)/);
    store.close();
  });

  it('sends the configured share of records to two doctors, fixed per record', () => {
    const ids = Array.from({ length: 2000 }, (_, i) => `rec-${i}`);
    const two = ids.filter((id) => readsNeeded(id, 0.25) === 2).length;
    // Binomial(2000, 0.25): sd ≈ 19.4; 5 sd either side.
    expect(Math.abs(two - 500)).toBeLessThan(97);
    expect(ids.every((id) => readsNeeded(id, 0.25) === readsNeeded(id, 0.25))).toBe(true);
    expect(ids.some((id) => readsNeeded(id, 0) === 2)).toBe(false);
    expect(ids.every((id) => readsNeeded(id, 1) === 2)).toBe(true);
  });
});

describe('code list', () => {
  it('reads a site CSV (quoted names, BOM), finds codes by code and name, and names the line of a bad row', async () => {
    const file = join(t.dir, 'codes.csv');
    writeFileSync(file, '\uFEFFcode,name_zh,name_en\nI10,原发性高血压,"Hypertension, essential"\ni21.9 ,急性心肌梗死,Acute myocardial infarction\n');
    const codes = await loadCodeList(file);
    expect(codes.size).toBe(2);
    expect(codes.byCode('I21.9')).toEqual({ code: 'I21.9', zh: '急性心肌梗死', en: 'Acute myocardial infarction' });
    expect(codes.search('i2', 5).map((c) => c.code)).toEqual(['I21.9']);
    expect(codes.search('心肌', 5).map((c) => c.code)).toEqual(['I21.9']);
    expect(codes.search('hypertension', 5).map((c) => c.code)).toEqual(['I10']);
    expect(codes.codeForName('hypertension essential')).toBe('I10');
    writeFileSync(file, 'code,name_en\nI10,Hypertension\n,No code here\n');
    await expect(loadCodeList(file)).rejects.toThrow(/codes\.csv: line 3: empty code/);
    writeFileSync(file, 'icd,name\nI10,x\n');
    await expect(loadCodeList(file)).rejects.toThrow(/codes\.csv: line 1: the header has no "code" column/);
    await expect(loadCodeList(join(t.dir, 'missing.csv'))).rejects.toThrow(/missing\.csv: no such file/);
    const sample = await loadCodeList(null);
    expect(sample.size).toBeGreaterThanOrEqual(25);
    expect(sample.codeForName('心房颤动')).toBe('I48.91');
  });
});
