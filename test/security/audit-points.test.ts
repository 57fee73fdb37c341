// What the round engine writes to the audit log for a DP job (in-process engine on a real
// SQLite file): per update the norm the site reported and the norm the coordinator measured,
// with the round's clip norm C and the norm after clipping to C; per round the aggregation
// (strategy report: clipped count, noise std), the publication (version + sha256 of the
// published file) and the privacy spend (epsilon after the round = the ledger's).
import { describe, it, expect, afterAll } from 'vitest';
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { submitUpdateBytes } from '../../coordinator/rounds/intake.ts';
import { adapterFiles } from '../../coordinator/publish/publisher.ts';
import { createPrivacyLedger } from '../../coordinator/privacy/ledger.ts';
import { harness, online, tinySpec, fakeDelta, encodeDelta, type Harness } from '../coordinator/helpers.ts';

const hs: Harness[] = [];
afterAll(() => hs.forEach((h) => h.close()));

describe('audit points of a DP round', () => {
  it('update norms (site, coordinator, after clipping), aggregation, publication, privacy spend, in order', async () => {
    const h = harness();
    hs.push(h);
    online(h, 's1', 's2');
    const dp = { clip_norm: 1, noise_multiplier: 1.2, delta: 1e-5, sample_rate: 1, epsilon_budget: 100, adaptive_clipping: false };
    const job = await h.engine.submitJob(tinySpec({ rounds: 1, privacy: { dp } }), 'job-dp', 'admin:test');
    await h.engine.tick();
    const { layout } = h.engine.jobInfo(job);
    const norms: Record<string, number> = {};
    for (const [site, scale] of [['s1', 0.001], ['s2', 1]] as const) {
      const d = fakeDelta(layout.update, site, 1).map((x) => x * scale);
      norms[site] = Math.sqrt(d.reduce((a, x) => a + x * x, 0));
      const task = h.store.openTasksFor(site)[0];
      await submitUpdateBytes(h.engine, site, { updateId: `u-${site}`, taskId: task.task_id, jobId: job, round: 1, baseVersion: 0, numExamples: 4, updateNorm: 0.5, clipped: site === 's2' }, encodeDelta(layout.update, d));
    }
    expect(norms.s1).toBeLessThan(1); // s1 is inside the clip norm, s2 far outside
    expect(norms.s2).toBeGreaterThan(1);
    await h.engine.tick();
    expect(h.store.job(job)).toMatchObject({ status: 'completed', current_version: 1 });

    const entries = h.store.audit.list();
    const seq = (action: string, subject?: string) => entries.find((e) => e.action === action && (subject === undefined || e.subject === subject))!.seq;
    // the order of events is the order of the chain
    expect(seq('job_submitted')).toBeLessThan(seq('publish', 'job-dp/v0'));
    expect(seq('task')).toBeLessThan(seq('update_received', 'u-s1'));
    expect(seq('update_received', 'u-s2')).toBeLessThan(seq('aggregate'));
    expect(seq('aggregate')).toBeLessThan(seq('publish', 'job-dp/v1'));
    expect(seq('publish', 'job-dp/v1')).toBeLessThan(seq('privacy_spend'));
    expect(seq('privacy_spend')).toBeLessThan(seq('job_completed'));
    expect(entries.find((e) => e.action === 'job_submitted')!.actor).toBe('admin:test');

    const recv = (id: string) => entries.find((e) => e.action === 'update_received' && e.subject === id)!.details;
    for (const site of ['s1', 's2']) {
      const d = recv(`u-${site}`);
      expect(d).toMatchObject({ site_norm: 0.5, site_clipped: site === 's2', dp_clip_norm: 1, examples: 4 });
      expect(d.coordinator_norm as number).toBeCloseTo(norms[site], 4);
      expect(d.norm_after_clip as number).toBeCloseTo(Math.min(norms[site], 1), 4);
      expect(d.clipped_by_coordinator).toBe(norms[site] > 1);
    }
    const agg = entries.find((e) => e.action === 'aggregate')!.details as { metrics: Record<string, number>; updates: unknown[] };
    expect(agg.updates).toHaveLength(2);
    expect(agg.metrics).toMatchObject({ dp_clip_norm: 1, dp_clipped: 1 });
    expect(agg.metrics.dp_noise_std).toBeGreaterThan(0);
    const v1 = h.store.adapterVersion(job, 1)!;
    const fileSha = createHash('sha256').update(readFileSync(adapterFiles(v1).model)).digest('hex');
    expect(entries.find((e) => e.subject === 'job-dp/v1')!.details).toMatchObject({ version: 1, sha256: fileSha, manifest_sha256: v1.manifest_sha256 });
    const spend = entries.find((e) => e.action === 'privacy_spend')!.details;
    expect(spend.epsilon as number).toBeCloseTo(createPrivacyLedger(dp).epsilonAfter(1).epsilon, 10);
    expect(spend.epsilon).toBe(h.store.privacyLedger(job)[0].epsilon);
    expect(h.store.audit.verify()).toMatchObject({ ok: true });
  });
});
