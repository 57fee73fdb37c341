// The model's suggestions for a record: the serving adapter version ranks candidate diagnoses by
// the mean log-likelihood per token of each name after the record's case text, prompted exactly
// as training examples are (the site's template, then the start of the answer, "诊断：" /
// "Diagnosis: "). Candidates are the site's most frequent diagnoses in the record's language,
// then the code list's names. A ranking is computed once per record and version (label_suggestions)
// and kept whether the doctor sees it or not, so agreement with it can be compared. Scoring waits
// for a slot in the assistant's request queue like an answer does.
import type Database from 'better-sqlite3-multiple-ciphers';
import { fail } from '../../../shared/errors.ts';
import type { ChatMessage } from '../../engine/index.ts';
import type { DataConfig } from '../../data/config-schema.ts';
import { chatExample } from '../../data/dataset/build.ts';
import { TEMPLATES, type CaseField } from '../../data/dataset/prompts.ts';
import { hasCjk } from '../../data/clean.ts';
import type { CaseRecord } from '../../data/types.ts';
import type { CodeList } from '../../data/labels/code-list.ts';
import { diagnosisText, dxKey } from '../../data/labels/keys.ts';
import type { GenerationBackend } from '../backend/types.ts';
import type { WorkbenchConfig } from '../config.ts';
import { currentServing, type ServingVersion } from '../gate/serving.ts';
import type { RequestQueue } from '../queue.ts';

export interface Suggestion {
  diagnosis: string;
  icd10: string | null;
  /** Sum of log p over the name's tokens, and its mean per token (what ranks). */
  logLikelihood: number;
  meanLogLikelihood: number;
}

export interface SuggestionRow {
  id: number;
  recordId: string;
  modelVersion: string;
  items: Suggestion[];
}

export interface SuggestionDeps {
  db: Database.Database;
  codes: CodeList;
  scorer: Pick<GenerationBackend, 'scoreChoices'>;
  /** The version being served (switching the backend to it when the gate decided another). */
  serving: () => Promise<ServingVersion>;
  queue: RequestQueue;
  data: DataConfig;
  /** The site policy's allowed_fields: what of a record the model may read. */
  allowedFields: readonly string[];
  config: WorkbenchConfig['suggestions'];
}

/** The record as a training prompt without its answer, and the answer's start before the diagnosis. */
export function suggestionPrompt(rec: CaseRecord, data: DataConfig, allowedFields: readonly string[]): { messages: ChatMessage[]; prefix: string } {
  // The model must not read the answer: no diagnosis, code or treatment in the case text.
  const allowed = new Set(allowedFields.filter((f) => f !== 'diagnosis' && f !== 'icd10' && f !== 'treatment') as CaseField[]);
  const messages = chatExample(rec, allowed, data).messages.slice(0, -1);
  const lang = data.prompt.lang === 'auto' ? rec.lang : data.prompt.lang;
  return { messages, prefix: (data.prompt.assistantTemplate ?? TEMPLATES[lang].assistant).split('{{diagnosis}}')[0] };
}

/** The site's most frequent diagnoses in the language, then the code list's, `n` distinct names. */
function candidates(d: SuggestionDeps, lang: 'zh' | 'en'): string[] {
  const site = d.db.prepare(`SELECT dx, count(*) AS n FROM (SELECT diagnosis AS dx FROM data_records WHERE diagnosis IS NOT NULL
      UNION ALL SELECT diagnosis FROM label_entries) GROUP BY dx ORDER BY n DESC, dx LIMIT ?`).pluck().all(d.config.candidates * 8) as string[];
  const out = new Map<string, string>();
  const add = (name: string | null) => {
    if (name && out.size < d.config.candidates && hasCjk(name) === (lang === 'zh') && !out.has(diagnosisText(name))) out.set(diagnosisText(name), name);
  };
  for (const dx of site) add(dx);
  for (const e of d.codes.entries) add(lang === 'zh' ? e.zh : e.en);
  return [...out.values()];
}

function cached(db: Database.Database, recordId: string, version: string): SuggestionRow | null {
  const r = db.prepare('SELECT id, record_id, model_version, items FROM label_suggestions WHERE record_id = ? AND model_version = ?').get(recordId, version) as
    | { id: number; record_id: string; model_version: string; items: string }
    | undefined;
  return r ? { id: r.id, recordId: r.record_id, modelVersion: r.model_version, items: JSON.parse(r.items) as Suggestion[] } : null;
}

/** The ranking of the version being served for a record: stored, or computed now and stored. */
export async function suggestionsFor(d: SuggestionDeps, recordId: string, signal?: AbortSignal): Promise<SuggestionRow> {
  if (!d.scorer.scoreChoices) throw fail('FEDLORA_ERR_UNAVAILABLE', 'this backend cannot score diagnoses');
  for (let attempt = 0; ; attempt++) {
    const v = await d.serving();
    const hit = cached(d.db, recordId, v.label);
    if (hit) return hit;
    const json = d.db.prepare('SELECT json FROM data_records WHERE id = ?').pluck().get(recordId) as string | undefined;
    if (json === undefined) throw fail('FEDLORA_ERR_NOT_FOUND', `no record ${JSON.stringify(recordId)} at this site`);
    const rec = JSON.parse(json) as CaseRecord;
    const lang = d.data.prompt.lang === 'auto' ? rec.lang : d.data.prompt.lang;
    const names = candidates(d, lang);
    if (names.length < 2) throw fail('FEDLORA_ERR_UNAVAILABLE', `fewer than two candidate diagnoses in ${lang === 'zh' ? 'Chinese' : 'English'} (site records and code list ${d.codes.source})`);
    const { messages, prefix } = suggestionPrompt(rec, d.data, d.allowedFields);
    const release = await d.queue.acquire(signal);
    let scores;
    try {
      scores = await d.scorer.scoreChoices(messages, prefix, names);
    } finally {
      release();
    }
    // The gate may have switched versions while scoring: rank again with the new one.
    if (currentServing(d.db).seq !== v.seq && attempt === 0) continue;
    const items = names
      .map((diagnosis, i) => ({ diagnosis, icd10: d.codes.codeForName(diagnosis) ?? null, logLikelihood: scores.logLikelihoods[i], meanLogLikelihood: scores.meanLogLikelihoods[i] }))
      .sort((a, b) => b.meanLogLikelihood - a.meanLogLikelihood || (a.diagnosis < b.diagnosis ? -1 : 1));
    d.db.prepare('INSERT OR IGNORE INTO label_suggestions (record_id, model_version, adapter_sha256, top_diagnosis, top_key, items) VALUES (?,?,?,?,?,?)')
      .run(recordId, v.label, v.sha256, items[0].diagnosis, dxKey(items[0].diagnosis, items[0].icd10), JSON.stringify(items));
    return cached(d.db, recordId, v.label)!;
  }
}

/** Rank up to `limit` labelled records the serving version has not ranked (for the queue of
 *  labels the model disagrees with). Returns how many were ranked. */
export async function precomputeSuggestions(d: SuggestionDeps, limit: number): Promise<number> {
  const v = await d.serving();
  const ids = d.db.prepare(`SELECT r.id FROM data_records r
      LEFT JOIN label_suggestions s ON s.record_id = r.id AND s.model_version = ?
      LEFT JOIN label_records lr ON lr.record_id = r.id
      WHERE s.id IS NULL AND ((lr.record_id IS NULL AND r.diagnosis IS NOT NULL) OR lr.status = 'single') ORDER BY r.id LIMIT ?`).pluck().all(v.label, limit) as string[];
  for (const id of ids) await suggestionsFor(d, id);
  return ids.length;
}
