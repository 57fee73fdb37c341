// Which label each example of a round's training set used: one label_training_sets row (policy,
// counts per split and label source, records left out) and one item per record (label_entries.id,
// or NULL for the export's diagnosis). The items stay at the site; what a round reports to the
// coordinator is the example count, as before.
import type Database from 'better-sqlite3-multiple-ciphers';
import type { AuditLog } from '../../../shared/audit.ts';
import type { Split } from '../store.ts';
import type { LabelSource, TrainingLabelPolicy } from './effective.ts';
import type { TrainingSetCounts } from './report.ts';

export interface LabelUse {
  recordId: string;
  split: Split;
  labelId: number | null;
  source: LabelSource;
}

export interface TrainingSetInput {
  jobId?: string | null;
  round?: number | null;
  taskId?: string | null;
  policy: TrainingLabelPolicy;
  uses: readonly LabelUse[];
  excluded: Record<string, number>;
}

function trainingSetCounts(uses: readonly LabelUse[], excluded: Record<string, number>): TrainingSetCounts {
  const splits: TrainingSetCounts['splits'] = {};
  for (const u of uses) {
    const m = (splits[u.split] ??= {});
    m[u.source] = (m[u.source] ?? 0) + 1;
  }
  return { splits, excluded: { ...excluded } };
}

export function recordTrainingSet(db: Database.Database, s: TrainingSetInput, audit?: AuditLog | null): { id: number; counts: TrainingSetCounts } {
  const counts = trainingSetCounts(s.uses, s.excluded);
  const id = db.transaction(() => {
    const setId = Number(db.prepare('INSERT INTO label_training_sets (job_id, round, task_id, policy, counts) VALUES (?,?,?,?,?)')
      .run(s.jobId ?? null, s.round ?? null, s.taskId ?? null, s.policy, JSON.stringify(counts)).lastInsertRowid);
    const ins = db.prepare('INSERT INTO label_training_set_items (set_id, record_id, split, label_id, source) VALUES (?,?,?,?,?)');
    for (const u of s.uses) ins.run(setId, u.recordId, u.split, u.labelId, u.source);
    audit?.append('site-agent', 'training_set_built', s.jobId ? `${s.jobId}/${s.round}` : `set/${setId}`, { set_id: setId, policy: s.policy, ...counts });
    return setId;
  }).immediate();
  return { id, counts };
}
