// Near-duplicate records (the same visit exported twice with small edits, a note copied forward
// with one value changed) by MinHash over character 4-grams of the stored (de-identified) text,
// with LSH banding so a new record is compared only with records that share a band: 120 hash
// functions in 20 bands of 6 rows, so a pair at Jaccard 0.8 shares a band with probability
// 1 − (1 − 0.8⁶)²⁰ ≈ 0.998 and one at 0.4 with ≈ 0.08. Candidates are then kept when the
// signatures agree on at least `threshold` of their positions (the Jaccard estimate).
// Our own, small: a dependency for 60 lines of hashing is not worth its supply chain.

const MINHASH_PERMUTATIONS = 120;
const MINHASH_BANDS = 20;
const ROWS = MINHASH_PERMUTATIONS / MINHASH_BANDS;
const SHINGLE = 4;

/** murmur3's 32-bit finaliser: a good mixer, one per hash function with its own seed. */
function fmix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

const SEEDS = Uint32Array.from({ length: MINHASH_PERMUTATIONS }, (_, i) => fmix32(0x9e3779b9 ^ Math.imul(i + 1, 0x27d4eb2f)));

/** Lower case, whitespace runs as one space: what two copies of a note differ in least. */
const normaliseForShingles = (s: string): string => s.toLowerCase().replace(/\s+/g, ' ').trim();

function shingleHashes(text: string): Set<number> {
  const cps: number[] = [];
  for (const c of normaliseForShingles(text)) cps.push(c.codePointAt(0)!);
  const out = new Set<number>();
  const n = Math.max(1, cps.length - SHINGLE + 1);
  for (let i = 0; i < n; i++) {
    let h = 0x811c9dc5; // FNV-1a over the shingle's code points
    for (let j = i; j < Math.min(i + SHINGLE, cps.length); j++) h = Math.imul(h ^ cps[j], 0x01000193);
    out.add(h >>> 0);
  }
  return out;
}

export function minhashSignature(text: string): Uint32Array {
  const sig = new Uint32Array(MINHASH_PERMUTATIONS).fill(0xffffffff);
  for (const x of shingleHashes(text)) {
    for (let i = 0; i < MINHASH_PERMUTATIONS; i++) {
      const v = fmix32(x ^ SEEDS[i]);
      if (v < sig[i]) sig[i] = v;
    }
  }
  return sig;
}

/** One 32-bit key per band (signed, as SQLite stores it). */
export function bandKeys(sig: Uint32Array): number[] {
  const out: number[] = [];
  for (let b = 0; b < MINHASH_BANDS; b++) {
    let h = 0x811c9dc5 ^ b;
    for (let r = 0; r < ROWS; r++) h = Math.imul(h ^ sig[b * ROWS + r], 0x01000193);
    out.push(fmix32(h) | 0);
  }
  return out;
}

/** Share of positions where two signatures agree: an unbiased estimate of the Jaccard similarity. */
export function signatureSimilarity(a: Uint32Array, b: Uint32Array): number {
  let same = 0;
  for (let i = 0; i < a.length; i++) if (a[i] === b[i]) same++;
  return same / a.length;
}

export const signatureToBlob = (s: Uint32Array): Buffer => Buffer.from(s.buffer, s.byteOffset, s.byteLength);
export const blobToSignature = (b: Buffer): Uint32Array => new Uint32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
