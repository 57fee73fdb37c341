// The coordinator SIGKILLed while a round is receiving updates (one update acknowledged, the
// other site still training): restarted from the same data dir it resumes the job and the open
// round from SQLite + disk, keeps the acknowledged update (same id, same sha256, not re-counted),
// the sites reconnect by themselves, and the job completes with every version published once.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { setupFederation, type Federation, type Proc } from './harness.ts';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';

let fed: Federation;
beforeAll(async () => {
  fed = await setupFederation({ sites: 2 });
});
afterAll(async () => {
  await fed?.stopAll();
});

type Upd = { update_id: string; site_id: string; status: string; sha256: string; round: number; attempt: number };

describe('fault: coordinator killed while receiving updates', () => {
  it('resumes the job and round after restart, keeping acknowledged updates exactly once', async () => {
    fed.startSite(0);
    const s2: Proc = fed.startSite(1);
    await fed.waitFor('both sites online', 2, async () => {
      const r = await fed.api<{ sites: { online?: boolean }[] }>('/api/sites');
      return r.sites.filter((s) => s.online).length === 2 ? true : null;
    });
    // room for a coordinator restart, the sites' reconnects and a site's round
    const jobId = await fed.submitJob({ rounds: 3, min_sites: 1, round_deadline_s: fed.roundDeadlineS(3) });
    // Hold hospital-2 (SIGSTOP) once its task is delivered, so round 1 is open with exactly one
    // acknowledged update when the coordinator dies.
    await fed.waitFor('hospital-2 task delivered', 1, async () => {
      const t = (await fed.rounds(jobId))[0]?.tasks.find((x) => x.site === 'hospital-2');
      return t?.status === 'delivered' ? true : null;
    });
    s2.p.kill('SIGSTOP');
    const before = await fed.waitFor('hospital-1 update accepted', 2, async () => {
      const u = fed.query<Upd>(`SELECT * FROM updates WHERE job_id = ? AND status = 'accepted'`, jobId);
      return u.length === 1 ? u : null;
    });
    expect(before[0].site_id).toBe('hospital-1');
    const coord0 = (await fed.api<{ current_round: { round: number; state: string } }>(`/api/jobs/${jobId}`)).current_round;
    expect(coord0).toMatchObject({ round: 1, state: 'open' });

    await fed.kill(fed.coordinator(), 'SIGKILL');
    s2.p.kill('SIGCONT');
    await fed.startCoordinator();

    // three rounds, each of which may wait out its deadline for a site still reconnecting
    const job = await fed.waitFor('job completed after restart', 3 * 2, async () => {
      const j = await fed.api<{ status: string; current_version: number; error: string | null }>(`/api/jobs/${jobId}`);
      if (j.status === 'failed') throw new Error(`job failed: ${j.error}`);
      return j.status === 'completed' ? j : null;
    }, 3 * fed.roundDeadlineS(3) * 1000);
    expect(job.current_version).toBe(3);

    const after = fed.query<Upd>(`SELECT * FROM updates WHERE job_id = ? AND status = 'accepted' ORDER BY round, site_id`, jobId);
    const allRows = fed.query(`SELECT update_id, round, attempt, site_id, status, reason FROM updates WHERE job_id = ?`, jobId);
    const roundRows = fed.query(`SELECT round, attempt, state, error FROM rounds WHERE job_id = ?`, jobId);
    // the acknowledged round-1 update survived the crash unchanged (diagnostics in the message)
    expect(JSON.stringify({ before, allRows, roundRows })).toContain(before[0].update_id);
    const kept = after.find((u) => u.update_id === before[0].update_id);
    expect(kept, JSON.stringify({ before, allRows, roundRows })).toMatchObject({ site_id: 'hospital-1', sha256: before[0].sha256, round: 1 });
    // Never re-counted: at most one accepted update per site in every round.
    const perRound = new Map<number, string[]>();
    for (const u of after) perRound.set(u.round, [...(perRound.get(u.round) ?? []), u.site_id]);
    for (const [, sites] of perRound) expect(new Set(sites).size).toBe(sites.length);
    expect(perRound.get(1)).toContain('hospital-1');
    // Both sites find the restarted coordinator by themselves and contribute after the restart.
    // (A round that opens while a site's channel is still backing off goes on without it, so
    // hospital-1 is required in round 2 OR 3; hospital-2, held when the coordinator died,
    // resumes its round-1 upload from its outbox or trains again in a later round.)
    expect([...(perRound.get(2) ?? []), ...(perRound.get(3) ?? [])]).toContain('hospital-1');
    expect([1, 2, 3].flatMap((r) => perRound.get(r) ?? [])).toContain('hospital-2');
    const versions = fed.query<{ version: number }>(`SELECT version FROM adapter_versions WHERE job_id = ? AND version > 0 ORDER BY version`, jobId);
    expect(versions.map((v) => v.version)).toEqual([1, 2, 3]);
    // round 1 was not restarted as a new attempt: the open round resumed
    const r1 = fed.query<{ attempt: number; state: string }>(`SELECT attempt, state FROM rounds WHERE job_id = ? AND round = 1`, jobId);
    expect(r1).toEqual([{ attempt: 1, state: 'published' }]);
  }, 2 * TEST_TIMEOUT_MS);
});

