// A coordinator restart in the middle of a secure-aggregation round loses nothing it
// acknowledged: the roster, the routed shares and the masked chunks already sent are in SQLite,
// the sites (still holding their secrets in memory) carry on against the restarted coordinator,
// and the round publishes the uniform mean.
import { describe, it, expect, afterAll } from 'vitest';
import { runSecAggSite } from '../../site-agent/agent/secagg-client.ts';
import { barrier, maxAbsDiff, randomDelta, secAggSpec, startFederation, versionFlat, waitOpen, type Federation } from './helpers.ts';
import { TEST_TIMEOUT_MS, SLOWDOWN } from '../runner/limits.ts';

const feds: Federation[] = [];
afterAll(async () => {
  for (const f of feds) await f.close();
});

describe('secure aggregation across a coordinator restart', () => {
  it('sites pause after 2 of 4 masked chunks, the coordinator restarts, the round completes', async () => {
    const ids = ['site-a', 'site-b', 'site-c'];
    const fed = await startFederation(ids);
    feds.push(fed);
    fed.coord.engine.secagg.options.chunkElems = 1000;
    // 120 s rounds: each stage may wait 7.5 s, longer than the restart takes
    await fed.coord.engine.submitJob(secAggSpec({ min_sites: 2, max_sites: 3, round_deadline_s: 120 }), 'job-rs');
    await waitOpen(() => fed.coord, 'job-rs', 1);
    const n = fed.coord.engine.jobInfo('job-rs').layout.update.total;
    const deltas = ids.map((_, k) => randomDelta(n, 300 + k, 0.05));

    const paused = barrier(ids.length);
    let resume!: () => void;
    const resumed = new Promise<void>((r) => (resume = r));
    const runs = fed.sites.map((s, k) => runSecAggSite({
      async secAgg(m) {
        if (m.stage === 'masked' && JSON.parse(m.payload.toString()).index === 2) {
          void paused.arrive();
          await resumed;
        }
        return s.wire.secAgg(m);
      },
    }, { jobId: 'job-rs', round: 1, siteId: s.id, update: deltas[k], numExamples: 3, pollMs: 50, deadlineUnixMs: Date.now() + 60_000 * SLOWDOWN }));

    await paused.all;
    await fed.restart();
    const key = { job_id: 'job-rs', round: 1, attempt: 1 };
    const sa = fed.coord.engine.secagg.store;
    expect(sa.round(key)).toMatchObject({ stage: 'masked' });
    expect(JSON.parse(sa.round(key)!.u2_json!)).toEqual(ids);
    expect(sa.messages(key, 'share').map((m) => m.site_id)).toEqual(ids);
    expect([...sa.chunkCounts(key)].sort()).toEqual(ids.map((id) => [id, 2]));
    resume();

    const results = await Promise.all(runs);
    expect(results.map((r) => r.survivors)).toEqual(ids.map(() => ids));
    const job = await fed.coord.engine.waitForJob('job-rs', 20_000 * SLOWDOWN);
    expect(job.status).toBe('completed');
    const v0 = versionFlat(fed.coord, 'job-rs', 0), v1 = versionFlat(fed.coord, 'job-rs', 1);
    expect(maxAbsDiff(v1, v0.map((x, i) => x + (deltas[0][i] + deltas[1][i] + deltas[2][i]) / 3))).toBeLessThan(1e-6);
  }, TEST_TIMEOUT_MS);

  it('refuses misuse with clear errors: unknown stage/job/round, non-secagg job, bad chunks, site not selected, site policy', async () => {
    const fed = await startFederation(['site-a', 'site-b', 'site-x']);
    feds.push(fed);
    const { secAggSpec: spec } = await import('./helpers.ts');
    await fed.coord.engine.submitJob(spec({ min_sites: 2, max_sites: 3 }, { secure_aggregation: false }), 'job-plain');
    const [a] = fed.sites;
    const call = (w: typeof a.wire, jobId: string, stage: string, payload: unknown, round = 1) => w.secAgg({ jobId, round, stage, payload: Buffer.from(JSON.stringify(payload)) });
    await waitOpen(() => fed.coord, 'job-plain', 1);
    await expect(call(a.wire, 'job-plain', 'config', {})).rejects.toMatchObject({ code: 'FEDLORA_ERR_SECAGG' });
    await expect(call(a.wire, 'job-none', 'config', {})).rejects.toMatchObject({ code: 'FEDLORA_ERR_SECAGG' });
    fed.coord.engine.cancelJob('job-plain');

    // secagg job selecting only site-a and site-b (max_sites 2, seeded selection over 3 online)
    await fed.coord.engine.submitJob(spec({ min_sites: 2, max_sites: 2 }), 'job-s');
    await waitOpen(() => fed.coord, 'job-s', 1);
    const selected = JSON.parse(fed.coord.store.currentRound('job-s')!.selected_json) as string[];
    const out = fed.sites.find((s) => !selected.includes(s.id))!;
    const inn = fed.sites.find((s) => selected.includes(s.id))!;
    await expect(call(out.wire, 'job-s', 'config', {})).rejects.toMatchObject({ code: 'FEDLORA_ERR_NOT_SELECTED' });
    await expect(call(inn.wire, 'job-s', 'bogus', {})).rejects.toMatchObject({ code: 'FEDLORA_ERR_INVALID_ARGUMENT' });
    await expect(call(inn.wire, 'job-s', 'config', {}, 7)).rejects.toMatchObject({ code: 'FEDLORA_ERR_NOT_FOUND' });
    const cfg = JSON.parse((await call(inn.wire, 'job-s', 'config', {})).payload.toString());
    expect(cfg).toMatchObject({ jobId: 'job-s', round: 1, attempt: 1, threshold: 2, l2Clip: null, clipRange: 1, dim: 3586, layoutTotal: 3584 });
    await expect(call(inn.wire, 'job-s', 'advertise', { attempt: 1, msg: { siteId: 'someone-else', cPk: 'x', sPk: 'y' } })).rejects.toMatchObject({ code: 'FEDLORA_ERR_INVALID_ARGUMENT' });
    await expect(call(inn.wire, 'job-s', 'masked', { attempt: 1, siteId: inn.id, index: 0, data: 'AAAA', sha256: '0'.repeat(64) })).rejects.toMatchObject({ code: 'FEDLORA_ERR_CHUNK_SIZE' });
    const zeros = Buffer.alloc(4 * 3586);
    await expect(call(inn.wire, 'job-s', 'masked', { attempt: 1, siteId: inn.id, index: 0, data: zeros.toString('base64'), sha256: '0'.repeat(64) })).rejects.toMatchObject({ code: 'FEDLORA_ERR_CHUNK_HASH' });
    await expect(call(inn.wire, 'job-s', 'advertise', { attempt: 2, msg: {} })).rejects.toMatchObject({ code: 'FEDLORA_ERR_NOT_FOUND' });
    // a wrong-length update is refused on the site before anything is sent
    await expect(runSecAggSite(inn.wire, { jobId: 'job-s', round: 1, siteId: inn.id, update: new Float32Array(10), deadlineUnixMs: Date.now() + 5000 * SLOWDOWN })).rejects.toMatchObject({ code: 'FEDLORA_ERR_SHAPE' });
    // a site whose policy demands a higher threshold refuses
    await expect(runSecAggSite(inn.wire, { jobId: 'job-s', round: 1, siteId: inn.id, update: new Float32Array(3584), threshold: 5, deadlineUnixMs: Date.now() + 5000 * SLOWDOWN })).rejects.toThrow(/below this site's minimum 5/);
    expect(fed.coord.engine.secagg.store.messages({ job_id: 'job-s', round: 1, attempt: 1 }, 'advertise')).toEqual([]);
  }, TEST_TIMEOUT_MS);
});
