// The distillation head: per row, KL(p_teacher^T || p_student^T) over the teacher's stored support,
// i.e. its top-k tokens plus one "rest" bucket holding all other tokens:
//
//   KL = Σ_{i ∈ top-k} p_i (log p_i − log q_i) + p_rest (log p_rest − log q_rest)
//
// p = the teacher's distribution at temperature T (stored log-probabilities, normalised over the
// whole vocabulary, so p_rest = 1 − Σ p_i is kept, not renormalised away), q = the student's
// softmax(logits / T). log q_rest = logsumexp of the student's log-probabilities outside the top-k
// (ReduceLogSumExp over a −1e9 mask at the top-k ids), which stays exact when the top-k hold
// nearly all of q (no log(1 − Σ q_i) cancellation). Merging the tail into one bucket gives a lower
// bound of the full-vocabulary KL that is zero only when the student matches the teacher on every
// stored token and on the tail's total mass, so the student is not rewarded for moving mass into
// tokens the teacher considers unlikely (renormalising both over the top-k would be blind to that).
// Only ops with backward rules are used; gradients flow through LogSoftmax, GatherElements, Concat
// and ReduceLogSumExp to the student's logits; the teacher's tensors are graph inputs (constant).

import type { Builder } from '../graph/ir.ts';

/** Teacher tensors of the rows of one head chunk: ids [rows, k] int64, logp [rows, k], rest [rows, 1]. */
export interface TeacherRows {
  ids: string;
  logp: string;
  rest: string;
}

/** KL per row [rows, 1] between the teacher's stored distribution and the student's logits [rows, V] at temperature T. */
export function klRows(b: Builder, logits: string, teacher: TeacherRows, temperature: number): string {
  const [rows, V] = b.shape(logits);
  const k = b.shape(teacher.ids)[1];
  const logq = b.op1('LogSoftmax', [b.scale(logits, 1 / temperature)], { axis: 1 }); // [rows, V]
  const topq = b.op1('GatherElements', [logq, teacher.ids], { axis: 1 }); // [rows, k]
  // −1e9 at the top-k ids, 0 elsewhere (built from inputs only: no gradient flows into it)
  const mask = b.op1('ScatterElements', [b.op1('ConstantOfShape', [b.constI([rows, V])]), teacher.ids, b.op1('Expand', [b.constF([-1e9], []), b.constI([rows, k])])], { axis: 1 });
  const restq = b.op1('ReduceLogSumExp', [b.add(logq, mask), b.constI([1])], { keepdims: 1 }); // [rows, 1]
  const logqAll = b.op1('Concat', [topq, restq], { axis: 1 }); // [rows, k + 1]
  const logpAll = b.op1('Concat', [teacher.logp, teacher.rest], { axis: 1 }); // [rows, k + 1]
  const p = b.op1('Exp', [logpAll]);
  return b.reduceSum(b.mul(p, b.sub(logpAll, logqAll)), [1], true); // [rows, 1]
}
