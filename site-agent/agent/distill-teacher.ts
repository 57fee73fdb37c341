// Distillation jobs name their teacher; each site resolves it in its own model folder
// (model.teachers_dir, default the folder holding the base model) or takes an absolute path as is.
// A site without the teacher, with a teacher of another tokenizer, or with a trainer that cannot
// distil declines the round with the reason, before anything is computed.

import { existsSync } from 'node:fs';
import { dirname, isAbsolute, join } from 'node:path';
import type { SiteConfig } from '../config.ts';
import type { WireTask } from './wire.ts';

export type TeacherResolution =
  | { ok: true; dir: string }
  | { ok: false; code: 'FEDLORA_ERR_NOT_FOUND' | 'FEDLORA_ERR_TOKENIZER_MISMATCH' | 'FEDLORA_ERR_POLICY'; reason: string };

export function teachersDir(config: SiteConfig): string {
  return config.model.teachers_dir ?? dirname(config.model.path);
}

/** Where this site has the task's teacher, or why it cannot distil (null: not a distillation task). */
export async function resolveTeacher(config: SiteConfig, task: WireTask): Promise<TeacherResolution | null> {
  const kd = task.train.distill;
  if (!kd?.teacher) return null;
  if (config.trainer.kind !== 'engine') {
    return { ok: false, code: 'FEDLORA_ERR_POLICY', reason: `the job distils from teacher "${kd.teacher}"; this site's trainer (${config.trainer.kind}) does not implement distillation` };
  }
  const dir = isAbsolute(kd.teacher) ? kd.teacher : join(teachersDir(config), kd.teacher);
  if (!existsSync(join(dir, 'config.json'))) {
    return { ok: false, code: 'FEDLORA_ERR_NOT_FOUND', reason: `the job distils from teacher "${kd.teacher}", which this site does not have: no model folder at ${dir} (site config model.teachers_dir)` };
  }
  const { tokenizerIdentity } = await import('../engine/index.ts');
  if (tokenizerIdentity(dir) !== tokenizerIdentity(config.model.path)) {
    return { ok: false, code: 'FEDLORA_ERR_TOKENIZER_MISMATCH', reason: `teacher ${dir} and student ${config.model.path} do not share a tokenizer` };
  }
  return { ok: true, dir };
}
