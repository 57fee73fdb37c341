// Activation recomputation (gradient checkpointing) for appendBackward: a segment of the forward
// graph (one decoder layer, one chunk of the loss head) keeps only its input; the nodes its backward
// rules emit read copies of the segment's forward nodes, emitted on demand in the backward part of
// the graph (only what the rules read), so the forward's own activations die as soon as the forward
// has used them.
//
// ONNX has no control edges, and ONNX Runtime orders nodes by data dependencies alone: copies that
// depend only on the segment's input would run during the forward and undo the saving. So the copy
// starts from a "gated" input, input + 0·g[0..] with g the gradient arriving at the segment's
// output: the copy can only run once the backward has reached the segment. Its value is the input
// itself (0·g is 0 for every finite gradient; a non-finite gradient already fails the step).

import type { Builder, Node } from './ir.ts';

export interface RecomputeSegment {
  /** Forward node indices [start, end) that make up the segment. */
  start: number;
  end: number;
  /** The value the segment starts from (kept alive from the forward) and the one it produces. */
  input: string;
  output: string;
}

export class Recomputer {
  private readonly segOf: Int32Array;
  private readonly inside: Set<string>[];
  private readonly producer = new Map<string, Node>();
  private readonly copies: Map<string, string>[];

  constructor(private readonly b: Builder, nodes: Node[], private readonly segments: RecomputeSegment[], private readonly gradOf: (v: string) => string | undefined) {
    this.segOf = new Int32Array(nodes.length).fill(-1);
    this.inside = segments.map((s, si) => {
      // values made inside the segment from its input: the ones a copy must recompute
      const dep = new Set<string>([s.input]);
      const made = new Set<string>();
      for (let i = s.start; i < s.end; i++) {
        this.segOf[i] = si;
        const n = nodes[i];
        if (n.inputs.some((x) => dep.has(x))) for (const o of n.outputs) { dep.add(o); made.add(o); }
      }
      return made;
    });
    for (const n of nodes) for (const o of n.outputs) this.producer.set(o, n);
    this.copies = segments.map(() => new Map());
  }

  /** Make the backward nodes emitted since `from` (the rule of forward node `index`) read recomputed
   *  copies of the segment's activations instead of the forward's own. The copies are emitted just
   *  before those nodes, and only for the values the rule actually reads. */
  rewrite(index: number, from: number): void {
    const si = this.segOf[index];
    if (si < 0) return;
    const emitted = this.b.g.nodes.splice(from);
    for (const e of emitted) e.inputs = e.inputs.map((x) => (x === '' ? x : this.value(si, x)));
    this.b.g.nodes.push(...emitted);
  }

  private value(si: number, v: string): string {
    const s = this.segments[si];
    const memo = this.copies[si];
    const hit = memo.get(v);
    if (hit) return hit;
    if (v === s.input) {
      const g = this.gradOf(s.output);
      if (!g) return v; // no gradient reaches the segment: nothing of it is recomputed
      const shape = this.b.shape(g);
      const corner = shape.length === 0 ? g : this.b.reshape(this.b.op1('Slice', [g, this.b.constI(shape.map(() => 0)), this.b.constI(shape.map(() => 1))]), []);
      const gated = this.b.add(v, this.b.mul(corner, this.b.constF([0], [])));
      memo.set(v, gated);
      return gated;
    }
    if (!this.inside[si].has(v)) return v;
    const n = this.producer.get(v)!;
    const outs = this.b.op(n.op, n.inputs.map((x) => (x === '' ? x : this.value(si, x))), n.attrs, n.outputs.length);
    n.outputs.forEach((o, i) => memo.set(o, outs[i]));
    return memo.get(v)!;
  }
}
