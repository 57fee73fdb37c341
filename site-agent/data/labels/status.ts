// A labelled record's status from its labels. Each doctor's newest read counts (a correction
// replaces the doctor's earlier read); an adjudication settles the record whatever the reads say.
//   needed 1: one read → single (the newest read of any doctor is the label)
//   needed 2: one doctor → pending_second; two or more doctors who agree → agreed; who do not →
//             disputed (no label until a third doctor adjudicates)
import { hashUnit } from '../../../shared/hash.ts';

export type LabelKind = 'annotation' | 'adjudication' | 'assistant';
export type LabelStatus = 'pending_second' | 'single' | 'agreed' | 'disputed' | 'adjudicated';

export interface StatusEntry {
  id: number;
  kind: LabelKind;
  user: string;
  key: string;
}

/** The newest read of each doctor (annotations and assistant confirmations), oldest doctor first. */
export function latestReads(entries: readonly StatusEntry[]): StatusEntry[] {
  const byUser = new Map<string, StatusEntry>();
  const first = new Map<string, number>();
  for (const e of [...entries].sort((a, b) => a.id - b.id)) {
    if (e.kind === 'adjudication') continue;
    if (!first.has(e.user)) first.set(e.user, e.id);
    byUser.set(e.user, e);
  }
  return [...byUser.values()].sort((a, b) => first.get(a.user)! - first.get(b.user)!);
}

export function recordStatus(needed: 1 | 2, entries: readonly StatusEntry[]): { status: LabelStatus; finalLabelId: number | null } {
  const adjudications = entries.filter((e) => e.kind === 'adjudication');
  if (adjudications.length) return { status: 'adjudicated', finalLabelId: Math.max(...adjudications.map((e) => e.id)) };
  const reads = latestReads(entries);
  if (reads.length === 0) throw new Error('recordStatus: a labelled record without any read');
  const newest = Math.max(...reads.map((e) => e.id));
  if (needed === 1) return { status: 'single', finalLabelId: newest };
  if (reads.length < 2) return { status: 'pending_second', finalLabelId: null };
  return reads.every((e) => e.key === reads[0].key) ? { status: 'agreed', finalLabelId: newest } : { status: 'disputed', finalLabelId: null };
}

/** Whether a record goes to two doctors: a fixed function of its id, so the first doctor's
 *  queue cannot choose, and the share of double-read records is `fraction`. */
export function readsNeeded(recordId: string, fraction: number): 1 | 2 {
  const u = hashUnit(`double-read:${recordId}`);
  return u < fraction ? 2 : 1;
}
