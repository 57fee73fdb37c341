// Lower-rank site updates through the coordinator's intake and round engine (SQLite, stored
// update files, the published version), with hand-built factors checked against dense products
// computed here:
//   * svd: a rank-4 and a rank-2 site (metadata lora_r 2); the published rank-4 adapter's B A is
//     exactly the examples-weighted sum of the two sites' products (their A rows share a 4-dim
//     row space, so the sum has rank <= 4); the stored row keeps lora_r;
//   * ffa: a rank-2 site's B delta is padded by the coordinator: the new B is exactly
//     B_0 + p_1 dB_1 + p_2 [dB_2 | 0];
//   * refusals: a rank below min_site_r, any lower rank in a job without min_site_r, shapes that
//     are not the declared rank (FEDLORA_ERR_SHAPE, naming the update);
// and the pieces both sides share: the rank-k settings keep PEFT's scaling, the site's policy
// decision.
import { afterEach, describe, expect, it } from 'vitest';
import { submitUpdateBytes } from '../../coordinator/rounds/intake.ts';
import { encodeSafetensors } from '../../shared/safetensors.ts';
import { layoutAtRank, loraAtRank } from '../../shared/lora/rank.ts';
import { loraScaling } from '../../shared/lora/keys.ts';
import { unflatten, type AdapterLayout } from '../../shared/tensors.ts';
import { siteLoraRank } from '../../site-agent/agent/policy.ts';
import { harness, online, rmDir, tinySpec, type Harness } from '../coordinator/helpers.ts';
import { rng } from '../strategies/helpers.ts';

const hs: Harness[] = [];
afterEach(() => hs.splice(0).forEach((h) => { h.close(); rmDir(h.dir); }));

const LORA = { r: 4, alpha: 8, target_modules: ['q_proj', 'v_proj'], init_seed: 7 };

async function job(over: Record<string, unknown>) {
  const h = harness();
  hs.push(h);
  online(h, 'site-a', 'site-b');
  await h.engine.submitJob(tinySpec({ rounds: 1, min_sites: 2, max_sites: 2, ...over }), 'job-k');
  await h.engine.tick();
  return h;
}

function encode(layout: AdapterLayout, flat: Float32Array, loraR?: number): Buffer {
  const t = new Map([...unflatten(flat, layout)].map(([k, x]) => [k, { dtype: 'F32' as const, shape: x.shape, data: x.data }]));
  return encodeSafetensors(t, loraR ? { lora_r: String(loraR) } : undefined);
}

function submit(h: Harness, site: string, bytes: Buffer, numExamples: number) {
  const task = h.store.openTasksFor(site).find((t) => t.job_id === 'job-k')!;
  return submitUpdateBytes(h.engine, site, { updateId: `${site}-up-${bytes.length}`, taskId: task.task_id, jobId: 'job-k', round: 1, baseVersion: 0, numExamples }, bytes, { chunkSize: 4096 });
}

const entry = (l: AdapterLayout, module: string, f: 'A' | 'B') => l.entries.find((e) => e.name === `${module}.lora_${f}.weight`)!;
const modules = (l: AdapterLayout) => [...new Set(l.entries.map((e) => e.name.replace(/\.lora_[AB]\.weight$/, '')))];

/** B A of `module` in a flat adapter, dense (row-major out x in). */
function product(flat: Float32Array, l: AdapterLayout, module: string): Float64Array {
  const a = entry(l, module, 'A'), b = entry(l, module, 'B');
  const [r, inF] = a.shape, outF = b.shape[0];
  const w = new Float64Array(outF * inF);
  for (let o = 0; o < outF; o++) for (let i = 0; i < inF; i++) for (let j = 0; j < r; j++) w[o * inF + i] += flat[b.offset + o * r + j] * flat[a.offset + j * inF + i];
  return w;
}

describe('lower-rank site updates through the intake', () => {
  it('svd: a rank-4 and a rank-2 site; the published rank-4 product is exactly their weighted sum', async () => {
    const h = await job({ lora: { ...LORA, min_site_r: 2 }, aggregation: { name: 'svd' } });
    const full = h.engine.jobInfo('job-k').layout.full;
    const low = layoutAtRank(full, 2);
    const g = rng(5);
    // every A row a combination of 4 shared rows per module: the sum of products has rank <= 4
    const rowSpace = new Map(modules(full).map((m) => [m, Array.from({ length: 4 }, () => Array.from({ length: entry(full, m, 'A').shape[1] }, () => g()))]));
    const factors = (l: AdapterLayout) => {
      const v = new Float32Array(l.total);
      for (const m of modules(l)) {
        const a = entry(l, m, 'A'), b = entry(l, m, 'B');
        for (let j = 0; j < a.shape[0]; j++) {
          const c = [g(), g(), g(), g()];
          for (let i = 0; i < a.shape[1]; i++) v[a.offset + j * a.shape[1] + i] = c.reduce((s, x, q) => s + x * rowSpace.get(m)![q][i], 0);
        }
        for (let i = 0; i < b.length; i++) v[b.offset + i] = g();
      }
      return v;
    };
    const va = factors(full), vb = factors(low);
    await submit(h, 'site-a', encode(full, va), 30);
    await submit(h, 'site-b', encode(low, vb, 2), 10);
    await h.engine.tick();
    expect(h.store.job('job-k')!.current_version).toBe(1);
    expect(h.store.roundUpdates('job-k', 1, 1, 'accepted').map((u) => [u.site_id, u.lora_r])).toEqual([['site-a', null], ['site-b', 2]]);
    const published = h.engine.loadVersion('job-k', 1);
    expect(published.length).toBe(full.total); // the job's rank
    for (const m of modules(full)) {
      const want = product(va, full, m).map((x, i) => 0.75 * x + 0.25 * product(vb, low, m)[i]);
      const got = product(published, full, m);
      const scale = Math.max(...want.map(Math.abs));
      for (let i = 0; i < want.length; i++) expect(Math.abs(got[i] - want[i])).toBeLessThan(1e-5 * scale);
    }
  });

  it('ffa: the coordinator pads a rank-2 B delta; the new B is exactly B0 + sum p_k [dB_k | 0]', async () => {
    const h = await job({ lora: { ...LORA, min_site_r: 2, freeze_a: true }, aggregation: { name: 'ffa' } });
    const { update, full } = h.engine.jobInfo('job-k').layout;
    const low = layoutAtRank(update, 2);
    const g = rng(9);
    const da = Float32Array.from({ length: update.total }, () => g());
    const db = Float32Array.from({ length: low.total }, () => g());
    await submit(h, 'site-a', encode(update, da), 10);
    await submit(h, 'site-b', encode(low, db, 2), 30);
    await h.engine.tick();
    const v0 = h.engine.loadVersion('job-k', 0), v1 = h.engine.loadVersion('job-k', 1);
    for (const e of update.entries) {
      const f = full.entries.find((x) => x.name === e.name)!, l = low.entries.find((x) => x.name === e.name)!;
      const [rows, r] = e.shape;
      for (let o = 0; o < rows; o++) for (let j = 0; j < r; j++) {
        const padded = j < 2 ? db[l.offset + o * 2 + j] : 0;
        expect(v1[f.offset + o * r + j]).toBeCloseTo(v0[f.offset + o * r + j] + Math.fround(0.25 * da[e.offset + o * r + j]) + Math.fround(0.75 * padded), 5);
      }
    }
    for (const e of full.entries.filter((x) => x.name.includes('.lora_A.'))) expect(v1.subarray(e.offset, e.offset + e.length)).toEqual(v0.subarray(e.offset, e.offset + e.length));
  });

  it('refuses a rank below min_site_r, a lower rank the job does not accept, and shapes that are not the declared rank', async () => {
    const h = await job({ lora: { ...LORA, min_site_r: 2 }, aggregation: { name: 'svd' } });
    const full = h.engine.jobInfo('job-k').layout.full;
    const one = layoutAtRank(full, 1);
    await expect(submit(h, 'site-a', encode(one, new Float32Array(one.total), 1), 5)).rejects.toMatchObject({
      code: 'FEDLORA_ERR_SHAPE', message: expect.stringMatching(/declares LoRA rank "1" \(metadata lora_r\); the job accepts ranks 2\.\.4 \(lora\.min_site_r\.\.lora\.r\)/),
    });
    const two = layoutAtRank(full, 2);
    await expect(submit(h, 'site-b', encode(full, new Float32Array(full.total), 2), 5)).rejects.toMatchObject({ code: 'FEDLORA_ERR_SHAPE', message: expect.stringMatching(/tensor \".*lora_A\.weight\" has shape \[4,16\], expected \[2,16\]/) });

    const fixed = await job({ lora: LORA, aggregation: { name: 'svd' } });
    await expect(submit(fixed, 'site-a', encode(two, new Float32Array(two.total), 2), 5)).rejects.toMatchObject({
      code: 'FEDLORA_ERR_SHAPE', message: expect.stringMatching(/declares LoRA rank "2" .* the job accepts only its rank 4 \(no lora\.min_site_r below r\)/),
    });
  });
});

describe('what the site and the coordinator share about ranks', () => {
  it('rank-k settings keep PEFT\'s scaling (alpha / r, and alpha / sqrt(r) with rsLoRA)', () => {
    for (const useRslora of [false, true]) {
      const lora = { r: 16, alpha: 32, targets: ['q_proj' as const], dropout: 0, useRslora, freezeA: false, initSeed: 1 };
      for (const k of [1, 4, 16]) {
        const at = loraAtRank(lora, k);
        expect(at.r).toBe(k);
        expect(loraScaling(at)).toBeCloseTo(loraScaling(lora), 12);
      }
      expect(() => loraAtRank(lora, 17)).toThrow(/1\.\.16/);
    }
  });

  it('the site trains min(policy.max_lora_rank, r), and declines below the job\'s min_site_r', () => {
    expect(siteLoraRank({ max_lora_rank: null }, { r: 8, minSiteR: 2 })).toEqual({ ok: true, r: 8 });
    expect(siteLoraRank({ max_lora_rank: 16 }, { r: 8, minSiteR: 2 })).toEqual({ ok: true, r: 8 });
    expect(siteLoraRank({ max_lora_rank: 4 }, { r: 8, minSiteR: 2 })).toEqual({ ok: true, r: 4 });
    expect(siteLoraRank({ max_lora_rank: 4 }, { r: 8, minSiteR: 0 })).toEqual({
      ok: false, code: 'FEDLORA_ERR_POLICY', reason: 'the job trains LoRA rank 8 and accepts sites down to rank 8 (lora.min_site_r); this site trains at most rank 4 (policy.max_lora_rank)',
    });
  });
});
