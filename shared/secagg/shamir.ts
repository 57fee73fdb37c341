// Shamir t-of-n secret sharing over the prime field GF(p), p = 2^127 - 1 (a Mersenne prime).
// A 32-byte secret is cut into 15-byte chunks (< p) shared independently with the same x.
// Any t shares reconstruct; any t - 1 shares are consistent with EVERY possible secret (for each
// candidate there is exactly one degree-(t-1) polynomial through it and the t - 1 points), so
// they reveal nothing. Coefficients come from crypto.randomBytes.
import { randomBytes } from 'node:crypto';
import { fail } from '../errors.ts';

export const P = (1n << 127n) - 1n;
const CHUNK = 15;

export interface Share {
  x: number; // 1..n (never 0: f(0) is the secret)
  y: string[]; // hex field elements, one per chunk
}

const mod = (a: bigint) => ((a % P) + P) % P;
function randomField(): bigint {
  for (;;) {
    const v = BigInt('0x' + randomBytes(16).toString('hex')) & ((1n << 127n) - 1n);
    if (v < P) return v;
  }
}
function inv(a: bigint): bigint {
  // Fermat: a^(p-2)
  let r = 1n, b = mod(a), e = P - 2n;
  if (b === 0n) throw fail('FEDLORA_ERR_SECAGG', 'shamir: inverse of zero (duplicate share x?)');
  while (e > 0n) {
    if (e & 1n) r = (r * b) % P;
    b = (b * b) % P;
    e >>= 1n;
  }
  return r;
}

function chunksOf(secret: Buffer): bigint[] {
  const out: bigint[] = [];
  for (let i = 0; i < secret.length; i += CHUNK) out.push(BigInt('0x' + (secret.subarray(i, i + CHUNK).toString('hex') || '0')));
  return out;
}

/** Split `secret` into n shares with threshold t (x = 1..n). */
export function split(secret: Buffer, t: number, n: number): Share[] {
  if (!(Number.isInteger(t) && Number.isInteger(n) && t >= 1 && t <= n)) throw fail('FEDLORA_ERR_SECAGG', `shamir: need 1 <= t <= n, got t ${t}, n ${n}`);
  const polys = chunksOf(secret).map((s) => [s, ...Array.from({ length: t - 1 }, randomField)]);
  return Array.from({ length: n }, (_, k) => {
    const x = BigInt(k + 1);
    return { x: k + 1, y: polys.map((c) => { let acc = 0n; for (let j = c.length - 1; j >= 0; j--) acc = (acc * x + c[j]) % P; return acc.toString(16); }) };
  });
}

/** Lagrange interpolation at `at` (0 = the secret) of the chunk-wise polynomials. */
export function interpolate(shares: Share[], at = 0n): bigint[] {
  const xs = shares.map((s) => BigInt(s.x));
  if (new Set(xs).size !== xs.length) throw fail('FEDLORA_ERR_SECAGG', 'shamir: duplicate share x coordinates');
  const nChunks = shares[0].y.length;
  const out: bigint[] = [];
  for (let c = 0; c < nChunks; c++) {
    let acc = 0n;
    for (let i = 0; i < shares.length; i++) {
      let num = 1n, den = 1n;
      for (let j = 0; j < shares.length; j++) if (j !== i) { num = mod(num * (at - xs[j])); den = mod(den * (xs[i] - xs[j])); }
      acc = mod(acc + BigInt('0x' + shares[i].y[c]) * num * inv(den));
    }
    out.push(acc);
  }
  return out;
}

/** Reconstruct a `length`-byte secret from at least t shares (uses the first t given). */
export function combine(shares: Share[], t: number, length: number): Buffer {
  if (shares.length < t) throw fail('FEDLORA_ERR_SECAGG', `shamir: ${shares.length} shares, threshold is ${t}`);
  const vals = interpolate(shares.slice(0, t));
  const parts: Buffer[] = [];
  let left = length;
  for (const v of vals) {
    const len = Math.min(CHUNK, left);
    if (v >= 1n << BigInt(8 * len)) throw fail('FEDLORA_ERR_SECAGG', 'shamir: shares do not interpolate to a valid secret (corrupted or inconsistent shares)');
    parts.push(Buffer.from(v.toString(16).padStart(2 * len, '0'), 'hex'));
    left -= len;
  }
  return Buffer.concat(parts);
}
