// Mask expansion: a 256-bit key -> a vector of uint32 from the AES-256-CTR keystream
// (node:crypto). The IV is fixed because every key is used for exactly one expansion.
import { createCipheriv, hkdfSync } from 'node:crypto';

function aesCtrBytes(key: Buffer, n: number): Buffer {
  const c = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return c.update(Buffer.alloc(n));
}

export function expandMask(key: Buffer, dim: number): Uint32Array {
  const b = aesCtrBytes(key, 4 * dim);
  return new Uint32Array(b.buffer, b.byteOffset, dim);
}

export function hkdf32(ikm: Buffer, salt: string, info: string): Buffer {
  return Buffer.from(hkdfSync('sha256', ikm, Buffer.from(salt), Buffer.from(info), 32));
}

/** Stream of bytes derived from a seed (tests' reproducible stochastic rounding). */
export function keystream(seed: Buffer, label: string): { bytes(n: number): Buffer } {
  const key = hkdf32(seed, 'fedlora-secagg-v1', label);
  const c = createCipheriv('aes-256-ctr', key, Buffer.alloc(16));
  return { bytes: (n: number) => c.update(Buffer.alloc(n)) };
}
