// Dropouts in a real secure-aggregation round (4 sites, threshold 3):
//  round 1: site-d stops right after its masked input was acknowledged (never answers unmask):
//           it is a survivor, the others' shares reveal its self mask, its delta is in the sum;
//  round 2: site-d stops after sharing keys, before masking: it is dropped, the others' shares
//           of its mask key remove its pairwise masks, and the sum is the other three's.
import { describe, it, expect, afterAll } from 'vitest';
import { runSecAggSite } from '../../site-agent/agent/secagg-client.ts';
import type { SecAggWire } from './helpers.ts';
import { maxAbsDiff, randomDelta, secAggSpec, startFederation, versionFlat, waitOpen, type Federation } from './helpers.ts';
import { SLOWDOWN, TEST_TIMEOUT_MS } from '../runner/limits.ts';

const feds: Federation[] = [];
afterAll(async () => {
  for (const f of feds) await f.close();
});

/** A wire that aborts the site (as if it crashed) when it is about to call `stage`. */
function dropAt(wire: SecAggWire, ctl: AbortController, stop: (stage: string, payload: Record<string, unknown>) => boolean): SecAggWire {
  return {
    async secAgg(m) {
      if (stop(m.stage, JSON.parse(m.payload.toString() || '{}'))) {
        ctl.abort(new Error(`site dropped before ${m.stage}`));
        throw ctl.signal.reason;
      }
      return wire.secAgg(m);
    },
  };
}

describe('secure aggregation with dropouts', () => {
  it('a site lost after masking is still summed; a site lost before masking is removed; rounds publish', async () => {
    const ids = ['site-a', 'site-b', 'site-c', 'site-d'];
    const fed = await startFederation(ids);
    feds.push(fed);
    // 20 s rounds: the stage timeout is 20 * 0.25 / 4 = 1.25 s (how long a missing site holds a stage)
    await fed.coord.engine.submitJob(secAggSpec({ rounds: 2, round_deadline_s: Math.round(20 * SLOWDOWN) }), 'job-drop');
    const { layout } = fed.coord.engine.jobInfo('job-drop');
    const n = layout.update.total;

    const runRound = async (round: number, stopD: (stage: string, p: Record<string, unknown>) => boolean) => {
      await waitOpen(() => fed.coord, 'job-drop', round);
      const deltas = new Map(ids.map((id, k) => [id, randomDelta(n, 100 * round + k, 0.05)]));
      const outcomes = await Promise.allSettled(fed.sites.map((s) => {
        const ctl = new AbortController();
        const wire = s.id === 'site-d' ? dropAt(s.wire, ctl, stopD) : s.wire;
        return runSecAggSite(wire, { jobId: 'job-drop', round, siteId: s.id, update: deltas.get(s.id)!, numExamples: 5, pollMs: 50, deadlineUnixMs: Date.now() + 20_000 * SLOWDOWN, signal: ctl.signal });
      }));
      return { deltas, outcomes };
    };

    // Round 1: site-d's masked chunk is acknowledged, then it vanishes before unmask.
    const r1 = await runRound(1, (stage, p) => stage === 'unmask' && !p.msg);
    expect(r1.outcomes.map((o) => o.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled', 'rejected']);
    const ok1 = r1.outcomes[0] as PromiseFulfilledResult<Awaited<ReturnType<typeof runSecAggSite>>>;
    expect(ok1.value).toMatchObject({ survivors: ids, dropped: [] });
    // Round 2: site-d shares its keys, then vanishes before sending its masked input.
    const r2 = await runRound(2, (stage) => stage === 'masked');
    expect(r2.outcomes.map((o) => o.status)).toEqual(['fulfilled', 'fulfilled', 'fulfilled', 'rejected']);
    const ok2 = r2.outcomes[0] as PromiseFulfilledResult<Awaited<ReturnType<typeof runSecAggSite>>>;
    expect(ok2.value).toMatchObject({ survivors: ['site-a', 'site-b', 'site-c'], dropped: ['site-d'] });

    const job = await fed.coord.engine.waitForJob('job-drop', 20_000 * SLOWDOWN);
    expect(job.status).toBe('completed');
    const [v0, v1, v2] = [0, 1, 2].map((v) => versionFlat(fed.coord, 'job-drop', v));
    const mean = (d: Map<string, Float32Array>, who: string[]) => new Float32Array(n).map((_, i) => who.reduce((a, id) => a + d.get(id)![i], 0) / who.length);
    // version 1 = v0 + mean of all four (site-d's input was in); version 2 = v1 + mean of a, b, c
    const m1 = mean(r1.deltas, ids), m2 = mean(r2.deltas, ['site-a', 'site-b', 'site-c']);
    expect(maxAbsDiff(v1, v0.map((x, i) => x + m1[i]))).toBeLessThan(1e-6);
    expect(maxAbsDiff(v2, v1.map((x, i) => x + m2[i]))).toBeLessThan(1e-6);
    // and NOT the mean over all four in round 2 (site-d's masked input never arrived)
    const wrong = mean(r2.deltas, ids);
    expect(maxAbsDiff(v2, v1.map((x, i) => x + wrong[i]))).toBeGreaterThan(1e-3);
    const mf = (v: number) => JSON.parse(fed.coord.store.adapterVersion('job-drop', v)!.manifest_json);
    expect(mf(1)).toMatchObject({ contributing_sites: 4, num_examples: 20 });
    expect(mf(2)).toMatchObject({ contributing_sites: 3, num_examples: 15 });
    const row = fed.coord.engine.secagg.store.round({ job_id: 'job-drop', round: 2, attempt: 1 })!;
    expect(row).toMatchObject({ stage: 'done', purged: 1 });
    expect(JSON.parse(row.dropped_json!)).toEqual(['site-d']);
  }, TEST_TIMEOUT_MS);
});

describe('secure aggregation below the threshold', () => {
  it('only one of three sites advertises: the key stage closes at deadline - R and the round fails with FEDLORA_ERR_SECAGG', async () => {
    const fed = await startFederation(['site-a', 'site-b', 'site-c']);
    feds.push(fed);
    // 4 s rounds: the key stage closes at the latest 1 s before the deadline
    await fed.coord.engine.submitJob(secAggSpec({ min_sites: 2, max_sites: 3, round_deadline_s: 4, round_retries: 0 }), 'job-few');
    await waitOpen(() => fed.coord, 'job-few', 1);
    const n = fed.coord.engine.jobInfo('job-few').layout.update.total;
    const t0 = Date.now();
    const [a] = fed.sites;
    await expect(runSecAggSite(a.wire, { jobId: 'job-few', round: 1, siteId: a.id, update: randomDelta(n, 1, 0.01), pollMs: 50, deadlineUnixMs: Date.now() + 10_000 * SLOWDOWN }))
      .rejects.toMatchObject({ code: 'FEDLORA_ERR_SECAGG' });
    expect(Date.now() - t0).toBeGreaterThan(2000);
    const job = await fed.coord.engine.waitForJob('job-few', 10_000 * SLOWDOWN);
    expect(job.status).toBe('failed');
    expect(job.error).toMatch(/FEDLORA_ERR_SECAGG: .*1 sites advertised keys, threshold 2/);
    expect(fed.coord.store.roundTasks('job-few', 1, 1).map((t) => t.status)).toEqual(['cancelled', 'cancelled', 'cancelled']);
    expect(fed.coord.store.adapterVersions('job-few').map((v) => v.version)).toEqual([0]);
  }, TEST_TIMEOUT_MS);
});
