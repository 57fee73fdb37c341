// Reverse-mode autodiff over the IR. Only nodes on a path from a trainable value to the loss are
// differentiated (base weights are frozen, so their huge gradients are never built). Gradients of a
// value used by several nodes are summed. Every op's rule comes from BACKWARD_RULES. Segments given
// in `recompute` (decoder layers) keep only their input; their rules read recomputed activations
// (recompute.ts).

import { fail } from '../../../shared/errors.ts';
import type { Builder } from './ir.ts';
import { BACKWARD_RULES } from './backward-rules.ts';
import { Recomputer, type RecomputeSegment } from './recompute.ts';

/** Append backward nodes to `b` and return, per wrt value, the name of its gradient (zeros if the
 *  loss does not depend on it). `loss` must be a scalar float32 value. */
export function appendBackward(b: Builder, loss: string, wrt: string[], recompute: RecomputeSegment[] = []): Map<string, string> {
  const nodes = b.g.nodes.slice(); // the forward graph; rules append after it
  // Forward: which values depend on a trainable value.
  const dependsOnParam = new Set<string>(wrt);
  for (const n of nodes) {
    if (n.inputs.some((i) => dependsOnParam.has(i))) for (const o of n.outputs) dependsOnParam.add(o);
  }
  // Backward: which values the loss depends on.
  const lossDependsOn = new Set<string>([loss]);
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i];
    if (n.outputs.some((o) => lossDependsOn.has(o))) for (const x of n.inputs) if (x) lossDependsOn.add(x);
  }
  const onPath = (v: string) => dependsOnParam.has(v) && lossDependsOn.has(v);

  const grads = new Map<string, string>();
  const accumulate = (v: string, g: string) => {
    const prev = grads.get(v);
    grads.set(v, prev ? b.add(prev, g) : g);
  };
  grads.set(loss, b.constF([1], b.shape(loss)));
  const rec = new Recomputer(b, nodes, recompute, (v) => grads.get(v));

  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i];
    const needs = n.inputs.map((x) => x !== '' && onPath(x));
    if (!needs.some(Boolean)) continue;
    const gOut = n.outputs.map((o) => grads.get(o) ?? null);
    if (gOut.every((g) => g === null)) continue;
    const rule = BACKWARD_RULES[n.op];
    if (!rule) {
      throw fail('FEDLORA_ERR_NO_BACKWARD_RULE', `no backward rule for op "${n.op}" (node producing ${n.outputs.join(', ')} in graph ${b.g.name}); add one to site-agent/engine/graph/backward-rules.ts`);
    }
    const from = b.g.nodes.length;
    const gIn = rule(b, n, gOut, needs);
    rec.rewrite(i, from);
    n.inputs.forEach((x, j) => {
      if (needs[j] && gIn[j]) accumulate(x, gIn[j]!);
    });
  }
  const out = new Map<string, string>();
  for (const p of wrt) {
    out.set(p, grads.get(p) ?? b.op1('ConstantOfShape', [b.constI(b.shape(p))]));
  }
  return out;
}
