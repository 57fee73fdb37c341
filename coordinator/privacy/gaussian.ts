// Cryptographically sound Gaussian noise for DP aggregation. Uniforms come from an AES-256-CTR
// keystream (node:crypto), turned into normals with the Box-Muller transform on 53-bit
// uniforms. Math.random is never used: its state is recoverable from outputs, which would
// let an observer subtract the noise.
//
// Seeding tradeoff: with `deterministicSeed` the key is HKDF-SHA256(round seed), so a test (or
// an auditor holding the seed) can reproduce the exact noise — but anyone who learns the seed
// can also remove it, destroying the privacy guarantee. The coordinator therefore seeds with its
// SECRET noise key bound to the round (a Buffer: privacy/noise-key.ts), so a round redone after a
// crash gets the same noise but nobody without the key can; `seed` undefined = a fresh 256-bit
// key from crypto.randomBytes.
import { createCipheriv, hkdfSync, randomBytes } from 'node:crypto';

export interface GaussianSource {
  /** Fill `out` with N(0, std^2) samples (add = true adds them to out instead). */
  fill(out: Float32Array | Float64Array, std: number, add?: boolean): void;
  /** One N(0,1) sample. */
  next(): number;
  /** One uniform in [0, 1). */
  uniform(): number;
}

/** A keystream of uniform bytes from AES-256-CTR; `label` separates independent streams. */
export function keystream(seed: number | Buffer | undefined, label: string): { bytes(n: number): Buffer } {
  const key = seed === undefined
    ? randomBytes(32)
    : Buffer.from(hkdfSync('sha256', typeof seed === 'number' ? Buffer.from(String(seed)) : seed, Buffer.from('fedlora-v1'), Buffer.from(label), 32));
  const cipher = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return { bytes: (n: number) => cipher.update(Buffer.alloc(n)) };
}

export function createGaussian(seed: number | Buffer | undefined, label = 'dp-noise'): GaussianSource {
  const ks = keystream(seed, label);
  let buf: Buffer = Buffer.alloc(0);
  let pos = 0;
  const CHUNK = 1 << 16;
  const u53 = (): number => {
    if (pos + 8 > buf.length) {
      buf = ks.bytes(CHUNK);
      pos = 0;
    }
    const hi = buf.readUInt32LE(pos) >>> 5; // 27 bits
    const lo = buf.readUInt32LE(pos + 4) >>> 6; // 26 bits
    pos += 8;
    return (hi * 67108864 + lo) / 9007199254740992;
  };
  let spare: number | null = null;
  const next = (): number => {
    if (spare !== null) {
      const s = spare;
      spare = null;
      return s;
    }
    const u1 = 1 - u53(); // (0, 1]: log is finite
    const u2 = u53();
    const r = Math.sqrt(-2 * Math.log(u1));
    spare = r * Math.sin(2 * Math.PI * u2);
    return r * Math.cos(2 * Math.PI * u2);
  };
  return {
    next,
    uniform: u53,
    fill(out, std, add = false) {
      if (std === 0) {
        if (!add) out.fill(0);
        return;
      }
      for (let i = 0; i < out.length; i++) out[i] = (add ? out[i] : 0) + std * next();
    },
  };
}
