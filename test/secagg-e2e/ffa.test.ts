// FFA-LoRA + secure aggregation in the real federation: the coordinator's config tells sites
// which ranges of their update to mask (the lora_B tensors only); A stays at its shared-seed
// initialisation whatever a site's vector holds there.
import { describe, it, expect, afterAll } from 'vitest';
import { runSecAggSite } from '../../site-agent/agent/secagg-client.ts';
import { maxAbsDiff, randomDelta, secAggSpec, startFederation, versionFlat, waitOpen, type Federation } from './helpers.ts';
import { TEST_TIMEOUT_MS, SLOWDOWN } from '../runner/limits.ts';

const feds: Federation[] = [];
afterAll(async () => {
  for (const f of feds) await f.close();
});

describe('FFA-LoRA with secure aggregation', () => {
  it('only the B ranges are masked and averaged; A is untouched', async () => {
    const ids = ['site-a', 'site-b', 'site-c'];
    const fed = await startFederation(ids);
    feds.push(fed);
    // ffa = A frozen from the shared seed (lora.freeze_a): the update layout holds only the B tensors
    await fed.coord.engine.submitJob(secAggSpec({ min_sites: 2, max_sites: 3, aggregation: { name: 'ffa' }, lora: { r: 8, alpha: 16, target_modules: ['q_proj', 'v_proj'], init_seed: 3, freeze_a: true } }), 'job-ffa');
    await waitOpen(() => fed.coord, 'job-ffa', 1);
    const { layout } = fed.coord.engine.jobInfo('job-ffa');
    expect(layout.update.entries.every((e) => e.name.includes('.lora_B.'))).toBe(true);
    const deltas = ids.map((_, k) => randomDelta(layout.update.total, 500 + k, 0.05));
    const res = await Promise.all(fed.sites.map((s, k) => runSecAggSite(s.wire, {
      jobId: 'job-ffa', round: 1, siteId: s.id, update: deltas[k], pollMs: 50, deadlineUnixMs: Date.now() + 30_000 * SLOWDOWN,
    })));
    expect(res[0].dim).toBe(layout.update.total + 2);
    expect((await fed.coord.engine.waitForJob('job-ffa', 20_000 * SLOWDOWN)).status).toBe('completed');
    const v0 = versionFlat(fed.coord, 'job-ffa', 0), v1 = versionFlat(fed.coord, 'job-ffa', 1);
    for (const e of layout.full.entries) {
      const sl = (v: Float32Array, at = e.offset) => v.subarray(at, at + e.length);
      const u = layout.update.entries.find((x) => x.name === e.name);
      if (u) {
        const want = sl(v0).map((x, i) => x + (sl(deltas[0], u.offset)[i] + sl(deltas[1], u.offset)[i] + sl(deltas[2], u.offset)[i]) / 3);
        expect(maxAbsDiff(sl(v1), want)).toBeLessThan(1e-6);
      } else expect(Array.from(sl(v1))).toEqual(Array.from(sl(v0)));
    }
  }, TEST_TIMEOUT_MS);
});
