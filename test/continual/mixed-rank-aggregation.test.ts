// Sites with different LoRA ranks, with hand-built factors checked against dense computations
// made here (the out x in products the strategies never form) and numpy's SVD:
//   * svd aggregation of rank-2, rank-3 and rank-4 sites is the exact weighted sum of their B A
//     products when it has rank <= the job's 4, and its best rank-4 approximation otherwise;
//   * a published adapter re-compressed to a site's lower rank is the best rank-k approximation
//     of its product; a zero product (version 0) keeps the given A rows and zero B;
//   * with a frozen A (FFA), a lower-rank site's zero-padded B delta moves the global product by
//     exactly its own B_k A_k change, and its start is the projection onto its A rows.
import { describe, expect, it } from 'vitest';
import { createLoraSvd } from '../../coordinator/strategies/lora-svd.ts';
import { createFfa } from '../../coordinator/strategies/lora-ffa.ts';
import { adapterAtRank } from '../../shared/lora/recompress.ts';
import type { UpdateRef } from '../../coordinator/strategies/types.ts';
import { PYTHON, requireTool, TORCH } from '../runner/reference-tools.ts';
import { runProcessOk } from '../runner/run-process.ts';
import { ctxOf, loraLayout, rng } from '../strategies/helpers.ts';

const OUT = 7, IN = 6, MODULES = 2;
const A = (l: number) => `base_model.model.model.layers.${l}.self_attn.q_proj.lora_A.weight`;
const B = (l: number) => `base_model.model.model.layers.${l}.self_attn.q_proj.lora_B.weight`;

type Dense = number[][];
const zeros = (r: number, c: number): Dense => Array.from({ length: r }, () => new Array(c).fill(0));

/** B [out x r] A [r x in] of module `l` of a flat adapter in `layout`, as a dense matrix. */
function product(flat: Float32Array, layout: ReturnType<typeof loraLayout>, l: number): Dense {
  const a = layout.entries.find((e) => e.name === A(l))!, b = layout.entries.find((e) => e.name === B(l))!;
  const r = a.shape[0];
  const w = zeros(OUT, IN);
  for (let o = 0; o < OUT; o++) for (let i = 0; i < IN; i++) for (let j = 0; j < r; j++) w[o][i] += flat[b.offset + o * r + j] * flat[a.offset + j * IN + i];
  return w;
}
const addScaled = (acc: Dense, m: Dense, s: number) => acc.forEach((row, o) => row.forEach((_, i) => (row[i] += s * m[o][i])));
const maxDiff = (x: Dense, y: Dense) => Math.max(...x.flatMap((row, o) => row.map((v, i) => Math.abs(v - y[o][i]))));
const frob = (x: Dense) => Math.sqrt(x.flat().reduce((s, v) => s + v * v, 0));

/** A site's rank-r factors; with `rowSpace` its A rows are combinations of those 4 rows. */
function siteFactors(r: number, seed: number, rowSpace?: number[][]): Float32Array {
  const layout = loraLayout(MODULES, r, IN, OUT);
  const g = rng(seed);
  const v = new Float32Array(layout.total);
  for (let l = 0; l < MODULES; l++) {
    const a = layout.entries.find((e) => e.name === A(l))!, b = layout.entries.find((e) => e.name === B(l))!;
    for (let j = 0; j < r; j++) {
      const c = Array.from({ length: 4 }, () => g());
      for (let i = 0; i < IN; i++) v[a.offset + j * IN + i] = rowSpace ? c.reduce((s, x, q) => s + x * rowSpace[q][i], 0) : g();
    }
    for (let i = 0; i < b.length; i++) v[b.offset + i] = g();
  }
  return v;
}

const ref = (siteId: string, v: Float32Array, r: number, numExamples: number): UpdateRef => ({ siteId, numExamples, layout: loraLayout(MODULES, r, IN, OUT), load: async () => Float32Array.from(v) });

/** numpy's best rank-k approximation of a dense matrix, and its singular values. */
async function numpyTruncated(w: Dense, k: number): Promise<{ approx: Dense; s: number[] }> {
  await requireTool(TORCH);
  const code = 'import json,sys,numpy as n\nw,k=json.load(sys.stdin)\nu,s,vt=n.linalg.svd(n.array(w,dtype=n.float64),full_matrices=False)\nprint(json.dumps({"approx":((u[:,:k]*s[:k])@vt[:k]).tolist(),"s":s.tolist()}))';
  return JSON.parse(await runProcessOk(PYTHON, ['-c', code], { input: JSON.stringify([w, k]) }));
}

describe('svd aggregation of sites with different ranks', () => {
  const job = loraLayout(MODULES, 4, IN, OUT);
  const ranks = [2, 3, 4];
  const examples = [10, 30, 60];
  const p = examples.map((e) => e / 100);

  it('is the exact weighted sum of the sites\' B A products when that sum has rank <= the job\'s', async () => {
    const g = rng(3);
    const rowSpace = Array.from({ length: 4 }, () => Array.from({ length: IN }, () => g()));
    const vs = ranks.map((r, k) => siteFactors(r, 11 + k, rowSpace));
    const res = await createLoraSvd().aggregate(vs.map((v, k) => ref(`site-${k}`, v, ranks[k], examples[k])), ctxOf(job));
    expect(res.global.length).toBe(job.total); // published at the job's rank
    for (let l = 0; l < MODULES; l++) {
      const dense = zeros(OUT, IN);
      vs.forEach((v, k) => addScaled(dense, product(v, loraLayout(MODULES, ranks[k], IN, OUT), l), p[k]));
      expect(maxDiff(product(res.global, job, l), dense)).toBeLessThan(1e-5 * frob(dense));
    }
    expect(res.metrics.svd_truncated_energy).toBeLessThan(1e-9);
  });

  it('is numpy\'s best rank-4 approximation of that sum when it has a higher rank', async () => {
    const vs = ranks.map((r, k) => siteFactors(r, 21 + k)); // 2 + 3 + 4 = 9 > 6: full rank 6
    const res = await createLoraSvd().aggregate(vs.map((v, k) => ref(`site-${k}`, v, ranks[k], examples[k])), ctxOf(job));
    let tail = 0;
    for (let l = 0; l < MODULES; l++) {
      const dense = zeros(OUT, IN);
      vs.forEach((v, k) => addScaled(dense, product(v, loraLayout(MODULES, ranks[k], IN, OUT), l), p[k]));
      const ref4 = await numpyTruncated(dense, 4);
      expect(ref4.s[5]).toBeGreaterThan(1e-3); // the sum really has rank 6
      expect(maxDiff(product(res.global, job, l), ref4.approx)).toBeLessThan(1e-5 * frob(dense));
      tail += ref4.s.slice(4).reduce((a, x) => a + x * x, 0);
    }
    expect(res.metrics.svd_truncated_energy).toBeCloseTo(tail, 6);
  });

  it('refuses factors above the job\'s rank, naming the site', async () => {
    const v = siteFactors(5, 1);
    await expect(createLoraSvd().aggregate([ref('big-site', v, 5, 1)], ctxOf(job))).rejects.toThrow(/big-site sent rank 5 factors .* above the job's rank 4/);
  });

  it('mean-based strategies refuse a lower-rank update instead of misreading it', async () => {
    const ffaJob = loraLayout(MODULES, 4, IN, OUT);
    await expect(createFfa().aggregate([ref('small', siteFactors(2, 1), 2, 1)], ctxOf(ffaJob))).rejects.toThrow(/small trained a lower LoRA rank/);
  });
});

describe('a published adapter at a site\'s lower rank', () => {
  const full = loraLayout(MODULES, 4, IN, OUT);
  const low = loraLayout(MODULES, 2, IN, OUT);

  it('is the best rank-2 approximation of its product (re-compressed, A trained)', async () => {
    const v = siteFactors(4, 5);
    const at2 = adapterAtRank(v, full, low, { frozenA: false });
    for (let l = 0; l < MODULES; l++) {
      const ref2 = await numpyTruncated(product(v, full, l), 2);
      expect(maxDiff(product(at2, low, l), ref2.approx)).toBeLessThan(1e-5 * frob(product(v, full, l)));
    }
  });

  it('keeps a zero product zero with the given A rows (version 0 stays trainable)', () => {
    const v0 = siteFactors(4, 6);
    for (const e of full.entries) if (e.name.includes('lora_B')) v0.fill(0, e.offset, e.offset + e.length);
    const at2 = adapterAtRank(v0, full, low, { frozenA: false, fill: v0 });
    for (let l = 0; l < MODULES; l++) {
      const a = low.entries.find((e) => e.name === A(l))!, b = low.entries.find((e) => e.name === B(l))!;
      const fa = full.entries.find((e) => e.name === A(l))!;
      expect([...at2.subarray(b.offset, b.offset + b.length)].every((x) => x === 0)).toBe(true);
      expect([...at2.subarray(a.offset, a.offset + a.length)]).toEqual([...v0.subarray(fa.offset, fa.offset + 2 * IN)]);
    }
  });

  it('with a frozen A: the first rows of A, and B projecting the product onto them', () => {
    const v = siteFactors(4, 7);
    const at2 = adapterAtRank(v, full, low, { frozenA: true });
    for (let l = 0; l < MODULES; l++) {
      const a = low.entries.find((e) => e.name === A(l))!, fa = full.entries.find((e) => e.name === A(l))!;
      expect([...at2.subarray(a.offset, a.offset + a.length)]).toEqual([...v.subarray(fa.offset, fa.offset + 2 * IN)]);
      // The residual B A - B' A_2 is orthogonal to A_2's rows (least squares), computed densely.
      const resid = product(v, full, l);
      addScaled(resid, product(at2, low, l), -1);
      for (let j = 0; j < 2; j++) for (let o = 0; o < OUT; o++) {
        let dot = 0;
        for (let i = 0; i < IN; i++) dot += resid[o][i] * v[fa.offset + j * IN + i];
        expect(Math.abs(dot)).toBeLessThan(1e-5);
      }
    }
    // B with zero columns beyond rank 2: the fit is exactly B's first two columns.
    const w = Float32Array.from(v);
    for (let l = 0; l < MODULES; l++) {
      const b = full.entries.find((e) => e.name === B(l))!;
      for (let o = 0; o < OUT; o++) w[b.offset + o * 4 + 2] = w[b.offset + o * 4 + 3] = 0;
    }
    const exact = adapterAtRank(w, full, low, { frozenA: true });
    for (let l = 0; l < MODULES; l++) expect(maxDiff(product(exact, low, l), product(w, full, l))).toBeLessThan(1e-5);
  });
});

describe('ffa with sites of different ranks (frozen A, B deltas zero-padded to the job rank)', () => {
  it('moves the global product by exactly sum_k p_k dB_k A_k', async () => {
    const full = loraLayout(MODULES, 4, IN, OUT);
    const global = siteFactors(4, 9);
    const ranks = [2, 4], examples = [25, 75];
    // Hand-built B deltas at each site's rank, zero-padded into the job's B columns.
    const g = rng(77);
    const deltas = ranks.map((r) => {
      const d = new Float32Array(full.total);
      for (const e of full.entries) if (e.name.includes('lora_B')) for (let o = 0; o < OUT; o++) for (let j = 0; j < r; j++) d[e.offset + o * 4 + j] = g();
      return d;
    });
    const res = await createFfa().aggregate(deltas.map((d, k) => ({ siteId: `s${k}`, numExamples: examples[k], load: async () => Float32Array.from(d) })), ctxOf(full, { global }));
    for (let l = 0; l < MODULES; l++) {
      const want = product(global, full, l);
      deltas.forEach((d, k) => {
        // the site's own rank-r_k change: dB_k [out x r_k] times its A_k = A's first r_k rows
        const low = loraLayout(MODULES, ranks[k], IN, OUT);
        const own = new Float32Array(low.total);
        const fa = full.entries.find((e) => e.name === A(l))!, fb = full.entries.find((e) => e.name === B(l))!;
        const la = low.entries.find((e) => e.name === A(l))!, lb = low.entries.find((e) => e.name === B(l))!;
        own.set(global.subarray(fa.offset, fa.offset + ranks[k] * IN), la.offset);
        for (let o = 0; o < OUT; o++) for (let j = 0; j < ranks[k]; j++) own[lb.offset + o * ranks[k] + j] = d[fb.offset + o * 4 + j];
        addScaled(want, product(own, low, l), examples[k] / 100);
      });
      expect(maxDiff(product(res.global, full, l), want)).toBeLessThan(1e-5);
    }
  });
});
