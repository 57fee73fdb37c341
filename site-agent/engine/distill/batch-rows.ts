// The teacher's stored rows laid out for a packed training batch. Packing shuffles and joins
// examples, so each segment of a packed row is matched back to its example by content (its ids and
// shifted targets): equal content means equal teacher rows, so duplicates need no disambiguation.

import { fail } from '../../../shared/errors.ts';
import { sha256Hex } from '../../../shared/hash.ts';
import { IGNORE_INDEX } from '../data/examples.ts';
import type { TeacherBatch } from '../session.ts';
import type { Example, PackedBatch } from '../types.ts';
import type { TeacherStore } from './teacher-logits.ts';

const contentKey = (ids: ArrayLike<number | bigint>, targets: ArrayLike<number | bigint>) =>
  sha256Hex(`${Array.from(ids, Number).join(',')}|${Array.from(targets, Number).join(',')}`);

/** Returns teacherRows(pb) for the session: zeros where a position has no target (weight 0 there). */
export function teacherRowsFor(examples: Example[], store: TeacherStore): (pb: PackedBatch) => TeacherBatch {
  const byContent = new Map<string, number>();
  examples.forEach((ex, e) => {
    const targets = ex.inputIds.map((_, t) => (t + 1 < ex.labels.length ? ex.labels[t + 1] : IGNORE_INDEX));
    const key = contentKey(ex.inputIds, targets);
    if (!byContent.has(key)) byContent.set(key, e);
  });
  const k = store.topK;
  return (pb) => {
    const N = pb.batch * pb.seq;
    const out: TeacherBatch = { ids: new BigInt64Array(N * k), logp: new Float32Array(N * k), rest: new Float32Array(N) };
    for (let r = 0; r < pb.batch; r++) {
      let t = r * pb.seq;
      const end = (r + 1) * pb.seq;
      while (t < end && pb.segmentIds[t] !== 0) {
        let u = t + 1;
        while (u < end && pb.segmentIds[u] === pb.segmentIds[t] && pb.positionIds[u] !== 0n) u++;
        const e = byContent.get(contentKey(pb.inputIds.subarray(t, u), pb.targets.subarray(t, u)));
        if (e === undefined) throw fail('FEDLORA_ERR_INTERNAL', `packed segment at row ${r}, column ${t - r * pb.seq} matches no example of the teacher store ${store.dir}`);
        let at = store.offsets[e];
        for (let i = t; i < u; i++) {
          if (pb.targets[i] === BigInt(IGNORE_INDEX)) continue;
          if (at >= store.offsets[e + 1]) throw fail('FEDLORA_ERR_INTERNAL', `example ${e} has more targets than the teacher store ${store.dir} holds for it`);
          for (let c = 0; c < k; c++) out.ids[i * k + c] = BigInt(store.ids[at * k + c]);
          out.logp.set(store.logp.subarray(at * k, (at + 1) * k), i * k);
          out.rest[i] = store.rest[at];
          at++;
        }
        t = u;
      }
    }
    return out;
  };
}
