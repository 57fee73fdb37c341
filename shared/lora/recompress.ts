// LoRA factors at a chosen rank, never forming the out x in product (our own: the exact
// aggregation and re-compression are the product). Two routes:
//   recompress   the best rank-k factors of W = sum_k w_k B_k A_k, whatever each B_k A_k's rank:
//                [w_1 B_1 | ... | w_K B_K] = Q_B R_B, [A_1; ...; A_K]^T = Q_A R_A (thin QR), the
//                small core R_B R_A^T = U S V^T (Jacobi SVD), B' = Q_B U_k S_k^1/2,
//                A' = S_k^1/2 V_k^T Q_A^T. B'A' = W exactly when rank(W) <= k, else the best
//                rank-k approximation (Eckart-Young). Directions with no energy (a zero product,
//                as in version 0) get A rows from `fillA` and zero B columns, so the product is
//                unchanged and the direction can still be trained (LoRA with A = B = 0 has no
//                gradient).
//   fitFrozenA   with A frozen (FFA), a rank-k site keeps A_k = the first k rows of the shared A:
//                B' = argmin ||B' A_k - B A||_F = B (A Q) R^-T with A_k^T = Q R — the projection
//                of the product onto A_k's row space (exactly B[:, :k] when B's other columns are 0).
// Rank variants keep PEFT's scaling (alpha / r) equal at every rank (shared/lora/rank.ts), so the
// factors of different ranks multiply out to comparable products.
import { fail } from '../errors.ts';
import type { AdapterLayout } from '../tensors.ts';
import { householderQR, jacobiSVD, mat, matmul, transpose, type Mat } from './linalg.ts';
import { loraPairs, type LoraPair } from './pairs.ts';

export interface WeightedFactors {
  weight: number;
  b: Mat; // out x r_k
  a: Mat; // r_k x in
}

/** Relative size below which a singular value counts as no energy (then `fillA` is used). */
const NO_ENERGY = 1e-7;

/** The best rank-`rank` factors of sum_k weight_k B_k A_k (see the file comment). */
export function recompress(parts: readonly WeightedFactors[], rank: number, fillA?: Mat): { b: Mat; a: Mat; truncatedEnergy: number } {
  if (parts.length === 0) throw fail('FEDLORA_ERR_AGGREGATION', 'recompress: no factors');
  const out = parts[0].b.rows, inF = parts[0].a.cols;
  const cols = parts.reduce((n, p) => n + p.b.cols, 0);
  const bs = mat(out, cols); // row o, column c: w_k B_k[o, j]
  const asT = mat(inF, cols); // row i, column c: A_k[j, i]
  let c0 = 0;
  for (const p of parts) {
    if (p.b.rows !== out || p.a.cols !== inF || p.a.rows !== p.b.cols) throw fail('FEDLORA_ERR_SHAPE', `recompress: factors [${p.b.rows}x${p.b.cols}] x [${p.a.rows}x${p.a.cols}] do not match [${out}x?] x [?x${inF}]`);
    const r = p.b.cols;
    for (let o = 0; o < out; o++) for (let j = 0; j < r; j++) bs.data[o * cols + c0 + j] = p.weight * p.b.data[o * r + j];
    for (let j = 0; j < r; j++) for (let i = 0; i < inF; i++) asT.data[i * cols + c0 + j] = p.a.data[j * inF + i];
    c0 += r;
  }
  const qb = householderQR(bs);
  const qa = householderQR(asT);
  const { u, s, v } = jacobiSVD(matmul(qb.r, transpose(qa.r)));
  let truncatedEnergy = 0;
  for (let j = rank; j < s.length; j++) truncatedEnergy += s[j] * s[j];
  const qu = matmul(qb.q, u); // out x p
  const qv = matmul(qa.q, v); // in x p
  const b = mat(out, rank), a = mat(rank, inF);
  const top = s.length ? s[0] : 0;
  for (let j = 0; j < rank; j++) {
    const energy = j < s.length && s[j] > NO_ENERGY * top && top > 0;
    if (!energy) {
      if (fillA) for (let i = 0; i < inF; i++) a.data[j * inF + i] = fillA.data[j * inF + i];
      continue; // B column stays 0: the product is unchanged
    }
    const sq = Math.sqrt(s[j]);
    for (let o = 0; o < out; o++) b.data[o * rank + j] = qu.data[o * qu.cols + j] * sq;
    for (let i = 0; i < inF; i++) a.data[j * inF + i] = qv.data[i * qv.cols + j] * sq;
  }
  return { b, a, truncatedEnergy };
}

/** With A frozen: A_k = A's first `rank` rows and the B' that best keeps B A (file comment). */
function fitFrozenA(b: Mat, a: Mat, rank: number, what = 'adapter'): { b: Mat; a: Mat } {
  const inF = a.cols;
  const ak = mat(rank, inF, a.data.subarray(0, rank * inF));
  const { q, r } = householderQR(transpose(ak)); // in x rank, rank x rank (upper)
  const m = matmul(b, matmul(a, q)); // out x rank
  const out = mat(b.rows, rank);
  for (let j = 0; j < rank; j++) {
    if (!(Math.abs(r.data[j * rank + j]) > 1e-12)) throw fail('FEDLORA_ERR_AGGREGATION', `${what}: the frozen A's first ${rank} rows are linearly dependent; no rank-${rank} fit`);
  }
  // B' R^T = M: back substitution per row (R upper triangular).
  for (let o = 0; o < b.rows; o++) {
    for (let j = rank - 1; j >= 0; j--) {
      let x = m.data[o * rank + j];
      for (let i = j + 1; i < rank; i++) x -= r.data[j * rank + i] * out.data[o * rank + i];
      out.data[o * rank + j] = x / r.data[j * rank + j];
    }
  }
  return { b: out, a: ak };
}

const matOf = (flat: Float32Array, e: { offset: number; shape: number[] }): Mat => mat(e.shape[0], e.shape[1], flat.subarray(e.offset, e.offset + e.shape[0] * e.shape[1]));

function put(flat: Float32Array, e: { offset: number; length: number }, m: Mat): void {
  for (let i = 0; i < e.length; i++) flat[e.offset + i] = m.data[i];
}

/** Pairs of a layout by module name. */
export function pairsByModule(layout: AdapterLayout): Map<string, LoraPair> {
  return new Map(loraPairs(layout).pairs.map((p) => [p.module, p]));
}

/**
 * A published adapter (`flat` in `from`, the job's rank) at a lower rank (`to`'s layout, same
 * tensor names): re-compressed (A trained) or fitted to the first rows of a frozen A (FFA).
 * `fill` (in `from`) gives the A rows of directions without energy (the job's version-0 A).
 */
export function adapterAtRank(flat: Float32Array, from: AdapterLayout, to: AdapterLayout, o: { frozenA: boolean; fill?: Float32Array }): Float32Array {
  const src = pairsByModule(from);
  const { pairs, others } = loraPairs(to);
  const out = new Float32Array(to.total);
  const byName = new Map(from.entries.map((e) => [e.name, e]));
  for (const e of others) {
    const f = byName.get(e.name);
    if (!f || f.length !== e.length) throw fail('FEDLORA_ERR_SHAPE', `adapterAtRank: ${e.name} is not in the source layout with the same shape`);
    out.set(flat.subarray(f.offset, f.offset + f.length), e.offset);
  }
  for (const p of pairs) {
    const s = src.get(p.module);
    if (!s || s.inF !== p.inF || s.outF !== p.outF) throw fail('FEDLORA_ERR_SHAPE', `adapterAtRank: module ${p.module} is not in the source layout with the same shape`);
    if (p.r > s.r) throw fail('FEDLORA_ERR_SHAPE', `adapterAtRank: rank ${p.r} is above the adapter's rank ${s.r} (${p.module})`);
    const b = matOf(flat, s.b), a = matOf(flat, s.a);
    const got = o.frozenA ? fitFrozenA(b, a, p.r, p.module) : recompress([{ weight: 1, b, a }], p.r, o.fill ? matOf(o.fill, s.a) : undefined);
    put(out, p.b, got.b);
    put(out, p.a, got.a);
  }
  return out;
}
