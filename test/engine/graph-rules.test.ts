// Per-op checks of every rule in the backward table: a small graph  loss = sum(op(x...) * R)  with a
// random R is differentiated by appendBackward, run in ONNX Runtime, and compared element by element
// with central finite differences of the same graph's loss. Also: the table is covered completely,
// and a missing rule throws FEDLORA_ERR_NO_BACKWARD_RULE naming the op.

import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as ort from 'onnxruntime-node';
import { describe, expect, it } from 'vitest';
import { Builder, numel } from '../../site-agent/engine/graph/ir.ts';
import { appendBackward } from '../../site-agent/engine/graph/autodiff.ts';
import { BACKWARD_RULES } from '../../site-agent/engine/graph/backward-rules.ts';
import { encodeModel } from '../../site-agent/engine/graph/onnx-export.ts';
import { isFedloraError } from '../../shared/errors.ts';
import { randn, rng } from './ref/fixture.ts';
import { klRows } from '../../site-agent/engine/distill/kl-head.ts';
import { dequantizeRows, quantizeMatrix } from '../../site-agent/engine/quant/blockwise.ts';

interface Case {
  name: string;
  op: string; // the rule under test
  inputs: { shape: number[]; positive?: boolean }[];
  build: (b: Builder, xs: string[]) => string; // returns the (float32) output whose sum(out * R) is the loss
}

const CASES: Case[] = [
  { name: 'Add broadcast', op: 'Add', inputs: [{ shape: [2, 3] }, { shape: [3] }], build: (b, [x, y]) => b.add(x, y) },
  { name: 'Sub broadcast', op: 'Sub', inputs: [{ shape: [2, 3] }, { shape: [2, 1] }], build: (b, [x, y]) => b.sub(x, y) },
  { name: 'Mul broadcast', op: 'Mul', inputs: [{ shape: [2, 1, 3] }, { shape: [4, 3] }], build: (b, [x, y]) => b.mul(x, y) },
  { name: 'Div broadcast', op: 'Div', inputs: [{ shape: [2, 3] }, { shape: [1, 3], positive: true }], build: (b, [x, y]) => b.div(x, y) },
  { name: 'Neg', op: 'Neg', inputs: [{ shape: [5] }], build: (b, [x]) => b.neg(x) },
  { name: 'Identity', op: 'Identity', inputs: [{ shape: [5] }], build: (b, [x]) => b.op1('Identity', [x]) },
  { name: 'Sqrt', op: 'Sqrt', inputs: [{ shape: [2, 3], positive: true }], build: (b, [x]) => b.op1('Sqrt', [x]) },
  { name: 'Reciprocal', op: 'Reciprocal', inputs: [{ shape: [2, 3], positive: true }], build: (b, [x]) => b.op1('Reciprocal', [x]) },
  { name: 'Sigmoid', op: 'Sigmoid', inputs: [{ shape: [2, 3] }], build: (b, [x]) => b.op1('Sigmoid', [x]) },
  { name: 'Exp', op: 'Exp', inputs: [{ shape: [2, 3] }], build: (b, [x]) => b.op1('Exp', [x]) },
  { name: 'Softmax axis 1 of 3', op: 'Softmax', inputs: [{ shape: [2, 4, 3] }], build: (b, [x]) => b.op1('Softmax', [x], { axis: 1 }) },
  { name: 'Softmax last axis', op: 'Softmax', inputs: [{ shape: [3, 5] }], build: (b, [x]) => b.op1('Softmax', [x], { axis: -1 }) },
  { name: 'LogSoftmax', op: 'LogSoftmax', inputs: [{ shape: [3, 5] }], build: (b, [x]) => b.op1('LogSoftmax', [x], { axis: 1 }) },
  { name: 'Cast', op: 'Cast', inputs: [{ shape: [4] }], build: (b, [x]) => b.op1('Cast', [x], { to: 1 }) },
  { name: 'MatMul batched, broadcast right', op: 'MatMul', inputs: [{ shape: [2, 3, 4] }, { shape: [4, 5] }], build: (b, [x, y]) => b.matmul(x, y) },
  { name: 'MatMul broadcast left', op: 'MatMul', inputs: [{ shape: [3, 4] }, { shape: [2, 4, 5] }], build: (b, [x, y]) => b.matmul(x, y) },
  { name: 'Gemm plain + C', op: 'Gemm', inputs: [{ shape: [3, 4] }, { shape: [4, 5] }, { shape: [5] }], build: (b, [x, y, c]) => b.op1('Gemm', [x, y, c], { alpha: { float: 0.7 }, beta: { float: 1.3 } }) },
  { name: 'Gemm transB', op: 'Gemm', inputs: [{ shape: [3, 4] }, { shape: [5, 4] }], build: (b, [x, y]) => b.op1('Gemm', [x, y], { transB: 1, alpha: { float: 2 } }) },
  { name: 'Gemm transA', op: 'Gemm', inputs: [{ shape: [4, 3] }, { shape: [4, 5] }, { shape: [3, 5] }], build: (b, [x, y, c]) => b.op1('Gemm', [x, y, c], { transA: 1 }) },
  { name: 'Gemm transA transB', op: 'Gemm', inputs: [{ shape: [4, 3] }, { shape: [5, 4] }], build: (b, [x, y]) => b.op1('Gemm', [x, y], { transA: 1, transB: 1 }) },
  { name: 'Reshape', op: 'Reshape', inputs: [{ shape: [2, 6] }], build: (b, [x]) => b.reshape(x, [3, -1, 2]) },
  { name: 'Unsqueeze', op: 'Unsqueeze', inputs: [{ shape: [2, 3] }], build: (b, [x]) => b.op1('Unsqueeze', [x, b.constI([1])]) },
  { name: 'Transpose', op: 'Transpose', inputs: [{ shape: [2, 3, 4] }], build: (b, [x]) => b.transpose(x, [2, 0, 1]) },
  {
    name: 'Split (one output unused)', op: 'Split', inputs: [{ shape: [2, 6] }],
    build: (b, [x]) => b.op('Split', [x, b.constI([2, 1, 3])], { axis: 1 }, 3)[2],
  },
  { name: 'Concat', op: 'Concat', inputs: [{ shape: [2, 3] }, { shape: [2, 1] }], build: (b, [x, y]) => b.op1('Concat', [x, y], { axis: -1 }) },
  {
    name: 'GatherElements (repeated index)', op: 'GatherElements', inputs: [{ shape: [3, 4] }],
    build: (b, [x]) => {
      const idx = b.initializer('idx', 'int64', [3, 2], { kind: 'raw', bytes: new Uint8Array(BigInt64Array.from([1n, 1n, 0n, 3n, 2n, 0n]).buffer) });
      return b.op1('GatherElements', [x, idx], { axis: 1 });
    },
  },
  { name: 'ReduceSum keepdims', op: 'ReduceSum', inputs: [{ shape: [2, 3, 4] }], build: (b, [x]) => b.reduceSum(x, [1], true) },
  { name: 'ReduceSum no keepdims', op: 'ReduceSum', inputs: [{ shape: [2, 3, 4] }], build: (b, [x]) => b.reduceSum(x, [0, 2], false) },
  { name: 'ReduceMean', op: 'ReduceMean', inputs: [{ shape: [2, 3, 4] }], build: (b, [x]) => b.op1('ReduceMean', [x, b.constI([-1])], { keepdims: 1 }) },
  { name: 'ReduceLogSumExp keepdims', op: 'ReduceLogSumExp', inputs: [{ shape: [3, 5] }], build: (b, [x]) => b.op1('ReduceLogSumExp', [x, b.constI([1])], { keepdims: 1 }) },
  { name: 'ReduceLogSumExp two axes, no keepdims', op: 'ReduceLogSumExp', inputs: [{ shape: [2, 3, 4] }], build: (b, [x]) => b.op1('ReduceLogSumExp', [x, b.constI([0, 2])], { keepdims: 0 }) },
  { name: 'KL distillation head (top-k + rest bucket, T = 2)', op: 'ReduceLogSumExp', inputs: [{ shape: [3, 7] }], build: (b, [x]) => klHead(b, x) },
  { name: 'Expand', op: 'Expand', inputs: [{ shape: [3, 1] }], build: (b, [x]) => b.op1('Expand', [x, b.constI([2, 3, 4])]) },
  { name: 'Slice rows', op: 'Slice', inputs: [{ shape: [5, 3] }], build: (b, [x]) => b.op1('Slice', [x, b.constI([1]), b.constI([4]), b.constI([0])]) },
  { name: 'Slice two axes, negative end', op: 'Slice', inputs: [{ shape: [2, 4, 3] }], build: (b, [x]) => b.op1('Slice', [x, b.constI([0, 1]), b.constI([-1, 3]), b.constI([1, 2])]) },
  { name: 'MatMulNBits 4 bits (transposed copy)', op: 'MatMulNBits', inputs: [{ shape: [3, 32] }], build: (b, [x]) => matMulNBits(b, x, 4) },
  { name: 'MatMulNBits 8 bits, batched input', op: 'MatMulNBits', inputs: [{ shape: [2, 3, 32] }], build: (b, [x]) => matMulNBits(b, x, 8) },
  { name: 'MatMulNBits 8 bits (dequantized W)', op: 'MatMulNBits', inputs: [{ shape: [3, 32] }], build: (b, [x]) => matMulNBits(b, x, 8, 'dequantize') },
];

/** y = x · W^T through MatMulNBits (exact float arithmetic, accuracy_level 0) with W [16, 32] chosen so
 *  that both quantized copies (blocks of 16 along K for the forward, along N for W^T) hold it exactly:
 *  every block's largest magnitude is 8·s (4 bits) or 127·s (8 bits), all values are integers times s. */
function matMulNBits(b: Builder, x: string, bits: 4 | 8, backward: 'transposed' | 'dequantize' = 'transposed'): string {
  const N = 16, K = 32, block = 16, s = 1 / 64; // a power of two: every product stays exact in float32
  const r = rng(bits);
  const top = bits === 4 ? -8 : 127;
  const w = new Float32Array(N * K).map(() => s * Math.round((r() * 2 - 1) * (bits === 4 ? 7 : 126)) + 0); // + 0: no -0
  for (let o = 0; o < N; o++) { w[o * K + o] = top * s; w[o * K + 16 + o] = top * s; }
  const q = quantizeMatrix((r0, r1) => w.slice(r0 * K, r1 * K), N, K, bits, block, block);
  expect(dequantizeRows(q.data, q.scales, { rows: N, cols: K, bits, block })).toEqual(w);
  const wt = new Float32Array(K * N);
  for (let o = 0; o < N; o++) for (let i = 0; i < K; i++) wt[i * N + o] = w[o * K + i];
  expect(dequantizeRows(q.t!.data, q.t!.scales, { rows: K, cols: N, bits, block })).toEqual(wt);
  const raw = (a: Uint8Array | Float32Array) => ({ kind: 'raw' as const, bytes: new Uint8Array(a.buffer, a.byteOffset, a.byteLength) });
  const data = b.initializer(`w${bits}.q`, 'uint8', [N, K / block, (block * bits) / 8], raw(q.data));
  const scales = b.initializer(`w${bits}.s`, 'float32', [N, K / block], raw(q.scales));
  b.transposedWeights.set(data, () => (backward === 'transposed' ? {
    kind: 'transposed',
    data: b.initializer(`w${bits}.t.q`, 'uint8', [K, N / block, (block * bits) / 8], raw(q.t!.data)),
    scales: b.initializer(`w${bits}.t.s`, 'float32', [K, N / block], raw(q.t!.scales)),
    block,
    accuracy: 0,
  } : {
    kind: 'dequantize',
    dequantized: () => b.op1('GatherBlockQuantized', [
      b.initializer(`w${bits}.q.rows`, 'uint8', [N, (K * bits) / 8], raw(q.data)), b.constI(Array.from({ length: N }, (_, i) => i)), scales,
    ], { bits, block_size: block, gather_axis: 0, quantize_axis: 1 }),
  }));
  return b.op1('MatMulNBits', [x, data, scales], { K, N, bits, block_size: block, accuracy_level: 0 });
}

/** The distillation head on student logits x [3, 7] against a random teacher's top-3 at T = 2 (the
 *  teacher's ids, log-probabilities and rest mass as constants, computed here in float64). */
function klHead(b: Builder, x: string): string {
  const [rows, V] = b.shape(x), k = 3, T = 2;
  const r = rng(17);
  const ids: bigint[] = [], logp: number[] = [], rest: number[] = [];
  for (let i = 0; i < rows; i++) {
    const z = Array.from(randn(r, V, 2), (v) => v / T);
    const m = Math.max(...z), lse = m + Math.log(z.reduce((s, v) => s + Math.exp(v - m), 0));
    const order = z.map((_, j) => j).sort((a, c) => z[c] - z[a]);
    order.slice(0, k).forEach((j) => { ids.push(BigInt(j)); logp.push(z[j] - lse); });
    rest.push(Math.log(order.slice(k).reduce((s, j) => s + Math.exp(z[j] - lse), 0)));
  }
  const raw = (a: BigInt64Array | Float32Array) => ({ kind: 'raw' as const, bytes: new Uint8Array(a.buffer) });
  return klRows(b, x, {
    ids: b.initializer('t_ids', 'int64', [rows, k], raw(BigInt64Array.from(ids))),
    logp: b.initializer('t_logp', 'float32', [rows, k], raw(Float32Array.from(logp))),
    rest: b.initializer('t_rest', 'float32', [rows, 1], raw(Float32Array.from(rest))),
  }, T);
}

const dir = mkdtempSync(join(tmpdir(), 'fedlora-rules-'));

async function check(c: Case, seed: number) {
  const b = new Builder(c.name.replace(/\W+/g, '_'));
  const xs = c.inputs.map((inp, i) => b.input(`x${i}`, 'float32', inp.shape));
  const y = c.build(b, xs);
  const r = rng(seed);
  const R = b.constF(randn(r, numel(b.shape(y)), 1), b.shape(y));
  const loss = b.op1('ReduceSum', [b.mul(y, R)], { keepdims: 0 }, 'loss');
  b.output(loss);
  expect(b.g.nodes.some((n) => n.op === c.op)).toBe(true);
  const grads = appendBackward(b, loss, xs);
  xs.forEach((x) => b.output(b.op1('Identity', [grads.get(x)!], {}, `grad_${x}`)));
  const file = join(dir, `${b.g.name}.onnx`);
  writeFileSync(file, encodeModel(b.g));
  const s = await ort.InferenceSession.create(file, { graphOptimizationLevel: 'all', intraOpNumThreads: 1 });
  try {
    const values = c.inputs.map((inp) => {
      const v = randn(r, numel(inp.shape), 1);
      return inp.positive ? v.map((z) => 0.5 + Math.abs(z)) : v;
    });
    const feeds = (vals: Float32Array[]) => Object.fromEntries(vals.map((v, i) => [`x${i}`, new ort.Tensor('float32', v, c.inputs[i].shape)]));
    const out = await s.run(feeds(values));
    const eps = 1e-2;
    let largest = 0;
    for (let i = 0; i < values.length; i++) {
      const g = out[`grad_x${i}`].data as Float32Array;
      expect(out[`grad_x${i}`].dims).toEqual(c.inputs[i].shape);
      for (let j = 0; j < values[i].length; j++) {
        const at = async (d: number) => {
          const vals = values.map((v) => v.slice());
          vals[i][j] += d;
          return (await s.run(feeds(vals))).loss.data[0] as number;
        };
        const fd = ((await at(eps)) - (await at(-eps))) / (2 * eps);
        largest = Math.max(largest, Math.abs(g[j]));
        expect(Math.abs(fd - g[j]), `${c.name}: d loss / d x${i}[${j}] = ${g[j]}, finite difference ${fd}`).toBeLessThanOrEqual(2e-3 + 1e-2 * Math.abs(fd));
      }
    }
    expect(largest).toBeGreaterThan(1e-2);
  } finally {
    await s.release();
  }
}

describe('backward-rule table', () => {
  it('every rule in the table has a finite-difference case here', () => {
    const covered = new Set(CASES.map((c) => c.op));
    expect(Object.keys(BACKWARD_RULES).filter((op) => !covered.has(op))).toEqual([]);
  });

  for (const [i, c] of CASES.entries()) {
    it(`${c.op}: ${c.name}`, async () => {
      await check(c, 100 + i);
    });
  }

  it('a missing rule throws FEDLORA_ERR_NO_BACKWARD_RULE naming the op', () => {
    const b = new Builder('missing');
    const x = b.input('x', 'float32', [3]);
    const loss = b.op1('ReduceSum', [b.op1('Tanh', [x])], { keepdims: 0 });
    let err: unknown;
    try {
      appendBackward(b, loss, [x]);
    } catch (e) {
      err = e;
    }
    expect(isFedloraError(err) && err.code).toBe('FEDLORA_ERR_NO_BACKWARD_RULE');
    expect((err as Error).message).toContain('"Tanh"');
  });

  it('ops off the path from parameters to the loss need no rule', () => {
    const b = new Builder('offpath');
    const x = b.input('x', 'float32', [3]);
    const c = b.input('c', 'float32', [3]);
    const loss = b.op1('ReduceSum', [b.mul(x, b.op1('Tanh', [c]))], { keepdims: 0 });
    const g = appendBackward(b, loss, [x]);
    expect(b.shape(g.get(x)!)).toEqual([3]);
  });
});
