// What a doctor sees of a record in a queue: its case fields de-identified (records ingested with
// de-identification switched off go through the site's de-identifier before they are shown), the
// label under review (disagreement queue: the current label; "my labels": the doctor's own read),
// the two reads in dispute (adjudication), and the model's suggestions when this read shows them.
// In the unlabelled queue whether a read shows them is a fixed function of record and doctor with
// the configured share; the review queues always show them.
import type Database from 'better-sqlite3-multiple-ciphers';
import { fail } from '../../../shared/errors.ts';
import type { CaseRecord } from '../../data/types.ts';
import { labelHistory } from '../../data/labels/store.ts';
import { latestReads } from '../../data/labels/status.ts';
import { inQueue, type Queue } from './queues.ts';
import { suggestionsFor, type Suggestion, type SuggestionDeps } from './suggestions.ts';
import { hashUnit } from '../../../shared/hash.ts';

export type ViewQueue = Queue | 'mine';

export const SHOWN_FIELDS = ['chiefComplaint', 'history', 'exam', 'labs', 'treatment'] as const;

export interface RecordView {
  id: string;
  queue: ViewQueue;
  lang: 'zh' | 'en';
  department: string | null;
  fields: { field: (typeof SHOWN_FIELDS)[number]; text: string }[];
  /** The label under review: the current one (disagree) or the doctor's own (mine). */
  label: { diagnosis: string; icd10: string | null; source: string; by: string | null } | null;
  /** Adjudication: each doctor's read. */
  reads: { user: string; diagnosis: string; icd10: string | null; at: string }[];
  /** The model's ranking (its id also when hidden: the label records which one it was). */
  suggestions: { id: number; shown: boolean; modelVersion: string; items: Suggestion[] | null } | null;
  suggestionsError: string | null;
}

export interface ViewDeps {
  db: Database.Database;
  deidentify: (text: string) => string;
  /** null when suggestions are off or cannot be computed. */
  suggestions: SuggestionDeps | null;
  showFraction: number;
  version: () => string;
}

export function showsSuggestions(queue: ViewQueue, recordId: string, user: string, fraction: number): boolean {
  if (queue === 'disagree' || queue === 'dispute') return true;
  const u = hashUnit(`show-suggestions:${recordId}:${user}`);
  return u < fraction;
}

/** The record must be in the doctor's queue (or, for "mine", read by them): a second reader never
 *  reaches the first read through another queue. */
export function checkAccess(db: Database.Database, queue: ViewQueue, user: string, version: string, recordId: string): void {
  const ok = queue === 'mine'
    ? db.prepare("SELECT 1 FROM label_entries WHERE record_id = ? AND user_name = ? AND kind = 'annotation'").pluck().get(recordId, user) === 1
    : inQueue(db, queue, user, version, recordId);
  if (!ok) throw fail('FEDLORA_ERR_NOT_FOUND', `record ${recordId} is not in ${user}'s ${queue === 'mine' ? 'labels' : `${queue} queue`}`);
}

function currentLabel(db: Database.Database, recordId: string, rec: CaseRecord, queue: ViewQueue, user: string): RecordView['label'] {
  if (queue === 'mine') {
    const e = db.prepare("SELECT diagnosis, icd10 FROM label_entries WHERE record_id = ? AND user_name = ? AND kind = 'annotation' ORDER BY id DESC LIMIT 1").get(recordId, user) as { diagnosis: string; icd10: string | null };
    return { ...e, source: 'mine', by: user };
  }
  if (queue !== 'disagree') return null;
  const f = db.prepare('SELECT e.diagnosis, e.icd10, e.user_name, e.kind FROM label_records lr JOIN label_entries e ON e.id = lr.final_label_id WHERE lr.record_id = ?').get(recordId) as
    | { diagnosis: string; icd10: string | null; user_name: string; kind: string }
    | undefined;
  if (f) return { diagnosis: f.diagnosis, icd10: f.icd10, source: f.kind === 'assistant' ? 'assistant' : 'doctor', by: f.user_name };
  return { diagnosis: rec.diagnosis ?? '', icd10: rec.icd10 ?? null, source: 'export', by: null };
}

export async function recordView(d: ViewDeps, recordId: string, user: string, queue: ViewQueue): Promise<RecordView> {
  checkAccess(d.db, queue, user, d.version(), recordId);
  const row = d.db.prepare('SELECT r.json, coalesce(i.deid_enabled, 1) AS deid FROM data_records r LEFT JOIN data_ingest_runs i ON i.id = r.run_id WHERE r.id = ?').get(recordId) as { json: string; deid: number };
  const rec = JSON.parse(row.json) as CaseRecord;
  const shown = (s: string) => (row.deid ? s : d.deidentify(s));
  const reads = queue === 'dispute'
    ? latestReads(labelHistory(d.db, recordId).map((e) => ({ id: e.id, kind: e.kind, user: e.user_name, key: e.dx_key }))).map((r) => {
        const e = d.db.prepare('SELECT user_name, diagnosis, icd10, created_at FROM label_entries WHERE id = ?').get(r.id) as { user_name: string; diagnosis: string; icd10: string | null; created_at: string };
        return { user: e.user_name, diagnosis: e.diagnosis, icd10: e.icd10, at: e.created_at };
      })
    : [];
  const view: RecordView = {
    id: recordId, queue, lang: rec.lang, department: rec.department ?? null,
    fields: SHOWN_FIELDS.filter((f) => rec[f]).map((f) => ({ field: f, text: shown(rec[f]!) })),
    label: currentLabel(d.db, recordId, rec, queue, user), reads, suggestions: null, suggestionsError: null,
  };
  if (d.suggestions) {
    try {
      const s = await suggestionsFor(d.suggestions, recordId);
      const show = showsSuggestions(queue, recordId, user, d.showFraction);
      view.suggestions = { id: s.id, shown: show, modelVersion: s.modelVersion, items: show ? s.items.slice(0, d.suggestions.config.top_k) : null };
    } catch (e) {
      view.suggestionsError = (e as Error).message;
    }
  }
  return view;
}
