// The doctor's confirmation of an answer ("AI suggestion, doctor confirms"): accept, edit or
// reject, with the final diagnosis. Stored in serve_confirmations (shape documented in
// site-agent/site-db.ts and deploy/README.md: these rows become labels for training and evaluation) and
// audited, in one transaction. A later confirmation of the same answer adds a row; the newest
// one is the doctor's current verdict.
import type Database from 'better-sqlite3-multiple-ciphers';
import type { AuditLog } from '../../shared/audit.ts';
import { fail } from '../../shared/errors.ts';
import { sha256Hex } from '../../shared/hash.ts';

export type Verdict = 'accept' | 'edit' | 'reject';

export interface ConfirmationInput {
  answerId: string;
  user: string;
  verdict: Verdict;
  finalText?: string | null;
  finalDiagnosis?: string | null;
  comment?: string | null;
}

export interface Confirmation {
  id: number;
  answer_id: string;
  user_name: string;
  verdict: Verdict;
  final_text: string | null;
  final_diagnosis: string | null;
  comment: string | null;
  question_deid: string | null;
  answer_text: string;
  model_version: string;
  adapter_sha256: string | null;
  created_at: string;
}

export function confirmAnswer(db: Database.Database, audit: AuditLog, c: ConfirmationInput): Confirmation {
  if (c.verdict === 'edit' && !c.finalText?.trim()) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', 'final_text: the edited answer is required when verdict is "edit"');
  return db.transaction(() => {
    const a = db.prepare('SELECT id, question_deid, answer_text, model_version, adapter_sha256 FROM serve_answers WHERE id = ?').get(c.answerId) as
      | { id: string; question_deid: string | null; answer_text: string; model_version: string; adapter_sha256: string | null }
      | undefined;
    if (!a) throw fail('FEDLORA_ERR_NOT_FOUND', `no answer ${JSON.stringify(c.answerId)} at this site (or it is older than the retention period)`);
    const finalText = c.verdict === 'accept' ? a.answer_text : c.verdict === 'edit' ? c.finalText!.trim() : null;
    const id = Number(db.prepare(`INSERT INTO serve_confirmations (answer_id, user_name, verdict, final_text, final_diagnosis, comment, question_deid, answer_text, model_version, adapter_sha256)
        VALUES (?,?,?,?,?,?,?,?,?,?)`).run(a.id, c.user, c.verdict, finalText, c.finalDiagnosis?.trim() || null, c.comment?.trim() || null, a.question_deid, a.answer_text, a.model_version, a.adapter_sha256).lastInsertRowid);
    audit.append(c.user, 'answer_confirmed', a.id, {
      verdict: c.verdict, model_version: a.model_version, adapter_sha256: a.adapter_sha256,
      final_sha256: finalText === null ? null : sha256Hex(finalText), has_diagnosis: !!c.finalDiagnosis?.trim(), confirmation_id: id,
    });
    return db.prepare('SELECT * FROM serve_confirmations WHERE id = ?').get(id) as Confirmation;
  }).immediate();
}

export function confirmationsOf(db: Database.Database, answerId: string): Confirmation[] {
  return db.prepare('SELECT * FROM serve_confirmations WHERE answer_id = ? ORDER BY id').all(answerId) as Confirmation[];
}
