// The workbench's queues, per doctor, in record-id order (records waiting for their second read
// first, so double reads finish):
//   unlabelled  records with no label at all, and double-read records whose first read was by
//               someone else (the second doctor reads blind: neither the first read nor the
//               export's diagnosis is shown)
//   disagree    records whose label (the export's, or one doctor's) is not the serving version's
//               top suggestion; a record leaves it once a doctor reviewed it from this queue
//               under this version, or for a doctor who already labelled it under this version
//   dispute     two doctors disagree; the adjudication queue of every doctor who did not read it
import type Database from 'better-sqlite3-multiple-ciphers';
import type { CodeList } from '../../data/labels/code-list.ts';
import { dxKey } from '../../data/labels/keys.ts';

export const QUEUES = ['unlabelled', 'disagree', 'dispute'] as const;
export type Queue = (typeof QUEUES)[number];

const WHERE: Record<Queue, string> = {
  unlabelled: `((lr.record_id IS NULL AND r.diagnosis IS NULL)
      OR (lr.status = 'pending_second' AND NOT EXISTS (SELECT 1 FROM label_entries e WHERE e.record_id = r.id AND e.user_name = @user)))`,
  disagree: `EXISTS (SELECT 1 FROM label_suggestions s WHERE s.record_id = r.id AND s.model_version = @version AND s.top_key !=
        CASE WHEN lr.record_id IS NULL THEN workbench_dx_key(r.diagnosis, json_extract(r.json, '$.icd10'))
             ELSE (SELECT f.dx_key FROM label_entries f WHERE f.id = lr.final_label_id) END)
      AND ((lr.record_id IS NULL AND r.diagnosis IS NOT NULL) OR lr.status = 'single')
      AND NOT EXISTS (SELECT 1 FROM label_entries e WHERE e.record_id = r.id AND e.model_version = @version AND (e.queue = 'disagree' OR e.user_name = @user))`,
  dispute: `lr.status = 'disputed' AND NOT EXISTS (SELECT 1 FROM label_entries e WHERE e.record_id = r.id AND e.user_name = @user AND e.kind != 'adjudication')`,
};

const FROM = 'FROM data_records r LEFT JOIN label_records lr ON lr.record_id = r.id';

/** The key an export's diagnosis is compared with (its code, or the code list's code for its name). */
export function registerDxKey(db: Database.Database, codes: CodeList): void {
  db.function('workbench_dx_key', { deterministic: true }, (dx: unknown, icd10: unknown) =>
    dxKey(String(dx ?? ''), typeof icd10 === 'string' && icd10 ? icd10 : codes.codeForName(String(dx ?? '')) ?? null));
}

export function nextInQueue(db: Database.Database, q: Queue, user: string, version: string, after: string | null): string | null {
  const sql = `SELECT r.id ${FROM} WHERE ${WHERE[q]} AND (@after IS NULL OR r.id > @after) ORDER BY (lr.status IS NOT 'pending_second'), r.id LIMIT 1`;
  return (db.prepare(sql).pluck().get({ user, version, after }) as string | undefined) ?? null;
}

export function queueCounts(db: Database.Database, user: string, version: string): Record<Queue, number> {
  const out = {} as Record<Queue, number>;
  for (const q of QUEUES) out[q] = db.prepare(`SELECT count(*) ${FROM} WHERE ${WHERE[q]}`).pluck().get({ user, version }) as number;
  return out;
}

export function inQueue(db: Database.Database, q: Queue, user: string, version: string, recordId: string): boolean {
  return db.prepare(`SELECT 1 ${FROM} WHERE ${WHERE[q]} AND r.id = @id`).pluck().get({ user, version, id: recordId }) === 1;
}
