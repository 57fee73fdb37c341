// Exact LoRA aggregation on hand-built cases: SVD re-compression equals sum p_k B_k A_k when the
// total rank fits, and the best rank-r approximation otherwise; FedIT is not exact; FFA is.
import { describe, expect, it } from 'vitest';
import { createLoraSvd } from '../../coordinator/strategies/lora-svd.ts';
import { createFedIt } from '../../coordinator/strategies/lora-fedit.ts';
import { createFfa } from '../../coordinator/strategies/lora-ffa.ts';
import { loraPairs } from '../../shared/lora/pairs.ts';
import { householderQR, jacobiSVD, mat, matmul, transpose } from '../../shared/lora/linalg.ts';
import { layoutOf } from '../../shared/tensors.ts';
import { ctxOf, maxAbsDiff, randomVec, refs } from './helpers.ts';

function layoutR(r: number, inF: number, outF: number) {
  return layoutOf(new Map([['m.q_proj.lora_A.weight', { shape: [r, inF] }], ['m.q_proj.lora_B.weight', { shape: [outF, r] }]]));
}
function product(flat: Float32Array, L: ReturnType<typeof layoutR>) {
  const p = loraPairs(L).pairs[0];
  const B = mat(p.outF, p.r, flat.subarray(p.b.offset, p.b.offset + p.b.length));
  const A = mat(p.r, p.inF, flat.subarray(p.a.offset, p.a.offset + p.a.length));
  return matmul(B, A);
}
function weightedSum(vs: Float32Array[], p: number[], L: ReturnType<typeof layoutR>) {
  const out = product(vs[0], L);
  out.data.fill(0);
  vs.forEach((v, k) => product(v, L).data.forEach((x, i) => (out.data[i] += p[k] * x)));
  return out;
}

describe('linear algebra', () => {
  it('Householder QR: Q orthonormal, R upper triangular, QR = A (tall and wide)', () => {
    for (const [m, n] of [[7, 4], [3, 5]]) {
      const A = mat(m, n, randomVec(m * n, m * 10 + n));
      const { q, r } = householderQR(A);
      expect(maxAbsDiff(matmul(q, r).data, A.data)).toBeLessThan(1e-12);
      const qtq = matmul(transpose(q), q);
      for (let i = 0; i < qtq.rows; i++) for (let j = 0; j < qtq.cols; j++) expect(qtq.data[i * qtq.cols + j]).toBeCloseTo(i === j ? 1 : 0, 12);
      for (let i = 0; i < r.rows; i++) for (let j = 0; j < Math.min(i, r.cols); j++) expect(r.data[i * r.cols + j]).toBe(0);
    }
  });
  it('Jacobi SVD reconstructs, sorted singular values; known case diag(3, 2)', () => {
    const A = mat(5, 3, randomVec(15, 3));
    const { u, s, v } = jacobiSVD(A);
    const us = mat(u.rows, u.cols, u.data.map((x, i) => x * s[i % u.cols]));
    expect(maxAbsDiff(matmul(us, transpose(v)).data, A.data)).toBeLessThan(1e-12);
    expect(s[0]).toBeGreaterThanOrEqual(s[1]);
    expect(s[1]).toBeGreaterThanOrEqual(s[2]);
    expect([...jacobiSVD(mat(2, 2, [0, 2, 3, 0])).s]).toEqual([3, 2]);
  });
});

describe('svd: exact LoRA aggregation', () => {
  it('total rank <= r: B\'A\' equals sum p_k B_k A_k exactly', async () => {
    // r = 4, two sites each with rank-2 factors (last two rows of A / columns of B zero)
    const L = layoutR(4, 6, 5);
    const vs = [11, 12].map((s) => {
      const v = randomVec(L.total, s);
      const p = loraPairs(L).pairs[0];
      for (let j = 2; j < 4; j++) { for (let i = 0; i < 6; i++) v[p.a.offset + j * 6 + i] = 0; for (let o = 0; o < 5; o++) v[p.b.offset + o * 4 + j] = 0; }
      return v;
    });
    const r = await createLoraSvd().aggregate(refs(vs, [1, 3]), ctxOf(L));
    expect(maxAbsDiff(product(r.global, L).data, weightedSum(vs, [0.25, 0.75], L).data)).toBeLessThan(1e-5);
    expect(r.metrics.svd_truncated_energy).toBeLessThan(1e-10);
  });
  it('total rank > r: the best rank-r approximation (matches truncated SVD of the explicit matrix)', async () => {
    const L = layoutR(2, 7, 6);
    const vs = [21, 22, 23].map((s) => randomVec(L.total, s));
    const p = [0.2, 0.3, 0.5];
    const r = await createLoraSvd().aggregate(refs(vs, [2, 3, 5]), ctxOf(L));
    const W = weightedSum(vs, p, L);
    const { u, s, v } = jacobiSVD(W);
    const trunc = mat(W.rows, W.cols);
    for (let i = 0; i < W.rows; i++) for (let j = 0; j < W.cols; j++) for (let k = 0; k < 2; k++) trunc.data[i * W.cols + j] += u.data[i * u.cols + k] * s[k] * v.data[j * v.cols + k];
    expect(s[2]).toBeGreaterThan(1e-3); // genuinely higher rank
    expect(maxAbsDiff(product(r.global, L).data, trunc.data)).toBeLessThan(1e-5);
    expect(r.metrics.svd_truncated_energy).toBeCloseTo(s.slice(2).reduce((a, x) => a + x * x, 0), 8);
  });
  it('fedit (separate A and B averages) is demonstrably not exact on a hand case', async () => {
    // r=1, 1x1: site 1 B=1, A=1 (BA=1); site 2 B=0, A=0 ... mean(B) mean(A) = 0.25 != mean(BA) = 0.5
    const L = layoutR(1, 1, 1);
    const vs = [Float32Array.from([1, 1]), Float32Array.from([0, 0])];
    const f = await createFedIt({ payloadKind: 'weights' }).aggregate(refs(vs), ctxOf(L));
    expect(product(f.global, L).data[0]).toBeCloseTo(0.25, 6);
    const s = await createLoraSvd().aggregate(refs(vs), ctxOf(L));
    expect(product(s.global, L).data[0]).toBeCloseTo(0.5, 6);
  });
  it('ffa: B averaged with A frozen is exact; a site that changes A is rejected', async () => {
    const L = layoutR(2, 3, 4);
    const p = loraPairs(L).pairs[0];
    const global = randomVec(L.total, 5);
    const deltas = [31, 32].map((s) => { const d = randomVec(L.total, s); d.fill(0, p.a.offset, p.a.offset + p.a.length); return d; });
    const r = await createFfa().aggregate(refs(deltas, [1, 3]), ctxOf(L, { global }));
    const local = deltas.map((d) => global.map((g, i) => g + d[i]));
    expect(maxAbsDiff(product(r.global, L).data, weightedSum(local, [0.25, 0.75], L).data)).toBeLessThan(1e-5);
    const bad = Float32Array.from(deltas[0]); bad[p.a.offset] = 0.1;
    await expect(createFfa().aggregate(refs([bad, deltas[1]]), ctxOf(L, { global }))).rejects.toThrow(/changed frozen m\.q_proj\.lora_A\.weight\[0\]/);
  });
  it('unpaired LoRA tensors are rejected naming the module', async () => {
    const L = layoutOf(new Map([['x.lora_A.weight', { shape: [2, 3] }]]));
    await expect(createLoraSvd().aggregate(refs([new Float32Array(6)]), ctxOf(L))).rejects.toThrow(/x\.lora_A\.weight has no matching x\.lora_B\.weight/);
  });
});

describe('createStrategy spec validation', async () => {
  const { createStrategy } = await import('../../coordinator/strategies/registry.ts');
  it('names the field in errors', () => {
    expect(() => createStrategy({ name: 'trimmed_mean', beta: 0.7 })).toThrow(/aggregation\.beta/);
    expect(() => createStrategy({ name: 'fedprox' })).toThrow(/aggregation\.mu/);
    expect(() => createStrategy({ name: 'fedavg', bogus: 1 })).toThrow(expect.objectContaining({ code: 'FEDLORA_ERR_JOB_INVALID' }));
    expect(() => createStrategy({ name: 'nope' })).toThrow(/aggregation\.name: unknown strategy "nope"/);
  });
});
