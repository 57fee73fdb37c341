// Training uses the labels the site's policy allows: with policy.training_labels = confirmed the
// dataset builder takes only settled doctors' labels (one doctor, two agreeing, adjudicated, the
// assistant's confirmation), never an export diagnosis, a record waiting for its second read or one
// in dispute; with `any` doctors' labels replace the export's. The agent's workspace records, for a
// round, which label each example used (label_training_sets), and the data report shows it.
import { describe, it, expect, afterAll, beforeAll } from 'vitest';
import { readFileSync } from 'node:fs';
import { AuditLog } from '../../shared/audit.ts';
import { buildDatasets, openSiteDataStore, dataReport, formatReport, type BuiltDatasets } from '../../site-agent/data/index.ts';
import { addLabel, type LabelInput } from '../../site-agent/data/labels/store.ts';
import { confirmAnswer } from '../../site-agent/serve/confirmations.ts';
import type { CaseRecord } from '../../site-agent/data/types.ts';
import { siteFixture, type SiteFixture } from '../site-agent/site-fixture.ts';

let f: SiteFixture;
let recs: CaseRecord[];
const labelled: Record<string, string> = {};
beforeAll(async () => {
  f = await siteFixture({ policy: { min_sites_per_aggregation: 1, allowed_fields: ['department', 'chiefComplaint', 'diagnosis'], training_labels: 'confirmed' } });
  const store = openSiteDataStore(f.db);
  recs = store.allRecords();
  const db = f.db;
  const audit = new AuditLog(db, 'site_audit');
  const read = (i: number, user: string, diagnosis: string, over: Partial<LabelInput> = {}) =>
    addLabel(db, { recordId: recs[i].id, user, kind: 'annotation', diagnosis, queue: 'unlabelled', suggestionShown: false, modelVersion: 'base', ...over }, { doubleReadFraction: over.kind ? 1 : single.has(i) ? 0 : 1, audit });
  const single = new Set([0]);
  read(0, 'dr.a', 'Doctor-corrected diagnosis zero'); // one doctor (not double-read)
  read(1, 'dr.a', 'Agreed one');
  read(1, 'dr.b', 'agreed  ONE.'); // same after normalisation → agreed (stored with one space)
  read(2, 'dr.a', 'Agreed two');
  read(2, 'dr.b', 'Agreed two');
  read(3, 'dr.a', 'Disputed A');
  read(3, 'dr.b', 'Disputed B');
  read(4, 'dr.a', 'First read only');
  read(5, 'dr.a', 'Adjudication A');
  read(5, 'dr.b', 'Adjudication B');
  read(5, 'dr.c', 'Adjudicated five', { kind: 'adjudication', queue: 'dispute' });
  Object.assign(labelled, { 0: 'Doctor-corrected diagnosis zero', 1: 'agreed ONE.', 2: 'Agreed two', 5: 'Adjudicated five' });

  // Two answers of the assistant confirmed on the chat page: one with a final diagnosis, one without.
  const answer = db.prepare(`INSERT INTO serve_answers (id, user_name, created_at, endpoint, model_version, adapter_sha256, prompt_sha256, question_deid, answer_text, answer_sha256, citations, finish_reason, latency_ms)
    VALUES (?, 'dr.d', '2026-01-02T03:04:05.000Z', 'chat', 'job/v1', NULL, 'x', ?, 'Diagnosis: Asthma', 'y', '[]', 'stop', 10)`);
  answer.run('chatcmpl-1', 'Wheeze and cough at night for two weeks, eosinophils high. Diagnosis?');
  answer.run('chatcmpl-2', 'Headache for a day. Diagnosis?');
  confirmAnswer(db, audit, { answerId: 'chatcmpl-1', user: 'dr.d', verdict: 'edit', finalText: 'Asthma exacerbation', finalDiagnosis: 'Acute asthma exacerbation' });
  confirmAnswer(db, audit, { answerId: 'chatcmpl-2', user: 'dr.d', verdict: 'accept' });
});
afterAll(() => f?.cleanup());

/** record id → the diagnosis line of its SFT example, over all splits. */
function targets(ds: BuiltDatasets): Map<string, string> {
  const m = new Map<string, string>();
  for (const s of ['train', 'validation', 'test'] as const) {
    ds[s].forEach((ex, i) => m.set(ds.ids[s][i], ex.messages.at(-1)!.content.split('\n')[0]));
  }
  return m;
}

describe('dataset builder and label policy', () => {
  it('confirmed: only settled doctors\' labels and the assistant\'s confirmation become targets', () => {
    const ds = buildDatasets(openSiteDataStore(f.db), { config: f.config.data, allowedFields: f.config.policy.allowed_fields, trainingLabels: 'confirmed' });
    const got = targets(ds);
    const asthma = f.db.prepare("SELECT id FROM data_records WHERE source = 'assistant:chatcmpl-1'").pluck().get() as string;
    expect(asthma).toMatch(/^[0-9a-f]{64}$/);
    expect(new Set(got.keys())).toEqual(new Set([recs[0].id, recs[1].id, recs[2].id, recs[5].id, asthma]));
    for (const [i, dx] of Object.entries(labelled)) expect(got.get(recs[Number(i)].id)).toBe(`Diagnosis: ${dx}`);
    expect(got.get(asthma)).toBe('Diagnosis: Acute asthma exacerbation');
    expect(ds.labels.excluded).toEqual({ disputed: 1, unconfirmed: recs.length - 5 });
    const sources = Object.fromEntries(ds.labels.uses.map((u) => [u.recordId, u.source]));
    expect(sources).toEqual({ [recs[0].id]: 'doctor', [recs[1].id]: 'agreed', [recs[2].id]: 'agreed', [recs[5].id]: 'adjudicated', [asthma]: 'assistant' });
    expect(ds.labels.uses.every((u) => u.labelId !== null)).toBe(true);
  });

  it('any: doctors\' labels replace the export\'s, the first read counts, a dispute is still left out', () => {
    const ds = buildDatasets(openSiteDataStore(f.db), { config: f.config.data, allowedFields: f.config.policy.allowed_fields, trainingLabels: 'any' });
    const got = targets(ds);
    expect(got.size).toBe(recs.length + 1 - 1);
    expect(got.has(recs[3].id)).toBe(false);
    expect(got.get(recs[0].id)).toBe('Diagnosis: Doctor-corrected diagnosis zero');
    expect(got.get(recs[4].id)).toBe('Diagnosis: First read only');
    expect(got.get(recs[10].id)).toBe(`Diagnosis: ${recs[10].diagnosis}`); // the export's (icd10 is not an allowed field here)
    const bySource = ds.labels.uses.reduce<Record<string, number>>((m, u) => ((m[u.source] = (m[u.source] ?? 0) + 1), m), {});
    expect(bySource).toEqual({ export: recs.length - 6, doctor: 1, agreed: 2, adjudicated: 1, first_read: 1, assistant: 1 });
    expect(ds.labels.excluded).toEqual({ disputed: 1, unconfirmed: 0 });
  });

  it("a round's training set (site policy: confirmed) uses only allowed labels and records which", async () => {
    const ws = f.deps().workspace;
    const { trainFile, numTrain } = await ws.trainingData({ jobId: 'job-x', round: 3, taskId: 'task-1' });
    const lines = readFileSync(trainFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { messages: { role: string; content: string }[] });
    expect(lines.length).toBe(numTrain);
    const allowed = new Set([...Object.values(labelled), 'Acute asthma exacerbation'].map((d) => `Diagnosis: ${d}`));
    for (const ex of lines) expect(allowed.has(ex.messages.at(-1)!.content.split('\n')[0])).toBe(true);

    const set = f.db.prepare("SELECT id, policy, counts FROM label_training_sets WHERE job_id = 'job-x' AND round = 3").get() as { id: number; policy: string; counts: string };
    expect(set.policy).toBe('confirmed');
    const items = f.db.prepare('SELECT record_id, split, label_id, source FROM label_training_set_items WHERE set_id = ?').all(set.id) as { record_id: string; split: string; label_id: number | null; source: string }[];
    expect(items.length).toBe(5);
    expect(items.filter((i) => i.split === 'train').length).toBe(numTrain);
    // Each item names the label entry that is the record's label now.
    for (const i of items) expect(f.db.prepare('SELECT final_label_id FROM label_records WHERE record_id = ?').pluck().get(i.record_id)).toBe(i.label_id);
    const counts = JSON.parse(set.counts) as { splits: Record<string, Record<string, number>>; excluded: Record<string, number> };
    expect(Object.values(counts.splits).flatMap((m) => Object.values(m)).reduce((a, b) => a + b, 0)).toBe(5);
    expect(counts.excluded).toEqual({ disputed: 1, unconfirmed: recs.length - 5 });
    expect(f.log.lines.some((l) => l.msg === 'training set built' && l.obj.training_set === set.id)).toBe(true);

    const rep = dataReport(openSiteDataStore(f.db));
    expect(rep.labels.entries).toEqual({ annotation: 10, adjudication: 1, assistant: 1 });
    expect(rep.labels.records).toEqual({ single: 2, pending_second: 1, agreed: 2, disputed: 1, adjudicated: 1 });
    expect(formatReport(rep)).toMatch(new RegExp(`training set #${set.id} job-x round 3 \\(labels: confirmed\\): .*left out: disputed 1, unconfirmed ${recs.length - 5}`));
  });
});
