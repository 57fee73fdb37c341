// Fixed-point encoding of clipped deltas into Z_2^32 for secure aggregation.
// Each coordinate is clipped to [-c, c] and mapped to an integer in [0, L] by stochastic
// rounding of (x + c) / (2c) * L, with L = floor((2^32 - 1) / n). The sum of n sites is then
// at most n L <= 2^32 - 1: it cannot wrap around, so the modular sum IS the integer sum.
// Unbiased: E[q] = (x + c) / (2c) * L. Decoding the sum of m sites: sum x = Q 2c / L - m c,
// with error at most m * 2c / L per coordinate (e.g. n = 50, c = 1: L ~ 8.6e7, step 2.3e-8).
import { randomBytes } from 'node:crypto';
import { fail } from '../errors.ts';
import { keystream } from './prg.ts';
import { l2norm } from '../tensors.ts';

export function levelsFor(n: number): number {
  if (!(Number.isInteger(n) && n >= 1 && n <= 1_000_000)) throw fail('FEDLORA_ERR_SECAGG', `quantise: site count must be an integer >= 1, got ${n}`);
  return Math.floor(0xffffffff / n);
}

/** Quantise (clip to [-c, c], stochastic rounding). `seed` only for reproducible tests. */
export function quantize(x: Float32Array, c: number, n: number, seed?: Buffer): Uint32Array {
  if (!(c > 0 && Number.isFinite(c))) throw fail('FEDLORA_ERR_SECAGG', `quantise: clip range must be > 0, got ${c}`);
  const L = levelsFor(n);
  const out = new Uint32Array(x.length);
  const rnd = seed ? keystream(seed, 'secagg-stochastic-rounding').bytes(4 * x.length) : randomBytes(4 * x.length);
  const u = new Uint32Array(rnd.buffer, rnd.byteOffset, x.length);
  for (let i = 0; i < x.length; i++) {
    const v = x[i];
    if (v - v !== 0) throw fail('FEDLORA_ERR_UPDATE_NONFINITE', `secagg: input has ${v} at element ${i}`);
    const clipped = v > c ? c : v < -c ? -c : v;
    const f = ((clipped + c) / (2 * c)) * L;
    const fl = Math.floor(f);
    const q = fl + ((u[i] / 4294967296) < f - fl ? 1 : 0);
    out[i] = q > L ? L : q;
  }
  return out;
}

/** Decode the (already unmasked) sum of `m` sites' quantised vectors. */
export function dequantizeSum(q: Uint32Array, c: number, n: number, m: number): Float32Array {
  const L = levelsFor(n);
  const out = new Float32Array(q.length);
  for (let i = 0; i < q.length; i++) out[i] = (q[i] * 2 * c) / L - m * c;
  return out;
}

/** Site side, before masking: scale x in place to L2 norm <= C (the round's dp_clip_norm).
 *  Returns the norm before clipping and the adaptive-clipping bit (1 = NOT clipped). */
export function clipL2InPlace(x: Float32Array, C: number): { norm: number; unclippedBit: number } {
  const norm = l2norm(x);
  if (norm > C) {
    const f = C / norm;
    for (let i = 0; i < x.length; i++) x[i] *= f;
    return { norm, unclippedBit: 0 };
  }
  return { norm, unclippedBit: 1 };
}
