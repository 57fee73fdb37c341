// mulberry32: a small, fast, deterministic 32-bit PRNG for data order, synthetic data and
// masks where reproducibility matters and cryptographic strength does not (keys, DP noise and
// secure-aggregation masks use node:crypto instead).
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
