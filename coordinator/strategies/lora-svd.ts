// Exact LoRA aggregation by re-compression: the weighted sum of the sites' low-rank products
//   W = sum_k p_k B_k A_k = [p_1 B_1 | ... | p_K B_K] [A_1; ...; A_K] = Bs As
// is recompressed to rank r without forming the out x in matrix: QR of Bs (out x Kr) and of
// As^T (in x Kr), SVD of the small core R_B R_A^T (Kr x Kr) = U S V^T, then
//   B' = Q_B U_r S_r^1/2,   A' = S_r^1/2 V_r^T Q_A^T.
// B'A' = W exactly when rank(W) <= r, else the best rank-r approximation (Eckart-Young).
// Sites send their full local A_k, B_k (payloadKind 'weights'); non-LoRA tensors are averaged.
// Memory: all updates are loaded (each module needs every site's factors): O(sites x adapter).
import type { Strategy } from './types.ts';
import { checkUpdate, checkUpdates, weightsOf } from './common.ts';
import { householderQR, jacobiSVD, mat, matmul, transpose } from './linalg.ts';
import { loraPairs } from './lora-pairs.ts';

export function createLoraSvd(opts: { weightCap?: number } = {}): Strategy {
  return {
    name: 'svd',
    payloadKind: 'weights',
    configureRound: () => ({ payload: 'weights' }),
    async aggregate(updates, ctx) {
      checkUpdates(updates, ctx, 'svd');
      const ws = weightsOf(updates, { kind: 'examples', cap: opts.weightCap });
      const total = ws.reduce((a, b) => a + b, 0);
      const p = ws.map((w) => w / total);
      const vs: Float32Array[] = [];
      for (const u of updates) vs.push(checkUpdate(await u.load(), u, ctx));
      const out = new Float32Array(ctx.layout.total);
      const { pairs, others } = loraPairs(ctx.layout);
      for (const e of others) for (let k = 0; k < vs.length; k++) for (let i = e.offset; i < e.offset + e.length; i++) out[i] += p[k] * vs[k][i];
      let residual = 0;
      for (const pr of pairs) {
        const K = vs.length, r = pr.r, Kr = K * r;
        const Bs = mat(pr.outF, Kr); // row o, column k*r + j = p_k B_k[o, j]
        const AsT = mat(pr.inF, Kr); // row i, column k*r + j = A_k[j, i]
        for (let k = 0; k < K; k++) {
          const v = vs[k];
          for (let o = 0; o < pr.outF; o++) for (let j = 0; j < r; j++) Bs.data[o * Kr + k * r + j] = p[k] * v[pr.b.offset + o * r + j];
          for (let j = 0; j < r; j++) for (let i = 0; i < pr.inF; i++) AsT.data[i * Kr + k * r + j] = v[pr.a.offset + j * pr.inF + i];
        }
        const qb = householderQR(Bs);
        const qa = householderQR(AsT);
        const core = matmul(qb.r, transpose(qa.r)); // (kB x kA)
        const { u, s, v } = jacobiSVD(core);
        for (let j = r; j < s.length; j++) residual += s[j] * s[j];
        // B' = Q_B U_r sqrt(S_r)   (out x r);  A' = sqrt(S_r) V_r^T Q_A^T   (r x in)
        const QU = matmul(qb.q, u);
        const QV = matmul(qa.q, v);
        for (let j = 0; j < r; j++) {
          const sq = j < s.length ? Math.sqrt(s[j]) : 0;
          for (let o = 0; o < pr.outF; o++) out[pr.b.offset + o * r + j] = j < QU.cols ? QU.data[o * QU.cols + j] * sq : 0;
          for (let i = 0; i < pr.inF; i++) out[pr.a.offset + j * pr.inF + i] = j < QV.cols ? QV.data[i * QV.cols + j] * sq : 0;
        }
      }
      return { global: out, state: { ...ctx.state }, metrics: { sites: updates.length, svd_truncated_energy: residual } };
    },
  };
}
