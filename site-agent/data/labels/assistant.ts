// The chat page's confirmations (serve_confirmations: accept, edit or reject with the doctor's
// final diagnosis) arrive as labels: the question's de-identified text becomes a record (one per
// distinct question, source "assistant:<answer id>") and the final diagnosis a label of kind
// 'assistant' by the confirming doctor, at the confirmation's time, with the model's answer counted
// as the suggestion shown. A confirmation without a final diagnosis says nothing about the
// diagnosis, and one whose question was kept as a hash only (serve.audit.store_prompt: hash) has
// no text to learn from: both are counted and left out. Each confirmation is taken once
// (label_entries.confirmation_id is unique), so this runs whenever labels are read.
import type Database from 'better-sqlite3-multiple-ciphers';
import { sha256Hex } from '../../../shared/hash.ts';
import { hasCjk } from '../clean.ts';
import { openSiteDataStore } from '../store.ts';
import type { CaseRecord } from '../types.ts';
import type { CodeList } from './code-list.ts';
import { addLabel } from './store.ts';

export interface ConfirmationImport {
  labels: number;
  /** Confirmations left out: no final diagnosis, or no question text at the site. */
  withoutDiagnosis: number;
  withoutText: number;
}

export function importAssistantConfirmations(db: Database.Database, o: { codes?: CodeList | null } = {}): ConfirmationImport {
  const rows = db.prepare(`SELECT c.id, c.answer_id, c.user_name, c.verdict, c.final_diagnosis, c.question_deid, c.model_version, c.created_at
      FROM serve_confirmations c LEFT JOIN label_entries e ON e.confirmation_id = c.id
      WHERE e.id IS NULL AND c.final_diagnosis IS NOT NULL AND c.question_deid IS NOT NULL ORDER BY c.id`).all() as {
    id: number; answer_id: string; user_name: string; verdict: string; final_diagnosis: string; question_deid: string; model_version: string; created_at: string;
  }[];
  const store = openSiteDataStore(db);
  store.tx(() => {
    for (const c of rows) {
      const question = c.question_deid.trim();
      const rec: CaseRecord = { id: sha256Hex(`assistant-question:${question}`), patientKey: `assistant:${sha256Hex(question).slice(0, 32)}`, lang: hasCjk(question) ? 'zh' : 'en', history: question, diagnosis: c.final_diagnosis };
      store.insertRecord(rec, `assistant:${c.answer_id}`);
      addLabel(db, {
        recordId: rec.id, user: c.user_name, kind: 'assistant', diagnosis: c.final_diagnosis, queue: 'assistant', suggestionShown: true,
        modelVersion: c.model_version, confirmationId: c.id, comment: `assistant answer ${c.answer_id}: ${c.verdict}`, createdAt: c.created_at,
      }, { doubleReadFraction: 0, codes: o.codes });
    }
  });
  const left = db.prepare(`SELECT sum(c.final_diagnosis IS NULL) AS nodx, sum(c.final_diagnosis IS NOT NULL AND c.question_deid IS NULL) AS notext
      FROM serve_confirmations c`).get() as { nodx: number | null; notext: number | null };
  return { labels: rows.length, withoutDiagnosis: left.nodx ?? 0, withoutText: left.notext ?? 0 };
}
