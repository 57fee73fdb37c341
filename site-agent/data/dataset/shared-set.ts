// A test set shared by the whole consortium (e.g. the demo's balanced set, or a curated public
// set): JSONL cases with the fields a prompt may use and the diagnosis, no identifiers. Each site
// turns them into multiple-choice items with its own prompt templates and allowed fields, so the
// global and local-only adapters are scored as the site's own held-out items are; the options are
// drawn from the set's own diagnoses, so every site asks the same questions.

import { readFileSync } from 'node:fs';
import type { CaseRecord, ChoiceItem } from '../types.ts';
import type { DataConfig } from '../config-schema.ts';
import { CASE_FIELDS, type CaseField } from './prompts.ts';
import { choiceItem, DEFAULT_ALLOWED } from './build.ts';
import { ageBand, normalizeSex } from '../ingest/subgroups.ts';
import { fail } from '../../../shared/errors.ts';

const TEXT_FIELDS: Record<string, keyof CaseRecord> = { department: 'department', chief_complaint: 'chiefComplaint', exam: 'exam', labs: 'labs', diagnosis: 'diagnosis', icd10: 'icd10' };

/** The cases of a shared set file; a bad line is FEDLORA_ERR_DATASET naming file, line and field. */
export function readSharedSet(file: string): CaseRecord[] {
  const lines = readFileSync(file, 'utf8').split('\n');
  const out: CaseRecord[] = [];
  lines.forEach((line, i) => {
    if (!line.trim()) return;
    const where = `${file}:${i + 1}`;
    let o: Record<string, unknown>;
    try {
      o = JSON.parse(line) as Record<string, unknown>;
    } catch (e) {
      throw fail('FEDLORA_ERR_DATASET', `${where}: not JSON (${(e as Error).message})`);
    }
    if (o.lang !== 'zh' && o.lang !== 'en') throw fail('FEDLORA_ERR_DATASET', `${where}: field lang must be "zh" or "en"`);
    if (typeof o.diagnosis !== 'string' || !o.diagnosis.trim()) throw fail('FEDLORA_ERR_DATASET', `${where}: field diagnosis is missing`);
    const rec: CaseRecord = { id: `shared-${i + 1}`, patientKey: `shared-${i + 1}`, lang: o.lang };
    for (const [k, f] of Object.entries(TEXT_FIELDS)) {
      if (o[k] === undefined) continue;
      if (typeof o[k] !== 'string') throw fail('FEDLORA_ERR_DATASET', `${where}: field ${k} must be a string`);
      (rec as unknown as Record<string, string>)[f] = o[k] as string;
    }
    const sex = normalizeSex(typeof o.sex === 'string' ? o.sex : undefined);
    const band = ageBand(typeof o.age === 'string' || typeof o.age === 'number' ? o.age : undefined);
    out.push({ ...rec, ...(sex ? { sex } : {}), ...(band ? { ageBand: band } : {}) });
  });
  if (out.length === 0) throw fail('FEDLORA_ERR_DATASET', `${file}: the shared test set has no cases`);
  return out;
}

/** Multiple-choice items of a shared set, rendered with the site's templates and allowed fields. */
export function sharedChoiceItems(cases: CaseRecord[], cfg: DataConfig, allowedFields: readonly string[] = DEFAULT_ALLOWED): ChoiceItem[] {
  const allowed = new Set(allowedFields.filter((f): f is CaseField => (CASE_FIELDS as readonly string[]).includes(f)));
  const pool = [...new Set([...cases.map((c) => c.diagnosis!), ...cfg.choices.extraDiagnoses])].sort();
  return cases.map((c) => choiceItem(c, pool, allowed, cfg)).filter((x): x is ChoiceItem => x !== null);
}
