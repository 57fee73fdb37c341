// Host-side arithmetic of the teacher's stored distribution (float64): top-k at temperature T with
// the rest's log-mass, and the same KL the graph's head computes (kl-head.ts), for held-out checks.

/** Floor for a log-mass of exactly 0 (k = whole vocabulary): finite, so 0 · (log p − log q) stays 0 in the graph. */
export const LOG_ZERO = -1e4;

export interface TeacherRow {
  ids: number[]; // top-k token ids, most likely first
  logp: number[]; // their log-probabilities at temperature T (normalised over the whole vocabulary)
  rest: number; // log of the probability mass of every other token
}

/** log Σ exp(z_j / T) over j < V. */
function logSumExp(z: Float32Array, off: number, V: number, T: number): number {
  let m = -Infinity;
  for (let j = 0; j < V; j++) m = Math.max(m, z[off + j] / T);
  let s = 0;
  for (let j = 0; j < V; j++) s += Math.exp(z[off + j] / T - m);
  return m + Math.log(s);
}

/** Top-k of one logits row among ids below `candidates` (the vocabulary both models share); the rest
 *  is every other id of the row, summed directly (never 1 − Σ top-k, which cancels). */
export function teacherRow(z: Float32Array, off: number, V: number, candidates: number, k: number, T: number): TeacherRow {
  const lse = logSumExp(z, off, V, T);
  const best: number[] = [];
  for (let j = 0; j < candidates; j++) {
    const v = z[off + j];
    if (best.length < k) { best.push(j); best.sort((a, c) => z[off + c] - z[off + a] || a - c); continue; }
    if (v > z[off + best[k - 1]]) {
      best[k - 1] = j;
      for (let i = k - 1; i > 0 && z[off + best[i]] > z[off + best[i - 1]]; i--) [best[i], best[i - 1]] = [best[i - 1], best[i]];
    }
  }
  const inTop = new Set(best);
  let rest = 0;
  for (let j = 0; j < V; j++) if (!inTop.has(j)) rest += Math.exp(z[off + j] / T - lse);
  return { ids: best, logp: best.map((j) => z[off + j] / T - lse), rest: rest > 0 ? Math.max(LOG_ZERO, Math.log(rest)) : LOG_ZERO };
}

/** KL(teacher || student) over the teacher's support (top-k + rest) at T, for a student logits row. */
export function klToStudent(t: TeacherRow, z: Float32Array, off: number, V: number, T: number): number {
  const lse = logSumExp(z, off, V, T);
  const inTop = new Set(t.ids);
  let restQ = 0;
  for (let j = 0; j < V; j++) if (!inTop.has(j)) restQ += Math.exp(z[off + j] / T - lse);
  let kl = 0;
  t.ids.forEach((j, i) => { kl += Math.exp(t.logp[i]) * (t.logp[i] - (z[off + j] / T - lse)); });
  const pRest = Math.exp(t.rest);
  if (pRest > 0) kl += pRest * (t.rest - Math.log(Math.max(restQ, Number.MIN_VALUE)));
  return kl;
}

/** argmax of one logits row. */
export function argmax(z: Float32Array, off: number, V: number): number {
  let bi = 0;
  for (let j = 1; j < V; j++) if (z[off + j] > z[off + bi]) bi = j;
  return bi;
}
