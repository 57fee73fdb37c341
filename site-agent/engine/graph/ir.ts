// A small graph IR for the engine's ONNX graphs: values with a dtype and a static shape, nodes that
// are plain ONNX ops (op type, inputs, outputs, attributes). Static shapes let autodiff know how to
// reduce a broadcast gradient back to its input's shape without emitting Shape ops at run time.
// The Builder infers each node's output shape when it adds the node (shape-infer.ts).

import { fail } from '../../../shared/errors.ts';
import { inferShapes } from './shape-infer.ts';

export type DType = 'float32' | 'float16' | 'bfloat16' | 'int64' | 'int32' | 'bool' | 'uint8';

export type AttrValue = number | number[] | string | { float: number } | { floats: number[] };

export interface Value {
  name: string;
  dtype: DType;
  shape: number[];
}

export interface Node {
  op: string;
  inputs: string[];
  outputs: string[];
  attrs: Record<string, AttrValue>;
}

/** Where an initializer's bytes are: inline (small constants) or external (base weights in safetensors). */
export type InitData =
  | { kind: 'raw'; bytes: Uint8Array }
  | { kind: 'external'; file: string; offset: number; length: number };

export interface Initializer extends Value {
  data: InitData;
}

export interface Graph {
  name: string;
  inputs: Value[];
  outputs: Value[];
  initializers: Initializer[];
  nodes: Node[];
  values: Map<string, Value>;
}

export const numel = (shape: number[]): number => shape.reduce((a, b) => a * b, 1);

/** How a MatMulNBits weight W [N, K] passes its input gradient g · W:
 *  - 'transposed': through a second quantized copy W^T [K, N] (its own block size and accuracy level);
 *  - 'dequantize': W's own blocks dequantized to float32 for this product only (one weight at a
 *    time, freed after it), so the gradient carries only W's rounding error. */
export type TransposedWeight =
  | { kind: 'transposed'; data: string; scales: string; block: number; /** MatMulNBits accuracy_level of the gradient's product. */ accuracy: number }
  | { kind: 'dequantize'; /** W [N, K] dequantized to float32, built on first use. */ dequantized: () => string };

export class Builder {
  readonly g: Graph;
  /** MatMulNBits weight initializer -> its transposed copy for the backward rule, declared on first
   *  use (an inference graph never references it). */
  readonly transposedWeights = new Map<string, () => TransposedWeight>();
  private counter = 0;
  private constCache = new Map<string, string>();

  constructor(name = 'fedlora') {
    this.g = { name, inputs: [], outputs: [], initializers: [], nodes: [], values: new Map() };
  }

  value(name: string): Value {
    const v = this.g.values.get(name);
    if (!v) throw fail('FEDLORA_ERR_INTERNAL', `graph ${this.g.name}: unknown value "${name}"`);
    return v;
  }
  shape(name: string): number[] {
    return this.value(name).shape;
  }
  dtype(name: string): DType {
    return this.value(name).dtype;
  }

  fresh(hint: string): string {
    return `${hint}_${this.counter++}`;
  }

  private declare(v: Value): void {
    if (this.g.values.has(v.name)) throw fail('FEDLORA_ERR_INTERNAL', `graph ${this.g.name}: value "${v.name}" defined twice`);
    this.g.values.set(v.name, v);
  }

  input(name: string, dtype: DType, shape: number[]): string {
    const v = { name, dtype, shape };
    this.declare(v);
    this.g.inputs.push(v);
    return name;
  }

  output(name: string): void {
    this.g.outputs.push(this.value(name));
  }

  initializer(name: string, dtype: DType, shape: number[], data: InitData): string {
    const v: Initializer = { name, dtype, shape, data };
    this.declare(v);
    this.g.initializers.push(v);
    return name;
  }

  /** A small float32 constant (inline raw data); identical constants are shared. */
  constF(values: number[] | Float32Array, shape: number[] = [values.length]): string {
    const arr = values instanceof Float32Array ? values : Float32Array.from(values);
    const key = `f:${shape}:${arr.length <= 64 ? Array.from(arr).join(',') : this.counter}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const name = this.initializer(this.fresh('cf'), 'float32', shape, { kind: 'raw', bytes: new Uint8Array(arr.buffer.slice(arr.byteOffset, arr.byteOffset + arr.byteLength)) });
    this.constCache.set(key, name);
    return name;
  }

  /** An int64 constant (shapes, axes, indices); identical constants are shared. */
  constI(values: number[], shape: number[] = [values.length]): string {
    const key = `i:${shape}:${values.join(',')}`;
    const hit = this.constCache.get(key);
    if (hit) return hit;
    const arr = BigInt64Array.from(values.map((v) => BigInt(v)));
    const name = this.initializer(this.fresh('ci'), 'int64', shape, { kind: 'raw', bytes: new Uint8Array(arr.buffer) });
    this.constCache.set(key, name);
    return name;
  }

  /** Add a node; output shapes/dtypes come from shape inference. Returns the output names. */
  op(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, nOut = 1, outNames?: string[]): string[] {
    const ins = inputs.map((n) => (n === '' ? null : this.value(n)));
    const outs = inferShapes(op, ins, attrs, this, nOut);
    const names = outs.map((_, i) => outNames?.[i] ?? this.fresh(op.toLowerCase()));
    outs.forEach((o, i) => this.declare({ name: names[i], dtype: o.dtype, shape: o.shape }));
    this.g.nodes.push({ op, inputs, outputs: names, attrs });
    return names;
  }

  /** Single-output shorthand. */
  op1(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, outName?: string): string {
    return this.op(op, inputs, attrs, 1, outName ? [outName] : undefined)[0];
  }

  // ---- conveniences used by the model and the backward rules ---------------------------------
  add(a: string, b: string): string { return this.op1('Add', [a, b]); }
  sub(a: string, b: string): string { return this.op1('Sub', [a, b]); }
  mul(a: string, b: string): string { return this.op1('Mul', [a, b]); }
  div(a: string, b: string): string { return this.op1('Div', [a, b]); }
  neg(a: string): string { return this.op1('Neg', [a]); }
  matmul(a: string, b: string): string { return this.op1('MatMul', [a, b]); }
  reshape(x: string, shape: number[]): string { return this.op1('Reshape', [x, this.constI(shape)]); }
  transpose(x: string, perm: number[]): string { return this.op1('Transpose', [x], { perm }); }
  scale(x: string, s: number): string { return s === 1 ? x : this.mul(x, this.constF([s], [])); }
  reduceSum(x: string, axes: number[], keepdims: boolean): string {
    return this.op1('ReduceSum', [x, this.constI(axes)], { keepdims: keepdims ? 1 : 0 });
  }
  /** Sum a broadcast gradient back to `shape` (numpy broadcasting rules). */
  unbroadcast(grad: string, shape: number[]): string {
    const gs = this.shape(grad);
    if (gs.length === shape.length && gs.every((d, i) => d === shape[i])) return grad;
    const lead = gs.length - shape.length;
    const axes: number[] = [];
    for (let i = 0; i < gs.length; i++) {
      if (i < lead || (shape[i - lead] === 1 && gs[i] !== 1)) axes.push(i);
    }
    const summed = axes.length ? this.reduceSum(grad, axes, true) : grad;
    return this.reshape(summed, shape);
  }
}
