// THE backward-rule table: one entry per ONNX op type (tinygrad style). A rule receives the forward
// node, the gradients of its outputs (null where no gradient flows) and which inputs need a
// gradient, and emits ONNX nodes computing the gradients of those inputs. Rules only emit ops that
// are themselves in shape-infer.ts, so gradients of gradients stay possible.

import { fail } from '../../../shared/errors.ts';
import type { Builder, Node } from './ir.ts';
import { constInts } from './shape-infer.ts';
import { ONNX_DTYPE } from './onnx-export.ts';

export type BackwardRule = (b: Builder, n: Node, gOut: (string | null)[], needs: boolean[]) => (string | null)[];

const rank = (b: Builder, v: string) => b.shape(v).length;
const norm = (axis: number, r: number) => (axis < 0 ? axis + r : axis);

/** Swap the last two axes (MatMul's transpose of a batch of matrices). */
function swapLast(b: Builder, x: string): string {
  const r = rank(b, x);
  const perm = [...Array(r).keys()];
  [perm[r - 2], perm[r - 1]] = [perm[r - 1], perm[r - 2]];
  return b.transpose(x, perm);
}

function zerosLike(b: Builder, x: string): string {
  return b.op1('ConstantOfShape', [b.constI(b.shape(x))]);
}

/** Broadcast a reduced gradient back over the reduced axes. */
function expandReduced(b: Builder, n: Node, g: string): string {
  const x = n.inputs[0];
  const xs = b.shape(x);
  const axes = n.inputs[1] ? constInts(b, n.inputs[1]).map((a) => norm(a, xs.length)) : xs.map((_, i) => i);
  const keptShape = xs.map((d, i) => (axes.includes(i) ? 1 : d));
  return b.op1('Expand', [b.reshape(g, keptShape), b.constI(xs)]);
}

export const BACKWARD_RULES: Record<string, BackwardRule> = {
  Add: (b, n, [g], needs) => n.inputs.map((x, i) => (needs[i] ? b.unbroadcast(g!, b.shape(x)) : null)),

  Sub: (b, n, [g], needs) => [
    needs[0] ? b.unbroadcast(g!, b.shape(n.inputs[0])) : null,
    needs[1] ? b.unbroadcast(b.neg(g!), b.shape(n.inputs[1])) : null,
  ],

  Mul: (b, n, [g], needs) => [
    needs[0] ? b.unbroadcast(b.mul(g!, n.inputs[1]), b.shape(n.inputs[0])) : null,
    needs[1] ? b.unbroadcast(b.mul(g!, n.inputs[0]), b.shape(n.inputs[1])) : null,
  ],

  // y = a / b: da = g / b; db = -g * y / b
  Div: (b, n, [g], needs) => [
    needs[0] ? b.unbroadcast(b.div(g!, n.inputs[1]), b.shape(n.inputs[0])) : null,
    needs[1] ? b.unbroadcast(b.neg(b.div(b.mul(g!, n.outputs[0]), n.inputs[1])), b.shape(n.inputs[1])) : null,
  ],

  Neg: (b, _n, [g]) => [b.neg(g!)],
  Identity: (_b, _n, [g]) => [g],

  // y = sqrt(x): dx = g / (2 y)
  Sqrt: (b, n, [g]) => [b.div(g!, b.scale(n.outputs[0], 2))],

  // y = 1/x: dx = -g y^2
  Reciprocal: (b, n, [g]) => [b.neg(b.mul(g!, b.mul(n.outputs[0], n.outputs[0])))],

  // y = sigmoid(x): dx = g y (1 - y)
  Sigmoid: (b, n, [g]) => {
    const y = n.outputs[0];
    return [b.mul(g!, b.mul(y, b.sub(b.constF([1], []), y)))];
  },

  Exp: (b, n, [g]) => [b.mul(g!, n.outputs[0])],

  // y = softmax(x): dx = y (g - sum(g y))
  Softmax: (b, n, [g]) => {
    const y = n.outputs[0];
    const axis = norm((n.attrs.axis as number) ?? -1, rank(b, y));
    return [b.mul(y, b.sub(g!, b.reduceSum(b.mul(g!, y), [axis], true)))];
  },

  // y = log_softmax(x): dx = g - exp(y) sum(g)
  LogSoftmax: (b, n, [g]) => {
    const y = n.outputs[0];
    const axis = norm((n.attrs.axis as number) ?? -1, rank(b, y));
    return [b.sub(g!, b.mul(b.op1('Exp', [y]), b.reduceSum(g!, [axis], true)))];
  },

  Cast: (b, n, [g]) => [b.op1('Cast', [g!], { to: ONNX_DTYPE[b.dtype(n.inputs[0])] })],

  // C = A B (batched, broadcasting): dA = g B^T, dB = A^T g, each summed to its input's shape.
  MatMul: (b, n, [g], needs) => {
    const [a, c] = n.inputs;
    return [
      needs[0] ? b.unbroadcast(b.matmul(g!, swapLast(b, c)), b.shape(a)) : null,
      needs[1] ? b.unbroadcast(b.matmul(swapLast(b, a), g!), b.shape(c)) : null,
    ];
  },

  // Y = alpha op(A) op(B) + beta C
  Gemm: (b, n, [g], needs) => {
    const [a, w, c] = n.inputs;
    const tA = (n.attrs.transA as number) ?? 0, tB = (n.attrs.transB as number) ?? 0;
    const alpha = n.attrs.alpha ? (n.attrs.alpha as { float: number }).float : 1;
    const beta = n.attrs.beta ? (n.attrs.beta as { float: number }).float : 1;
    const al = { alpha: { float: alpha } };
    let gA: string | null = null, gB: string | null = null, gC: string | null = null;
    if (needs[0]) {
      gA = !tA
        ? b.op1('Gemm', [g!, w], { transB: tB ? 0 : 1, ...al })
        : b.op1('Gemm', [w, g!], { transA: tB ? 1 : 0, transB: 1, ...al });
    }
    if (needs[1]) {
      gB = !tB
        ? b.op1('Gemm', [a, g!], { transA: tA ? 0 : 1, ...al })
        : b.op1('Gemm', [g!, a], { transA: 1, transB: tA ? 1 : 0, ...al });
    }
    if (needs[2] && c) gC = b.unbroadcast(b.scale(g!, beta), b.shape(c));
    return [gA, gB, gC];
  },

  Reshape: (b, n, [g], needs) => [needs[0] ? b.reshape(g!, b.shape(n.inputs[0])) : null, null],
  Unsqueeze: (b, n, [g]) => [b.reshape(g!, b.shape(n.inputs[0])), null],

  Transpose: (b, n, [g]) => {
    const perm = (n.attrs.perm as number[]) ?? [...Array(rank(b, n.inputs[0])).keys()].reverse();
    const inv = new Array<number>(perm.length);
    perm.forEach((p, i) => (inv[p] = i));
    return [b.transpose(g!, inv)];
  },

  Split: (b, n, gOut) => {
    const axis = (n.attrs.axis as number) ?? 0;
    const parts = gOut.map((g, i) => g ?? zerosLike(b, n.outputs[i]));
    return [b.op1('Concat', parts, { axis }), null];
  },

  Concat: (b, n, [g], needs) => {
    const axis = norm(n.attrs.axis as number, rank(b, n.outputs[0]));
    const sizes = n.inputs.map((x) => b.shape(x)[axis]);
    const parts = b.op('Split', [g!, b.constI(sizes)], { axis }, sizes.length);
    return parts.map((p, i) => (needs[i] ? p : null));
  },

  // y = data[..., idx, ...] along axis: d data = scatter-add of g at idx
  GatherElements: (b, n, [g], needs) => {
    const [data, idx] = n.inputs;
    const axis = (n.attrs.axis as number) ?? 0;
    return [needs[0] ? b.op1('ScatterElements', [zerosLike(b, data), idx, g!], { axis, reduction: 'add' }) : null, null];
  },

  ReduceSum: (b, n, [g]) => [expandReduced(b, n, g!), null],

  ReduceMean: (b, n, [g]) => {
    const xs = b.shape(n.inputs[0]);
    const ys = b.shape(n.outputs[0]);
    const count = xs.reduce((p, q) => p * q, 1) / ys.reduce((p, q) => p * q, 1);
    return [expandReduced(b, n, b.scale(g!, 1 / count)), null];
  },

  // y = log sum exp(x) over axes: dx = g · exp(x − y) (the softmax over the reduced axes). The
  // distillation head reads the student's probability mass outside the teacher's top-k with it.
  ReduceLogSumExp: (b, n, [g]) => {
    const y = expandReduced(b, n, n.outputs[0]);
    return [b.mul(expandReduced(b, n, g!), b.op1('Exp', [b.sub(n.inputs[0], y)])), null];
  },

  Expand: (b, n, [g]) => [b.unbroadcast(g!, b.shape(n.inputs[0])), null],

  // y = x[starts:ends] along axes (step 1): dx = g with zeros around it, one axis at a time.
  Slice: (b, n, [g]) => {
    const [x, st, en, ax, steps] = n.inputs;
    const xs = b.shape(x);
    if (steps && constInts(b, steps).some((k) => k !== 1)) throw fail('FEDLORA_ERR_NO_BACKWARD_RULE', `Slice ${n.outputs[0]}: only step 1 has a backward rule`);
    const starts = constInts(b, st), ends = constInts(b, en);
    const axes = ax ? constInts(b, ax) : starts.map((_, i) => i);
    let dx = g!;
    axes.forEach((a0, i) => {
      const a = norm(a0, xs.length), d = xs[a];
      const clamp = (v: number) => Math.max(0, Math.min(d, v < 0 ? v + d : v));
      const s0 = clamp(starts[i]), e0 = Math.max(s0, clamp(ends[i]));
      const zeros = (len: number) => { const sh = [...b.shape(dx)]; sh[a] = len; return b.op1('ConstantOfShape', [b.constI(sh)]); };
      const parts = [...(s0 > 0 ? [zeros(s0)] : []), dx, ...(e0 < d ? [zeros(d - e0)] : [])];
      if (parts.length > 1) dx = b.op1('Concat', parts, { axis: a });
    });
    return [dx, null, null, null, null];
  },

  // Y = A · dequant(B)^T with a frozen quantized B [N, K]: dA = g · dequant(B), either as another
  // MatMulNBits on B's transposed copy [K, N] (quantized along N, in blocks of its own size) or as a
  // float32 MatMul with B dequantized for this product alone (see Builder.transposedWeights).
  MatMulNBits: (b, n, [g], needs) => {
    const [, w] = n.inputs;
    if (needs.slice(1).some(Boolean)) throw fail('FEDLORA_ERR_NO_BACKWARD_RULE', `MatMulNBits ${n.outputs[0]}: quantized weights are frozen; only the input has a gradient`);
    const t = b.transposedWeights.get(w)?.();
    if (!t) throw fail('FEDLORA_ERR_NO_BACKWARD_RULE', `MatMulNBits ${n.outputs[0]}: weight ${w} has no transposed copy for its input gradient`);
    if (t.kind === 'dequantize') return [b.op1('MatMul', [g!, t.dequantized()]), null, null];
    const { K, N } = n.attrs as { K: number; N: number };
    return [b.op1('MatMulNBits', [g!, t.data, t.scales], { ...n.attrs, K: N, N: K, block_size: t.block, accuracy_level: t.accuracy }), null, null];
  },
};
