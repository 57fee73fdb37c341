// Seeded PRNGs (not for secrets: keys, DP noise and secure-aggregation masks use node:crypto).
//
// Rng: a small seeded PRNG (xoshiro128**, seeded through sha256) whose whole state is four uint32s,
// so runs are reproducible across machines and a run checkpoint can store it exactly.
// Streams are derived from a seed plus a label (tensor name, epoch, ...), which keeps values
// independent of the order in which other streams are consumed: LoRA A of a layer depends only
// on (initSeed, key), the data order of an epoch only on (seed, epoch).

import { createHash } from 'node:crypto';

export class Rng {
  private s: Uint32Array;
  constructor(state: ArrayLike<number>) {
    this.s = Uint32Array.from(state);
    if (this.s.length !== 4) throw new Error('Rng state must be 4 uint32 words');
    if (this.s.every((w) => w === 0)) this.s[0] = 0x9e3779b9; // xoshiro must not be all-zero
  }

  /** A stream for (seed, ...labels): sha256 of the canonical label string gives the state. */
  static derive(seed: number, ...labels: (string | number)[]): Rng {
    const h = createHash('sha256').update(JSON.stringify([seed, ...labels])).digest();
    return new Rng([h.readUInt32LE(0), h.readUInt32LE(4), h.readUInt32LE(8), h.readUInt32LE(12)]);
  }

  state(): number[] {
    return [...this.s];
  }

  /** Next uint32. */
  nextU32(): number {
    const s = this.s;
    const result = Math.imul(rotl(Math.imul(s[1], 5), 7), 9) >>> 0;
    const t = s[1] << 9;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  }

  /** Uniform in [0, 1) with 24 bits (exactly representable as float32). */
  nextFloat(): number {
    return (this.nextU32() >>> 8) / 16777216;
  }

  /** Uniform integer in [0, n). */
  nextInt(n: number): number {
    // rejection sampling keeps the distribution exact for any n < 2^32
    const limit = Math.floor(0x100000000 / n) * n;
    for (;;) {
      const x = this.nextU32();
      if (x < limit) return x % n;
    }
  }

  /** In-place Fisher–Yates shuffle. */
  shuffle<T>(a: T[]): T[] {
    for (let i = a.length - 1; i > 0; i--) {
      const j = this.nextInt(i + 1);
      const tmp = a[i];
      a[i] = a[j];
      a[j] = tmp;
    }
    return a;
  }
}

function rotl(x: number, k: number): number {
  return ((x << k) | (x >>> (32 - k))) >>> 0;
}

/** A deterministic 31-bit integer seed for (seed, ...labels), e.g. a dropout seed per micro-batch. */
export function deriveSeed(seed: number, ...labels: (string | number)[]): number {
  return Rng.derive(seed, ...labels).nextU32() >>> 1;
}

// mulberry32: a small, fast, deterministic 32-bit PRNG for data order, synthetic data and
// masks where reproducibility matters and cryptographic strength does not.
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
