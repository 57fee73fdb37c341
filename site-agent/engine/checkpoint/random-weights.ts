// Random weights for test and benchmark checkpoints, generated tensor by tensor in chunks (a 7B
// checkpoint never sits in memory). Values depend only on (seed, tensor name), never on chunking
// or sharding. Two styles:
//  - 'hf': transformers' _init_weights (Linear/Embedding ~ N(0, 0.02), RMSNorm = 1, biases 0 or
//    N(0, biasStd)): what tiny test models have always used.
//  - 'realistic': scales like a trained checkpoint, so that quantization error figures mean
//    something. Trained LLM weights are not i.i.d.: a few input channels carry much larger
//    weights (the "outlier features" of LLM.int8(), what AWQ protects), rows and columns differ in
//    scale, norm weights are far from 1, and the final norm makes next-token distributions peaked
//    (logit std about 3 rather than HF init's ~0.8). Blockwise quantization along the input axis
//    feels exactly these: an outlier channel sets its block's scale and coarsens the other 31.

import { createHash } from 'node:crypto';
import { encodeFloats } from '../../../shared/safetensors.ts';
import type { TensorSource, TensorSpec } from '../../../shared/safetensors-writer.ts';

export type InitStyle = 'hf' | 'realistic';

/** Deterministic N(0, std) stream: xoshiro128** seeded from sha256(seed, name), Box-Muller pairs.
 *  The generator is shared/prng.ts's Rng (same outputs for the same state words) kept in four
 *  fields instead of a Uint32Array: measured 2.7x faster per draw, and a 7B checkpoint takes
 *  billions of draws. */
export class NormalStream {
  private a: number; private b: number; private c: number; private d: number;
  private spare: number | null = null;
  constructor(seed: number, name: string) {
    const h = createHash('sha256').update(`${seed}\0${name}`).digest();
    this.a = h.readUInt32LE(0) | 1; this.b = h.readUInt32LE(4); this.c = h.readUInt32LE(8); this.d = h.readUInt32LE(12);
  }
  private next32(): number {
    const r = Math.imul(((Math.imul(this.b, 5) << 7) | (Math.imul(this.b, 5) >>> 25)), 9) >>> 0;
    const t = this.b << 9;
    this.c ^= this.a; this.d ^= this.b; this.b ^= this.c; this.a ^= this.d; this.c ^= t;
    this.d = (this.d << 11) | (this.d >>> 21);
    return r;
  }
  /** Uniform in (0, 1) from one 32-bit draw (never 0, so log() stays finite). */
  private nextU(): number {
    return (this.next32() + 0.5) / 2 ** 32;
  }
  /** Fill `out` with the next values of the stream times `std`. */
  fill(out: Float32Array, std = 1): Float32Array {
    let i = 0;
    if (this.spare !== null && out.length > 0) { out[i++] = this.spare * std; this.spare = null; }
    for (; i < out.length; i += 2) {
      const u1 = this.nextU();
      const u2 = this.nextU();
      const r = Math.sqrt(-2 * Math.log(u1));
      out[i] = r * Math.cos(2 * Math.PI * u2) * std;
      const s = r * Math.sin(2 * Math.PI * u2);
      if (i + 1 < out.length) out[i + 1] = s * std;
      else this.spare = s;
    }
    return out;
  }
}

/** n deterministic N(0, std) samples for one tensor name. */
export function seededNormal(seed: number, name: string, n: number, std: number): Float32Array {
  return new NormalStream(seed, name).fill(new Float32Array(n), std);
}

const CHUNK_VALUES = 4 * 1024 * 1024;

const isNorm = (name: string) => name.endsWith('layernorm.weight') || name === 'model.norm.weight';

/** Per-input-channel scales: lognormal spread plus ~1% outlier channels at 6x. */
function channelScales(seed: number, name: string, n: number): Float32Array {
  const z = seededNormal(seed, `${name}#channels`, 2 * n, 1);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.exp(0.3 * z[i]) * (Math.abs(z[n + i]) > 2.576 ? 6 : 1);
  return out;
}

/** Fills `out` with the values of `name` (a [rows, cols] or [n] tensor) starting at flat index `start`. */
type Filler = (out: Float32Array, start: number) => void;

function realisticFiller(seed: number, name: string, shape: number[]): Filler {
  const stream = new NormalStream(seed, name);
  const n = shape.reduce((a, b) => a * b, 1);
  if (isNorm(name)) {
    return (out) => {
      stream.fill(out);
      for (let i = 0; i < out.length; i++) out[i] = Math.exp(0.25 * out[i]);
    };
  }
  if (name.endsWith('.bias')) return (out) => void stream.fill(out, 0.05);
  const [rows, cols] = shape.length === 2 ? shape : [1, n];
  const col = channelScales(seed, name, cols);
  const row = seededNormal(seed, `${name}#rows`, rows, 1).map((z) => Math.exp(0.2 * z));
  // keep the tensor's overall std at 0.02 (HF's initializer_range) despite the scale factors
  let ms = 0;
  for (let i = 0; i < cols; i++) ms += col[i] * col[i];
  const norm = 0.02 / Math.sqrt(ms / cols);
  for (let i = 0; i < cols; i++) col[i] *= norm;
  return (out, start) => {
    stream.fill(out);
    let c = start % cols, r = Math.floor(start / cols), rs = row[r];
    for (let i = 0; i < out.length; i++) {
      out[i] *= col[c] * rs;
      if (++c === cols) { c = 0; rs = row[++r]; }
    }
  };
}

function hfFiller(seed: number, name: string, biasStd: number, lmHeadStd: number, std: number): Filler {
  if (isNorm(name)) return (out) => void out.fill(1);
  if (name.endsWith('.bias')) {
    if (!biasStd) return (out) => void out.fill(0);
    const s = new NormalStream(seed, name);
    return (out) => void s.fill(out, biasStd);
  }
  const s = new NormalStream(seed, name);
  const w = name === 'lm_head.weight' ? lmHeadStd : std;
  return (out) => void s.fill(out, w);
}

/** A TensorSource writing each tensor's random values in its dtype, chunk by chunk. */
/** 'hf' style: `lmHeadStd` the std of an untied lm_head (HF: 0.02, which caps logits near ±0.02·hidden),
 *  `initializerRange` that of every other Linear/Embedding weight (HF's default 0.02). */
export function randomWeightSource(seed: number, style: InitStyle, biasStd = 0, lmHeadStd = 0.02, initializerRange = 0.02): TensorSource {
  return (spec: TensorSpec, write) => {
    if (spec.dtype !== 'F32' && spec.dtype !== 'F16' && spec.dtype !== 'BF16') throw new Error(`random weights: ${spec.name} has dtype ${spec.dtype}`);
    const n = spec.shape.reduce((a, b) => a * b, 1);
    const fill = style === 'realistic' ? realisticFiller(seed, spec.name, spec.shape) : hfFiller(seed, spec.name, biasStd, lmHeadStd, initializerRange);
    const buf = new Float32Array(Math.min(n, CHUNK_VALUES));
    for (let start = 0; start < n; start += buf.length) {
      const part = buf.subarray(0, Math.min(buf.length, n - start));
      fill(part, start);
      write(encodeFloats(part, spec.dtype)); // written synchronously before buf is refilled
    }
  };
}
