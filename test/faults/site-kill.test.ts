// A site agent SIGKILLed after its round-1 task was sent (while it trains): the round still
// completes at the deadline with the other site (min_sites 1), the killed site, restarted, takes
// part in round 2, and no site ever has more than one accepted update in a round.
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

describe('fault: site killed mid-training', () => {
  it('round completes at the deadline without it; restarted, it rejoins; nothing double counted', async () => {
    const s1 = fed.startSite(0);
    let s2: Proc | undefined = fed.startSite(1);
    await fed.waitFor('both sites online', 2, async () => {
      const r = await fed.api<{ sites: { id: string; online?: boolean }[] }>('/api/sites');
      return r.sites.filter((s) => s.online).length === 2 ? true : null;
    });
    const t0 = Date.now();
    // hospital-1's round (load the model, 30 steps, upload) fits the deadline twice over
    const deadlineS = fed.roundDeadlineS(2);
    const jobId = await fed.submitJob({ rounds: 8, min_sites: 1, round_deadline_s: deadlineS, train: { local_steps: 30, learning_rate: 5e-3, optimizer: 'adamw', batch_tokens: 512, seed: 11, warmup_steps: 0, max_grad_norm: 1 } });

    // Kill hospital-2 as soon as its round-1 task is delivered (it is now loading the model/training).
    await fed.waitFor('hospital-2 receives its round-1 task', 1, async () => {
      const r = (await fed.rounds(jobId))[0];
      const t = r?.tasks.find((x) => x.site === 'hospital-2');
      return t && t.status === 'delivered' ? true : null;
    });
    await fed.kill(s2, 'SIGKILL');
    s2 = undefined;
    // The coordinator counts it offline once its heartbeats have stopped for heartbeat.timeout_ms
    // (its last one, on a busy machine, may have come well before the kill).
    const off = await fed.waitFor('hospital-2 marked offline', 1, async () => {
      const r = await fed.api<{ sites: { id: string; online?: boolean; last_seen: string | null }[] }>('/api/sites');
      const s = r.sites.find((x) => x.id === 'hospital-2');
      return s?.online === false ? { lastSeen: Date.parse(s.last_seen!), answeredAt: Date.now() } : null;
    }, fed.heartbeatTimeoutMs);
    expect(off.answeredAt - off.lastSeen).toBeGreaterThanOrEqual(fed.heartbeatTimeoutMs);

    const r1 = await fed.waitFor('round 1 published', 2, async () => {
      const r = (await fed.rounds(jobId)).find((x) => x.round === 1 && x.state === 'published');
      return r ?? null;
    }, deadlineS * 1000);
    // hospital-2 never sent an update, so the round waited for its deadline.
    expect(r1.updates.filter((u) => u.site === 'hospital-2')).toHaveLength(0);
    expect(r1.updates.filter((u) => u.site === 'hospital-1' && u.status === 'accepted')).toHaveLength(1);
    expect(Date.now() - t0).toBeGreaterThanOrEqual((deadlineS - 1) * 1000);

    // The killed site comes back and rejoins.
    s2 = fed.startSite(1);
    // 7 more rounds of training and aggregation; one may still wait out a deadline for hospital-2
    const job = await fed.waitFor('job completed', 7 * 2, async () => {
      const j = await fed.api<{ status: string; current_version: number; error: string | null }>(`/api/jobs/${jobId}`);
      if (j.status === 'failed') throw new Error(`job failed: ${j.error}\n${fed.logTail(s1)}`);
      return j.status === 'completed' ? j : null;
    }, deadlineS * 1000);
    expect(job.current_version).toBe(8);

    const rounds = await fed.rounds(jobId);
    const published = rounds.filter((r) => r.state === 'published').map((r) => r.round);
    expect(published).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    // Restarted after round 1, hospital-2 contributes to a later round (a round that opened before it
    // was back online goes on without it, at its deadline; the next one selects both: 8 rounds of
    // 30 local steps last longer than a restart).
    const later = rounds.filter((r) => r.round > 1 && r.state === 'published').flatMap((r) => r.updates.filter((u) => u.status === 'accepted').map((u) => u.site));
    expect(later).toContain('hospital-2');
    // Never double counted: at most one accepted update per (round, attempt, site), checked in SQLite.
    const dup = fed.query<{ n: number }>(
      `SELECT COUNT(*) AS n FROM updates WHERE job_id = ? AND status = 'accepted' GROUP BY round, attempt, site_id HAVING COUNT(*) > 1`, jobId);
    expect(dup).toEqual([]);
    const versions = fed.query<{ version: number }>(`SELECT version FROM adapter_versions WHERE job_id = ? AND version > 0 ORDER BY version`, jobId);
    expect(versions.map((v) => v.version)).toEqual([1, 2, 3, 4, 5, 6, 7, 8]);
    // its waits are derived from measured work and fail first, naming what they waited for
  }, 3 * TEST_TIMEOUT_MS);
});
