// How close a student (base model + adapter) is to its teacher on some examples: the mean KL over the
// teacher's stored support at T (the quantity the distillation head trains, computed in float64 here)
// and how often the student's most likely next token is the teacher's.

import type { AdapterWeights, LoraConfig } from '../../../shared/lora/types.ts';
import type { SessionOptions } from '../session.ts';
import type { Checkpoint, Example } from '../types.ts';
import { openLogitsPass } from './logits-pass.ts';
import { storedRows, targetPositions, type TeacherStore } from './teacher-logits.ts';
import { argmax, klToStudent } from './topk-math.ts';

export interface TeacherGap {
  /** Mean KL(teacher || student) over every stored position. */
  kl: number;
  /** Share of positions where the student's argmax is the teacher's top-1 token. */
  top1Agreement: number;
  /** KL per position, in store order (paired comparisons of two students). */
  perPosition: Float64Array;
  positions: number;
}

export async function teacherGap(
  student: Checkpoint, adapter: { weights: AdapterWeights; lora: LoraConfig } | null, examples: Example[], store: TeacherStore, opts: SessionOptions = {},
): Promise<TeacherGap> {
  const V = student.config.vocabSize;
  const P = store.offsets[store.offsets.length - 1];
  const perPosition = new Float64Array(P);
  let agree = 0;
  const pass = openLogitsPass(student, adapter, opts);
  try {
    for (const [e, ex] of examples.entries()) {
      const z = await pass.run(ex.inputIds);
      const rows = storedRows(store, e);
      targetPositions(ex).forEach((t, j) => {
        perPosition[store.offsets[e] + j] = klToStudent(rows[j], z, t * V, V, store.temperature);
        if (argmax(z, t * V, V) === rows[j].ids[0]) agree++;
      });
    }
  } finally {
    await pass.release();
  }
  const kl = P > 0 ? perPosition.reduce((s, v) => s + v, 0) / P : 0;
  return { kl, top1Agreement: P > 0 ? agree / P : 0, perPosition, positions: P };
}
