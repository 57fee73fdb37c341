// Static shape and dtype inference for the ONNX ops the engine emits. Shape-like inputs (Reshape's
// shape, Slice's starts/ends, reduction axes) must be int64 constants made with Builder.constI.

import { fail } from '../../../shared/errors.ts';
import type { AttrValue, Builder, DType, Value } from './ir.ts';

const ONNX_TO_DTYPE: Record<number, DType> = { 1: 'float32', 2: 'uint8', 10: 'float16', 16: 'bfloat16', 7: 'int64', 6: 'int32', 9: 'bool' };

function broadcastShapes(a: number[], b: number[], where: string): number[] {
  const n = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1;
    const y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw fail('FEDLORA_ERR_SHAPE', `${where}: cannot broadcast [${a}] with [${b}]`);
    out.push(x === 1 ? y : x);
  }
  return out;
}

/** Values of an int64 constant initializer. */
export function constInts(b: Builder, name: string): number[] {
  const init = b.g.initializers.find((i) => i.name === name);
  if (!init || init.data.kind !== 'raw' || init.dtype !== 'int64') {
    throw fail('FEDLORA_ERR_INTERNAL', `graph ${b.g.name}: "${name}" must be an int64 constant`);
  }
  const bytes = init.data.bytes;
  return Array.from(new BigInt64Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength)), Number);
}

const norm = (axis: number, rank: number): number => (axis < 0 ? axis + rank : axis);

export function inferShapes(op: string, ins: (Value | null)[], attrs: Record<string, AttrValue>, b: Builder, nOut: number): { dtype: DType; shape: number[] }[] {
  const where = `graph ${b.g.name}: ${op}(${ins.map((v) => v?.name ?? '').join(', ')})`;
  const x = ins[0]!;
  const same = () => [{ dtype: x.dtype, shape: [...x.shape] }];
  switch (op) {
    case 'Add': case 'Sub': case 'Mul': case 'Div': case 'Pow':
      return [{ dtype: x.dtype, shape: broadcastShapes(x.shape, ins[1]!.shape, where) }];
    case 'Equal': case 'Less': case 'Greater':
      return [{ dtype: 'bool', shape: broadcastShapes(x.shape, ins[1]!.shape, where) }];
    case 'Where':
      return [{ dtype: ins[1]!.dtype, shape: broadcastShapes(broadcastShapes(x.shape, ins[1]!.shape, where), ins[2]!.shape, where) }];
    case 'Neg': case 'Sqrt': case 'Reciprocal': case 'Sigmoid': case 'Exp': case 'Log': case 'Softmax': case 'LogSoftmax': case 'Identity': case 'Tanh':
      return same();
    case 'Cast':
      return [{ dtype: ONNX_TO_DTYPE[attrs.to as number], shape: [...x.shape] }];
    case 'MatMul': {
      const a = x.shape, c = ins[1]!.shape;
      if (a.length < 2 || c.length < 2) throw fail('FEDLORA_ERR_SHAPE', `${where}: MatMul needs rank >= 2`);
      if (a[a.length - 1] !== c[c.length - 2]) throw fail('FEDLORA_ERR_SHAPE', `${where}: [${a}] x [${c}]`);
      const batch = broadcastShapes(a.slice(0, -2), c.slice(0, -2), where);
      return [{ dtype: x.dtype, shape: [...batch, a[a.length - 2], c[c.length - 1]] }];
    }
    case 'Gemm': {
      const a = attrs.transA ? [x.shape[1], x.shape[0]] : x.shape;
      const w = ins[1]!.shape;
      const c = attrs.transB ? [w[1], w[0]] : w;
      if (a[1] !== c[0]) throw fail('FEDLORA_ERR_SHAPE', `${where}: Gemm [${a}] x [${c}]`);
      return [{ dtype: x.dtype, shape: [a[0], c[1]] }];
    }
    case 'Reshape': {
      const target = constInts(b, ins[1]!.name);
      const total = x.shape.reduce((p, q) => p * q, 1);
      const known = target.reduce((p, q, i) => (q === -1 ? p : p * (q === 0 ? x.shape[i] : q)), 1);
      const shape = target.map((d, i) => (d === -1 ? total / known : d === 0 ? x.shape[i] : d));
      if (shape.reduce((p, q) => p * q, 1) !== total) throw fail('FEDLORA_ERR_SHAPE', `${where}: cannot reshape [${x.shape}] to [${target}]`);
      return [{ dtype: x.dtype, shape }];
    }
    case 'Transpose': {
      const perm = (attrs.perm as number[]) ?? x.shape.map((_, i) => x.shape.length - 1 - i);
      return [{ dtype: x.dtype, shape: perm.map((p) => x.shape[p]) }];
    }
    case 'Slice': {
      const starts = constInts(b, ins[1]!.name), ends = constInts(b, ins[2]!.name);
      const axes = ins[3] ? constInts(b, ins[3].name) : starts.map((_, i) => i);
      const shape = [...x.shape];
      axes.forEach((ax0, i) => {
        const ax = norm(ax0, shape.length);
        const d = x.shape[ax];
        const s = Math.max(0, Math.min(d, starts[i] < 0 ? starts[i] + d : starts[i]));
        const e = Math.max(0, Math.min(d, ends[i] < 0 ? ends[i] + d : ends[i]));
        shape[ax] = Math.max(0, e - s);
      });
      return [{ dtype: x.dtype, shape }];
    }
    case 'Concat': {
      const ax = norm(attrs.axis as number, x.shape.length);
      const shape = [...x.shape];
      shape[ax] = ins.reduce((s, v) => s + v!.shape[ax], 0);
      return [{ dtype: x.dtype, shape }];
    }
    case 'Split': {
      const ax = norm((attrs.axis as number) ?? 0, x.shape.length);
      const sizes = ins[1] ? constInts(b, ins[1].name) : Array(nOut).fill(x.shape[ax] / nOut);
      return sizes.map((s) => { const shape = [...x.shape]; shape[ax] = s; return { dtype: x.dtype, shape }; });
    }
    case 'Gather': {
      const ax = norm((attrs.axis as number) ?? 0, x.shape.length);
      return [{ dtype: x.dtype, shape: [...x.shape.slice(0, ax), ...ins[1]!.shape, ...x.shape.slice(ax + 1)] }];
    }
    case 'GatherElements':
      return [{ dtype: x.dtype, shape: [...ins[1]!.shape] }];
    case 'ScatterElements':
      return same();
    case 'ReduceSum': case 'ReduceMean': case 'ReduceMax': case 'ReduceLogSumExp': {
      const axes = ins[1] ? constInts(b, ins[1].name).map((a) => norm(a, x.shape.length)) : x.shape.map((_, i) => i);
      const keep = attrs.keepdims === undefined ? 1 : (attrs.keepdims as number);
      const shape: number[] = [];
      x.shape.forEach((d, i) => { if (!axes.includes(i)) shape.push(d); else if (keep) shape.push(1); });
      return [{ dtype: x.dtype, shape }];
    }
    case 'Unsqueeze': {
      const axes = constInts(b, ins[1]!.name);
      const rank = x.shape.length + axes.length;
      const ax = axes.map((a) => norm(a, rank));
      const shape: number[] = [];
      let j = 0;
      for (let i = 0; i < rank; i++) shape.push(ax.includes(i) ? 1 : x.shape[j++]);
      return [{ dtype: x.dtype, shape }];
    }
    case 'Expand':
      return [{ dtype: x.dtype, shape: broadcastShapes(x.shape, constInts(b, ins[1]!.name), where) }];
    case 'MatMulNBits': {
      // com.microsoft: Y[..., N] = A[..., K] · dequant(B)^T with B uint8 [N, blocks, block*bits/8] and
      // scales [N, blocks] (blocks = ceil(K / block_size); layout in quant/blockwise.ts)
      const K = attrs.K as number, Nn = attrs.N as number, bits = attrs.bits as number, blk = attrs.block_size as number;
      const [wq, sc] = [ins[1]!, ins[2]!];
      const blocks = Math.ceil(K / blk);
      if (x.shape[x.shape.length - 1] !== K) throw fail('FEDLORA_ERR_SHAPE', `${where}: A is [${x.shape}] but K = ${K}`);
      if (wq.dtype !== 'uint8' || wq.shape.join() !== `${Nn},${blocks},${(blk * bits) / 8}`) throw fail('FEDLORA_ERR_SHAPE', `${where}: B must be uint8 [${Nn}, ${blocks}, ${(blk * bits) / 8}], got ${wq.dtype} [${wq.shape}]`);
      if (sc.shape.join() !== `${Nn},${blocks}`) throw fail('FEDLORA_ERR_SHAPE', `${where}: scales must be [${Nn}, ${blocks}], got [${sc.shape}]`);
      return [{ dtype: x.dtype, shape: [...x.shape.slice(0, -1), Nn] }];
    }
    case 'GatherBlockQuantized': {
      // com.microsoft, uint8 data [rows, cols*bits/8] gathered on axis 0, dequantized along the last axis
      const bits = (attrs.bits as number) ?? 4;
      const idx = ins[1]!, sc = ins[2]!;
      return [{ dtype: sc.dtype, shape: [...idx.shape, (x.shape[1] * 8) / bits] }];
    }
    case 'ConstantOfShape':
      return [{ dtype: 'float32', shape: constInts(b, x.name) }];
    default:
      throw fail('FEDLORA_ERR_INTERNAL', `${where}: no shape inference for op ${op}`);
  }
}
