// The WebAssembly SIMD kernels against the plain JS loops they replace: acc += c * v must be
// bit-identical (float64 multiply-add, one rounding to float32), NaN/Inf in v must be reported
// wherever they sit (SIMD body or scalar tail), and the sum of squares must match float64 JS.
import { describe, expect, it } from 'vitest';
import { F32Accumulator, sumOfSquares, sumOfSquaresBytes } from '../../coordinator/strategies/f32-kernels.ts';
import { randomVec } from './helpers.ts';

describe('F32Accumulator', () => {
  it.each([0, 1, 3, 4, 7, 65535, 65536, 65541, 200003])('n=%i: bit-identical to acc[i] += c * v[i]', (n) => {
    const acc = new F32Accumulator(n);
    const ref = new Float32Array(n);
    for (let k = 0; k < 3; k++) {
      const v = randomVec(n, 11 + k, 10 ** (k - 1));
      const c = [0.37, 1 / 3, 2.5e-3][k];
      expect(acc.addScaled(v, c)).toBe(true);
      for (let i = 0; i < n; i++) ref[i] += c * v[i];
    }
    const got = acc.result();
    expect(Buffer.from(got.buffer, got.byteOffset, got.byteLength).equals(Buffer.from(ref.buffer))).toBe(true);
  });

  it.each([5, 65541])('n=%i: input slots in the kernel memory give the same bits without a copy', (n) => {
    const acc = new F32Accumulator(n, { inputs: 2 });
    const ref = new Float32Array(n);
    for (let k = 0; k < 4; k++) {
      const slot = acc.input(k % 2);
      slot.set(randomVec(n, 40 + k));
      expect(acc.addScaled(slot, 0.25 + k)).toBe(true);
      for (let i = 0; i < n; i++) ref[i] += (0.25 + k) * slot[i];
    }
    expect(Array.from(acc.result())).toEqual(Array.from(ref));
    acc.input(1)[n - 1] = NaN;
    expect(acc.addScaled(acc.input(1), 1)).toBe(false);
  });

  it.each([[NaN, 5], [Infinity, 65536 + 2], [-Infinity, 70000]])('reports %s at element %i', (bad, at) => {
    const v = randomVec(70001, 3);
    v[at] = bad;
    expect(new F32Accumulator(v.length).addScaled(v, 0.5)).toBe(false);
  });

  it('refuses a vector of another length', () => {
    expect(() => new F32Accumulator(8).addScaled(new Float32Array(9), 1)).toThrow(expect.objectContaining({ code: 'FEDLORA_ERR_SHAPE' }));
  });
});

describe('sumOfSquares', () => {
  it('matches a float64 JS sum, at any byte alignment; NaN/Inf propagate', () => {
    const v = randomVec(300001, 5, 3);
    let ref = 0;
    for (const x of v) ref += x * x;
    expect(sumOfSquares(v)).toBeCloseTo(ref, 6);
    const raw = Buffer.alloc(v.byteLength + 3);
    Buffer.from(v.buffer).copy(raw, 3);
    expect(sumOfSquaresBytes(raw.subarray(3))).toBeCloseTo(ref, 6);
    v[299999] = Infinity;
    expect(sumOfSquares(v)).toBe(Infinity);
    v[7] = NaN;
    expect(sumOfSquares(v)).toBeNaN();
  });
});
