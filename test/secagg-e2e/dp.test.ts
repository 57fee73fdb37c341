// DP + secure aggregation in the real federation: sites clip their packed delta to the round's
// dp_clip_norm C before masking; the coordinator unmasks only the sum, divides by D (= selected
// sites), adds N(0, (z C / D)^2) and publishes; the unclipped-bit count travels in a masked slot.
import { describe, it, expect, afterAll } from 'vitest';
import { runSecAggSite } from '../../site-agent/agent/secagg-client.ts';
import { randomDelta, secAggSpec, startFederation, versionFlat, waitOpen, type Federation } from './helpers.ts';
import { TEST_TIMEOUT_MS, SLOWDOWN } from '../runner/limits.ts';

const feds: Federation[] = [];
afterAll(async () => {
  for (const f of feds) await f.close();
});

const norm = (v: Float32Array) => Math.sqrt(v.reduce((a, x) => a + x * x, 0));

describe('DP-FedAvg on top of secure aggregation', () => {
  it('publishes sum(clip(delta_k, C)) / D + Gaussian noise of std z C / D; ledger charged', async () => {
    const ids = ['site-a', 'site-b', 'site-c'];
    const fed = await startFederation(ids);
    feds.push(fed);
    const C = 0.5, z = 0.5;
    const dp = { clip_norm: C, noise_multiplier: z, delta: 1e-5, epsilon_budget: 1000, sample_rate: 1, adaptive_clipping: false };
    await fed.coord.engine.submitJob(secAggSpec({ min_sites: 2, max_sites: 3 }, { dp }), 'job-dp');
    await waitOpen(() => fed.coord, 'job-dp', 1);
    const { layout } = fed.coord.engine.jobInfo('job-dp');
    const n = layout.update.total;
    // two sites far above C (norm ~17: unclipped they would swamp the noise), one below (norm ~0.17)
    const deltas = ids.map((_, k) => randomDelta(n, 70 + k, k === 2 ? 0.005 : 0.5));
    expect(deltas.map((d) => norm(d) > C)).toEqual([true, true, false]);
    const results = await Promise.all(fed.sites.map((s, k) => runSecAggSite(s.wire, {
      jobId: 'job-dp', round: 1, siteId: s.id, update: deltas[k], numExamples: 8, pollMs: 50, deadlineUnixMs: Date.now() + 30_000 * SLOWDOWN,
    })));
    expect(results.map((r) => r.l2Clipped)).toEqual([true, true, false]);
    expect(results[0].threshold).toBe(2);
    expect(deltas[0][0]).toBe(randomDelta(n, 70, 0.5)[0]); // the caller's vector is not modified

    const job = await fed.coord.engine.waitForJob('job-dp', 20_000 * SLOWDOWN);
    expect(job.status).toBe('completed');
    const v0 = versionFlat(fed.coord, 'job-dp', 0), v1 = versionFlat(fed.coord, 'job-dp', 1);
    const D = 3;
    const clipped = deltas.map((d) => { const f = Math.min(1, C / norm(d)); return d.map((x) => x * f); });
    const residual = new Float64Array(n);
    for (let i = 0; i < n; i++) residual[i] = v1[i] - v0[i] - (clipped[0][i] + clipped[1][i] + clipped[2][i]) / D;
    const mean = residual.reduce((a, x) => a + x, 0) / n;
    const std = Math.sqrt(residual.reduce((a, x) => a + (x - mean) ** 2, 0) / n);
    // noise std z C / D = 0.0833; 3584 samples estimate it within a few percent
    expect(std).toBeGreaterThan(0.9 * (z * C) / D);
    expect(std).toBeLessThan(1.1 * (z * C) / D);
    expect(Math.abs(mean)).toBeLessThan(5 * std / Math.sqrt(n));
    const metrics = JSON.parse(fed.coord.store.rounds('job-dp')[0].metrics_json!);
    expect(metrics.dp_noise_std).toBeCloseTo((z * C) / D, 10);
    expect(metrics.dp_clip_norm).toBe(C);
    expect(metrics.dp_unclipped_fraction).toBeCloseTo(1 / 3, 10); // 1 of 3 unclipped bits, summed under the mask
    expect(metrics.secagg_survivors).toBe(3);
    expect(fed.coord.store.privacyLedger('job-dp').map((l) => l.round)).toEqual([1]);
    expect(JSON.parse(fed.coord.store.adapterVersion('job-dp', 1)!.manifest_json)).toMatchObject({ contributing_sites: 3, num_examples: 24 });
  }, TEST_TIMEOUT_MS);
});
