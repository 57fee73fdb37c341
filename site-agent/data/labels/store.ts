// Adding a doctor's label: one append-only row in label_entries with its provenance (who, when,
// the record's label before it, the queue, whether the model's suggestions were shown and which),
// the record's status recomputed in label_records, and an entry in the site's hash-chained audit
// log — all in one transaction, before the caller answers.
import type Database from 'better-sqlite3-multiple-ciphers';
import type { AuditLog } from '../../../shared/audit.ts';
import { fail } from '../../../shared/errors.ts';
import { sha256Hex } from '../../../shared/hash.ts';
import type { CodeList } from './code-list.ts';
import { dxKey, normalizeCode } from './keys.ts';
import { latestReads, readsNeeded, recordStatus, type LabelKind, type LabelStatus } from './status.ts';

export type { LabelKind, LabelStatus };

export interface LabelInput {
  recordId: string;
  user: string;
  kind: LabelKind;
  diagnosis: string;
  icd10?: string | null;
  /** Where the doctor labelled it: a workbench queue, or 'assistant'. */
  queue: string;
  suggestionShown: boolean;
  /** The label_suggestions row of the model's ranking for this record (shown or not). */
  suggestionId?: number | null;
  /** The adapter version the site served when the label was given. */
  modelVersion: string;
  confirmationId?: number | null;
  comment?: string | null;
  /** When the doctor gave it (default now; an assistant confirmation keeps its own time). */
  createdAt?: string;
}

export interface LabelEntry {
  id: number;
  record_id: string;
  kind: LabelKind;
  user_name: string;
  diagnosis: string;
  icd10: string | null;
  dx_key: string;
  previous_label_id: number | null;
  previous_diagnosis: string | null;
  previous_source: 'export' | 'label' | null;
  queue: string;
  suggestion_shown: 0 | 1;
  suggestion_id: number | null;
  model_version: string;
  confirmation_id: number | null;
  comment: string | null;
  created_at: string;
}

export interface LabelRecord {
  record_id: string;
  needed: 1 | 2;
  status: LabelStatus;
  final_label_id: number | null;
  updated_at: string;
}

export interface AddLabelOptions {
  /** Share of records read by two doctors (serve.workbench.double_read_fraction). */
  doubleReadFraction: number;
  audit?: AuditLog | null;
  /** Resolves typed names to codes and checks picked codes. */
  codes?: CodeList | null;
}

/** The code a label carries: the one picked (it must be in the site's list), else the code whose name was typed. */
function resolveCode(l: LabelInput, codes: CodeList | null | undefined): string | null {
  if (l.icd10) {
    const code = normalizeCode(l.icd10);
    if (codes && !codes.byCode(code)) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `icd10: ${code} is not in the site's code list (${codes.source})`);
    return code;
  }
  return codes?.codeForName(l.diagnosis) ?? null;
}

export function labelRecord(db: Database.Database, recordId: string): LabelRecord | null {
  return (db.prepare('SELECT * FROM label_records WHERE record_id = ?').get(recordId) as LabelRecord | undefined) ?? null;
}

export function labelHistory(db: Database.Database, recordId: string): LabelEntry[] {
  return db.prepare('SELECT * FROM label_entries WHERE record_id = ? ORDER BY id').all(recordId) as LabelEntry[];
}

/** Doctors whose reads (not adjudications) the record has. */
function readersOf(db: Database.Database, recordId: string): string[] {
  return latestReads(labelHistory(db, recordId).map((e) => ({ id: e.id, kind: e.kind, user: e.user_name, key: e.dx_key }))).map((e) => e.user);
}

function checkAllowed(db: Database.Database, l: LabelInput, state: LabelRecord | null): void {
  if (l.kind === 'adjudication') {
    if (!state || (state.status !== 'disputed' && state.status !== 'adjudicated')) {
      throw fail('FEDLORA_ERR_LABEL_STATE', `record ${l.recordId} is ${state ? state.status : 'not labelled'}; only a record in dispute is adjudicated`);
    }
    if (readersOf(db, l.recordId).includes(l.user)) throw fail('FEDLORA_ERR_PERMISSION', `${l.user} read record ${l.recordId}; a doctor who did not read it adjudicates`);
    return;
  }
  if (state?.status === 'adjudicated') throw fail('FEDLORA_ERR_LABEL_STATE', `record ${l.recordId} was adjudicated; a change to it is a new adjudication`);
  if (state?.status === 'disputed' && !readersOf(db, l.recordId).includes(l.user)) {
    throw fail('FEDLORA_ERR_LABEL_STATE', `record ${l.recordId} is in dispute between two doctors; it is resolved by adjudication`);
  }
}

export function addLabel(db: Database.Database, l: LabelInput, o: AddLabelOptions): { entry: LabelEntry; record: LabelRecord } {
  const diagnosis = l.diagnosis.normalize('NFC').trim().replace(/\s+/g, ' ');
  if (!diagnosis) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', 'diagnosis: empty');
  if (diagnosis.length > 500) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `diagnosis: ${diagnosis.length} characters (at most 500)`);
  const icd10 = resolveCode({ ...l, diagnosis }, o.codes);
  return db.transaction(() => {
    const rec = db.prepare('SELECT diagnosis FROM data_records WHERE id = ?').get(l.recordId) as { diagnosis: string | null } | undefined;
    if (!rec) throw fail('FEDLORA_ERR_NOT_FOUND', `no record ${JSON.stringify(l.recordId)} at this site`);
    const state = labelRecord(db, l.recordId);
    checkAllowed(db, l, state);
    if (l.suggestionId != null) {
      const s = db.prepare('SELECT record_id FROM label_suggestions WHERE id = ?').pluck().get(l.suggestionId) as string | undefined;
      if (s !== l.recordId) throw fail('FEDLORA_ERR_INVALID_ARGUMENT', `suggestion_id: ${l.suggestionId} is not a suggestion for record ${l.recordId}`);
    }
    const prev = db.prepare('SELECT id, diagnosis FROM label_entries WHERE record_id = ? ORDER BY id DESC LIMIT 1').get(l.recordId) as { id: number; diagnosis: string } | undefined;
    const previous = prev ? { id: prev.id, diagnosis: prev.diagnosis, source: 'label' } : rec.diagnosis ? { id: null, diagnosis: rec.diagnosis, source: 'export' } : { id: null, diagnosis: null, source: null };
    const id = Number(db.prepare(`INSERT INTO label_entries (record_id, kind, user_name, diagnosis, icd10, dx_key, previous_label_id, previous_diagnosis, previous_source,
        queue, suggestion_shown, suggestion_id, model_version, confirmation_id, comment, created_at)
      VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?, coalesce(?, strftime('%Y-%m-%dT%H:%M:%fZ','now')))`).run(
      l.recordId, l.kind, l.user, diagnosis, icd10, dxKey(diagnosis, icd10), previous.id, previous.diagnosis, previous.source,
      l.queue, l.suggestionShown ? 1 : 0, l.suggestionId ?? null, l.modelVersion, l.confirmationId ?? null, l.comment?.trim() || null, l.createdAt ?? null,
    ).lastInsertRowid);
    const needed: 1 | 2 = state?.needed ?? (l.kind === 'annotation' ? readsNeeded(l.recordId, o.doubleReadFraction) : 1);
    const entries = labelHistory(db, l.recordId).map((e) => ({ id: e.id, kind: e.kind, user: e.user_name, key: e.dx_key }));
    const { status, finalLabelId } = recordStatus(needed, entries);
    db.prepare(`INSERT INTO label_records (record_id, needed, status, final_label_id, updated_at) VALUES (?,?,?,?, strftime('%Y-%m-%dT%H:%M:%fZ','now'))
      ON CONFLICT (record_id) DO UPDATE SET status = excluded.status, final_label_id = excluded.final_label_id, updated_at = excluded.updated_at`).run(l.recordId, needed, status, finalLabelId);
    o.audit?.append(l.user, 'label_added', l.recordId, {
      label_id: id, kind: l.kind, queue: l.queue, status, previous_label_id: previous.id, suggestion_shown: l.suggestionShown,
      suggestion_id: l.suggestionId ?? null, icd10, diagnosis_sha256: sha256Hex(diagnosis),
    });
    return { entry: db.prepare('SELECT * FROM label_entries WHERE id = ?').get(id) as LabelEntry, record: labelRecord(db, l.recordId)! };
  }).immediate();
}
