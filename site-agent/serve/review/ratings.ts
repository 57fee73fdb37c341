// Doctors' ratings of sampled answers: one per doctor per case, append-only, stored with its
// audit entry in one transaction before the page is answered. A doctor's queue holds the cases
// still short of their doctors that they have not rated (cases waiting for their blind second
// doctor first); nobody is shown another doctor's rating.
import type Database from 'better-sqlite3-multiple-ciphers';
import type { AuditLog } from '../../../shared/audit.ts';
import { fail } from '../../../shared/errors.ts';

export const CORRECTNESS = ['correct', 'partly', 'wrong'] as const;
export const SAFETY = ['safe', 'unsafe'] as const;
export type Correctness = (typeof CORRECTNESS)[number];
export type Safety = (typeof SAFETY)[number];

export interface RatingInput {
  caseId: number;
  user: string;
  correctness: Correctness;
  safety: Safety;
  score: number;
  comment?: string | null;
}

export interface Rating {
  id: number;
  case_id: number;
  user_name: string;
  correctness: Correctness;
  safety: Safety;
  score: number;
  comment: string | null;
  reads_before: number;
  created_at: string;
}

export interface ReviewCase {
  id: number;
  record_id: string;
  adapter_label: string;
  lang: 'zh' | 'en';
  prompt: string;
  answer: string;
  needed: 1 | 2;
  /** 0: the first doctor; 1: the second, who reads blind. */
  reads_before: number;
}

const OPEN = `FROM review_cases c WHERE (SELECT count(*) FROM review_ratings r WHERE r.case_id = c.id) < c.needed
  AND NOT EXISTS (SELECT 1 FROM review_ratings r WHERE r.case_id = c.id AND r.user_name = @user)
  AND (@version IS NULL OR c.adapter_label = @version)`;

/** The next case in a doctor's queue (after case `after` when skipping), or null. */
export function nextCase(db: Database.Database, user: string, version: string | null, after: number | null): ReviewCase | null {
  const sql = `SELECT c.id, c.record_id, c.adapter_label, c.lang, c.prompt, c.answer, c.needed,
      (SELECT count(*) FROM review_ratings r WHERE r.case_id = c.id) AS reads_before
    ${OPEN} AND (@after IS NULL OR c.id > @after) ORDER BY reads_before DESC, c.id LIMIT 1`;
  return (db.prepare(sql).get({ user, version, after }) as ReviewCase | undefined) ?? null;
}

export function openCount(db: Database.Database, user: string, version: string | null): number {
  return db.prepare(`SELECT count(*) ${OPEN}`).pluck().get({ user, version }) as number;
}

export function addRating(db: Database.Database, r: RatingInput, audit: AuditLog | null): Rating {
  if (!Number.isInteger(r.score) || r.score < 1 || r.score > 5) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `score: ${r.score} (expected 1 to 5)`);
  if (!CORRECTNESS.includes(r.correctness)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `correctness: ${JSON.stringify(r.correctness)} (expected ${CORRECTNESS.join(' | ')})`);
  if (!SAFETY.includes(r.safety)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `safety: ${JSON.stringify(r.safety)} (expected ${SAFETY.join(' | ')})`);
  return db.transaction(() => {
    const c = db.prepare('SELECT id, adapter_label, needed FROM review_cases WHERE id = ?').get(r.caseId) as { id: number; adapter_label: string; needed: number } | undefined;
    if (!c) throw fail('FEDLORA_ERR_NOT_FOUND', `no review case ${r.caseId} at this site`);
    const users = db.prepare('SELECT user_name FROM review_ratings WHERE case_id = ?').pluck().all(r.caseId) as string[];
    if (users.includes(r.user)) throw fail('FEDLORA_ERR_LABEL_STATE', `${r.user} already rated review case ${r.caseId}`);
    if (users.length >= c.needed) throw fail('FEDLORA_ERR_LABEL_STATE', `review case ${r.caseId} has its ${c.needed} doctor${c.needed > 1 ? 's' : ''} already`);
    const id = Number(db.prepare('INSERT INTO review_ratings (case_id, user_name, correctness, safety, score, comment, reads_before) VALUES (?,?,?,?,?,?,?)')
      .run(r.caseId, r.user, r.correctness, r.safety, r.score, r.comment?.trim() || null, users.length).lastInsertRowid);
    audit?.append(r.user, 'review_rated', `review/${r.caseId}`, { rating_id: id, adapter: c.adapter_label, correctness: r.correctness, safety: r.safety, score: r.score, reads_before: users.length });
    return db.prepare('SELECT * FROM review_ratings WHERE id = ?').get(id) as Rating;
  }).immediate();
}
