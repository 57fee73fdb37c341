// The two float32 loops that dominate aggregation and update intake, as WebAssembly SIMD:
//   addScaled:    acc += c * v over a whole adapter, reporting NaN/Inf in v (every mean-based strategy)
//   sumOfSquares: sum of v_i^2 in float64 (the norm the coordinator measures on each upload)
// Kept our own (a ~300-byte module assembled below): no maintained npm package offers these
// kernels, and they are the product's aggregation hot path. Measured on the shared 2-core build
// machine (FedAvg over stored updates, test/bench/aggregate.bench.ts): the fused JS loop over
// Float32Array ran at 0.5–1.2 GB/s; these kernels at 9–12 GB/s with the update read straight into
// their memory (copying it there first halved that); worker threads over slices gained ~10% (the
// second core is not free on that machine), so aggregation stays on one thread with the reads of
// the next updates on the thread pool.
// The arithmetic is the JS loop's, lane for lane: v and acc widened to float64, c * v + acc in
// float64, rounded once to float32 — results are bit-identical to `acc[i] += c * v[i]`.
import { fail } from '../../shared/errors.ts';

const leb = (n: number): number[] => {
  const out: number[] = [];
  do {
    let b = n & 0x7f;
    n >>>= 7;
    if (n) b |= 0x80;
    out.push(b);
  } while (n);
  return out;
};
const vec = (bytes: number[]) => [...leb(bytes.length), ...bytes];
const name = (s: string) => vec([...s].map((c) => c.charCodeAt(0)));
const simd = (op: number) => [0xfd, ...leb(op)];
const get = (i: number) => [0x20, i];
const set = (i: number) => [0x21, i];
const load = [...simd(0x00), 0, 0];
const store = [...simd(0x0b), 0, 0];
const promoteLow = simd(0x5f);
const demote = simd(0x5e);
const f64add = simd(0xf0);
const f64sub = simd(0xf1);
const f64mul = simd(0xf2);
const shuffle = (lanes: number[]) => [...simd(0x0d), ...lanes];
const HIGH_HALF = [8, 9, 10, 11, 12, 13, 14, 15, 8, 9, 10, 11, 12, 13, 14, 15];
const JOIN_LOW_HALVES = [0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23];
const I32_ADD = 0x6a;
const I32_GE_U = 0x4f;
/** while (i < nbytes) { body; i += 16 } with i in local `i`, nbytes in local `n`. */
const loop16 = (i: number, n: number, body: number[]) => [
  0x02, 0x40, 0x03, 0x40, ...get(i), ...get(n), I32_GE_U, 0x0d, 1,
  ...body,
  ...get(i), 0x41, 16, I32_ADD, ...set(i), 0x0c, 0, 0x0b, 0x0b,
];

// addScaled(acc, v, nbytes, c) -> i32: locals 4 i | 5 c2 | 6 chk | 7 x | 8 lo | 9 hi | 10 a
const addScaledBody = [
  2, 1, 0x7f, 6, 0x7b,
  ...get(3), ...simd(0x14), ...set(5), // c2 = f64x2.splat(c)
  ...loop16(4, 2, [
    ...get(1), ...get(4), I32_ADD, ...load, ...set(7),
    ...get(7), ...promoteLow, ...get(5), ...f64mul, ...set(8),
    ...get(7), ...get(7), ...shuffle(HIGH_HALF), ...promoteLow, ...get(5), ...f64mul, ...set(9),
    ...get(6), ...get(8), ...get(9), ...f64add, ...f64add, ...set(6), // NaN/Inf in v poison chk
    ...get(0), ...get(4), I32_ADD, ...load, ...set(10),
    ...get(0), ...get(4), I32_ADD,
    ...get(10), ...promoteLow, ...get(8), ...f64add, ...demote,
    ...get(10), ...get(10), ...shuffle(HIGH_HALF), ...promoteLow, ...get(9), ...f64add, ...demote,
    ...shuffle(JOIN_LOW_HALVES), ...store,
  ]),
  // chk - chk is NaN iff chk is NaN or ±Inf
  ...get(6), ...get(6), ...f64sub, ...set(6), ...get(6), ...get(6), ...simd(0x48), ...simd(0x53),
  0x0b,
];

// sumOfSquares(v, nbytes) -> f64: locals 2 i | 3 s | 4 x | 5 lo | 6 hi
const sumOfSquaresBody = [
  2, 1, 0x7f, 4, 0x7b,
  ...loop16(2, 1, [
    ...get(0), ...get(2), I32_ADD, ...load, ...set(4),
    ...get(4), ...promoteLow, ...set(5),
    ...get(4), ...get(4), ...shuffle(HIGH_HALF), ...promoteLow, ...set(6),
    ...get(3), ...get(5), ...get(5), ...f64mul, ...get(6), ...get(6), ...f64mul, ...f64add, ...f64add, ...set(3),
  ]),
  ...get(3), ...simd(0x21), 0, ...get(3), ...simd(0x21), 1, 0xa0, // lane 0 + lane 1 (f64.add)
  0x0b,
];

const section = (id: number, bytes: number[]) => [id, ...vec(bytes)];
const MODULE_BYTES = new Uint8Array([
  0x00, 0x61, 0x73, 0x6d, 1, 0, 0, 0,
  ...section(1, [2, 0x60, 4, 0x7f, 0x7f, 0x7f, 0x7c, 1, 0x7f, 0x60, 2, 0x7f, 0x7f, 1, 0x7c]),
  ...section(2, [1, ...name('env'), ...name('mem'), 2, 0, 1]),
  ...section(3, [2, 0, 1]),
  ...section(7, [2, ...name('addScaled'), 0, 0, ...name('sumOfSquares'), 0, 1]),
  ...section(10, [2, ...vec(addScaledBody), ...vec(sumOfSquaresBody)]),
]);

interface Kernels {
  addScaled(acc: number, v: number, nbytes: number, c: number): number;
  sumOfSquares(v: number, nbytes: number): number;
}

let compiled: WebAssembly.Module | undefined;
function instantiate(mem: WebAssembly.Memory): Kernels {
  compiled ??= new WebAssembly.Module(MODULE_BYTES);
  return new WebAssembly.Instance(compiled, { env: { mem } }).exports as unknown as Kernels;
}

const PAGE = 65536;
/** Elements copied into the module's memory per kernel call (256 KiB: stays in L2). */
const BLOCK = 1 << 16;
/** Elements per kernel call on vectors already in the module's memory (multiple of 4). */
const DIRECT_SLICE = 1 << 18;
/** Largest memory for the kernels (32-bit addresses, V8's 4 GiB cap); above it, plain JS. */
const MAX_WASM_BYTES = 0xe0000000;

/** acc += c * v in plain JS (tails, and adapters too large for 32-bit WebAssembly memory). */
function addScaledJs(acc: Float32Array, from: number, v: Float32Array, vFrom: number, n: number, c: number): boolean {
  let s = 0;
  for (let i = 0; i < n; i++) {
    const y = c * v[vFrom + i];
    acc[from + i] += y;
    s += y;
  }
  return s - s === 0;
}

const align16 = (bytes: number) => Math.ceil(bytes / 16) * 16;

// The memory of the last accumulator, kept for the next one (one round's aggregation is soon
// followed by the next round's): its pages are already mapped, so the next aggregation does not
// fault in and zero fresh ones. Dropped after a minute unused.
interface KernelMemory { mem: WebAssembly.Memory; k: Kernels }
let spare: (KernelMemory & { timer: NodeJS.Timeout }) | undefined;
const SPARE_MS = 60_000;

function takeMemory(bytes: number): KernelMemory {
  if (spare && spare.mem.buffer.byteLength >= bytes) {
    clearTimeout(spare.timer);
    const { mem, k } = spare;
    spare = undefined;
    return { mem, k };
  }
  const mem = new WebAssembly.Memory({ initial: Math.ceil(bytes / PAGE) });
  return { mem, k: instantiate(mem) };
}

function keepMemory(m: KernelMemory): void {
  if (spare && spare.mem.buffer.byteLength >= m.mem.buffer.byteLength) return;
  if (spare) clearTimeout(spare.timer);
  const timer = setTimeout(() => { if (spare?.mem === m.mem) spare = undefined; }, SPARE_MS);
  timer.unref();
  spare = { ...m, timer };
}

/**
 * A float32 accumulator living in WebAssembly memory. `addScaled(v, c)` adds c * v and returns
 * false if v held NaN or ±Inf (acc is then garbage: callers throw). `takeResult()` is the sum.
 * With `inputs`, the same memory holds that many input vectors (`input(i)`): a loader that
 * reads an update straight into one of them saves the copy into the kernel's memory, which
 * measured as costly as the arithmetic itself.
 */
export class F32Accumulator {
  readonly length: number;
  private readonly acc: Float32Array;
  private readonly inputs: Float32Array[] = [];
  private readonly scratch: Float32Array | undefined;
  private readonly k: Kernels | undefined;
  private memory: KernelMemory | undefined;

  constructor(n: number, o: { inputs?: number } = {}) {
    this.length = n;
    const slot = align16(n * 4);
    const count = o.inputs ?? 0;
    if (slot * (1 + count) + BLOCK * 4 > MAX_WASM_BYTES) {
      this.acc = new Float32Array(n);
      for (let i = 0; i < count; i++) this.inputs.push(new Float32Array(n));
      return;
    }
    const m = (this.memory = takeMemory(slot * (1 + count) + BLOCK * 4));
    const mem = m.mem;
    this.k = m.k;
    this.acc = new Float32Array(mem.buffer, 0, n);
    this.acc.fill(0); // (a reused memory holds the last sums)
    for (let i = 0; i < count; i++) this.inputs.push(new Float32Array(mem.buffer, slot * (1 + i), n));
    this.scratch = new Float32Array(mem.buffer, slot * (1 + count), BLOCK);
  }

  /** Input vector i (0 <= i < inputs): fill it, then addScaled(input(i), c) without a copy. */
  input(i: number): Float32Array {
    return this.inputs[i];
  }

  addScaled(v: Float32Array, c: number): boolean {
    if (v.length !== this.length) throw fail('FEDLORA_ERR_SHAPE', `vector of ${v.length} elements added to an accumulator of ${this.length}`);
    const { k, scratch, acc } = this;
    if (!k || !scratch) return addScaledJs(acc, 0, v, 0, v.length, c);
    const body = v.length & ~3;
    if (v.buffer === acc.buffer) {
      // one of our inputs: the kernel reads it where it is (in slices: V8 moves a wasm function
      // to its optimised tier between calls, never inside one long call)
      let finite = true;
      for (let off = 0; off < body; off += DIRECT_SLICE) {
        const len = Math.min(DIRECT_SLICE, body - off);
        if (k.addScaled(off * 4, v.byteOffset + off * 4, len * 4, c)) finite = false;
      }
      if (body < v.length && !addScaledJs(acc, body, v, body, v.length - body, c)) finite = false;
      return finite;
    }
    let finite = true;
    for (let off = 0; off < v.length; off += BLOCK) {
      const len = Math.min(BLOCK, v.length - off);
      const part = len & ~3;
      scratch.set(v.subarray(off, off + part));
      if (k.addScaled(off * 4, scratch.byteOffset, part * 4, c)) finite = false;
      if (part < len && !addScaledJs(acc, off + part, v, off + part, len - part, c)) finite = false;
    }
    return finite;
  }

  /** The sum: a view on the kernel memory, valid until release(). */
  result(): Float32Array {
    return this.acc;
  }

  /** The sum as an array of its own; the kernel memory goes back for the next accumulator. */
  takeResult(): Float32Array {
    if (!this.memory) return this.acc;
    const out = this.acc.slice();
    this.release();
    return out;
  }

  /** Done with this accumulator (its views must not be used any more). */
  release(): void {
    if (this.memory) keepMemory(this.memory);
    this.memory = undefined;
  }
}

let squares: { k: Kernels; scratch: Float32Array; bytes: Uint8Array } | undefined;
function squaresKernel() {
  if (!squares) {
    const mem = new WebAssembly.Memory({ initial: (BLOCK * 4) / PAGE });
    squares = { k: instantiate(mem), scratch: new Float32Array(mem.buffer, 0, BLOCK), bytes: new Uint8Array(mem.buffer, 0, BLOCK * 4) };
  }
  return squares;
}

/** sum_i v_i^2 accumulated in float64; NaN or Infinity if v holds a NaN or ±Inf. */
export function sumOfSquares(v: Float32Array): number {
  return sumOfSquaresBytes(new Uint8Array(v.buffer, v.byteOffset, v.byteLength));
}

/** The same over little-endian float32 bytes at any alignment (bytes.length a multiple of 4):
 *  they are copied once, into the kernel's own memory. */
export function sumOfSquaresBytes(b: Uint8Array): number {
  const { k, bytes } = squaresKernel();
  let s = 0;
  for (let off = 0; off < b.byteLength; off += bytes.byteLength) {
    const len = Math.min(bytes.byteLength, b.byteLength - off);
    bytes.set(b.subarray(off, off + len));
    s += k.sumOfSquares(0, len & ~15);
    for (let i = len & ~15; i < len; i += 4) {
      const x = new DataView(bytes.buffer, i, 4).getFloat32(0, true);
      s += x * x;
    }
  }
  return s;
}
