// A DP job with Poisson sampling (privacy.dp.sample_rate q < 1) through the round engine (real
// SQLite, fake clock, fake updates): each round's sites are the Poisson sample drawn from the
// coordinator's secret key over the N eligible sites fixed at submission; an empty sample
// publishes noise only; the sample is in the audit log once the round is published; the ledger
// after T rounds equals `fedlora privacy epsilon` for (q, z, T, delta), and so does the epsilon
// each task tells its site, whose own maximum-epsilon check declines by it. Settings that cannot
// give the accounted guarantee are refused at submission, naming the field.
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { harness, online, tinySpec, fakeDelta, encodeDelta, rmDir, type Harness } from './helpers.ts';
import { submitUpdateBytes } from '../../coordinator/rounds/intake.ts';
import { roundSamplingKey } from '../../coordinator/privacy/noise-key.ts';
import { poissonSample } from '../../coordinator/strategies/selection.ts';
import { populationOf } from '../../coordinator/jobs/population.ts';
import { checkPolicy } from '../../site-agent/agent/policy.ts';
import { computeEpsilon } from '../../coordinator/privacy/rdp.ts';
import { jobView } from '../../coordinator/http/routes-jobs.ts';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';
import { runProcess } from '../runner/run-process.ts';

const REPO = join(import.meta.dirname, '..', '..');
const dirs: string[] = [];
afterEach(() => {
  while (dirs.length) rmDir(dirs.pop()!);
});

const SITES = ['s1', 's2', 's3', 's4', 's5'];
const dp = { clip_norm: 1, noise_multiplier: 1.1, delta: 1e-5, epsilon_budget: 1000, sample_rate: 0.35 };
const T = 8;

/** `fedlora privacy epsilon --json` for (q, z, T, delta). */
async function cliEpsilon(rounds: number): Promise<number> {
  const r = await runProcess(process.execPath, [join(REPO, 'cli/bin.mjs'), 'privacy', 'epsilon', '--noise-multiplier', String(dp.noise_multiplier),
    '--sample-rate', String(dp.sample_rate), '--rounds', String(rounds), '--delta', String(dp.delta), '--json'], { cwd: REPO });
  if (r.status !== 0) throw new Error(`fedlora privacy epsilon failed: ${r.stderr}`);
  return (JSON.parse(r.stdout) as { epsilon: number }).epsilon;
}

/** The accountant the CLI runs, in process (the CLI itself is asserted once, for T rounds). */
const epsilonAfter = (rounds: number) => computeEpsilon({ noiseMultiplier: dp.noise_multiplier, sampleRate: dp.sample_rate, steps: rounds, delta: dp.delta }).epsilon;

/** A noise key whose first T rounds include an empty sample and a sample of two or more. */
function keyWithEmptyRound(): Buffer {
  for (let i = 0; ; i++) {
    const key = createHash('sha256').update(`key ${i}`).digest();
    const sizes = Array.from({ length: T }, (_, r) => poissonSample(SITES, dp.sample_rate, roundSamplingKey(key, 'job-q', r + 1, 1)).length);
    if (sizes.includes(0) && sizes.some((n) => n >= 2)) return key;
  }
}

function mk(noiseKey: Buffer): Harness {
  const h = harness({ engine: { noiseKey } });
  dirs.push(h.dir);
  return h;
}

describe('DP job with Poisson sampling through the round engine', () => {
  it('samples from the secret key over the fixed N, publishes empty samples as noise, records the sample, and accounts exactly', async () => {
    const key = keyWithEmptyRound();
    let h = mk(key);
    online(h, ...SITES);
    const job = await h.engine.submitJob(tinySpec({ rounds: T, min_sites: 1, max_sites: 5, selection_seed: 99, privacy: { dp } }), 'job-q');
    expect(populationOf(h.store.db, job)).toEqual(SITES);
    online(h, 's6'); // enrolled after submission: never eligible, N stays 5
    // An empty sample's round closes in the tick that opens it (nothing to wait for): each tick
    // may publish several rounds, so the checks run over the rows.
    let restarted = false;
    const toldSites = new Map<number, number>();
    for (let ticks = 0; h.store.job(job)!.status === 'running'; ticks++) {
      expect(ticks).toBeLessThan(3 * T);
      online(h, ...SITES, 's6');
      await h.engine.tick();
      const r = h.store.currentRound(job)!;
      if (r.state !== 'open') continue;
      if (r.round >= 4 && !restarted) {
        h = h.reopen(); // a restart changes nothing: the sample is keyed, the open round persisted
        restarted = true;
      }
      const tasks = h.store.roundTasks(job, r.round, 1);
      const msg = h.engine.taskMessage(tasks[0]);
      const eps = msg.privacy!.epsilonAfterRound;
      // what the site is told (compared with the ledger below); its own maximum-epsilon check
      // accepts the round under a maximum above it and declines it under one below it
      toldSites.set(r.round, eps);
      const view = { dpEnabled: true, epsilonAfterRound: eps, secureAggregation: false, minSites: msg.privacy!.minSites, selectedSites: msg.selectedSites };
      const policy = { min_sites_per_aggregation: 1, require_dp: true, require_secure_aggregation: false };
      expect(checkPolicy({ ...policy, max_epsilon: epsilonAfter(r.round) * 1.0001 } as never, view)).toEqual({ ok: true });
      expect(checkPolicy({ ...policy, max_epsilon: (epsilonAfter(r.round) + epsilonAfter(r.round - 1)) / 2 } as never, view)).toMatchObject({ ok: false, code: 'FEDLORA_ERR_PRIVACY_BUDGET' });
      const { layout } = h.engine.jobInfo(job);
      for (const t of tasks) {
        await submitUpdateBytes(h.engine, t.site_id, { updateId: `${t.site_id}-r${r.round}`, taskId: t.task_id, jobId: job, round: r.round, baseVersion: r.base_version, numExamples: 4 },
          encodeDelta(layout.update, fakeDelta(layout.update, t.site_id, r.round)));
      }
    }
    expect(restarted).toBe(true);
    const rounds = h.store.rounds(job);
    expect(rounds.map((r) => [r.round, r.attempt, r.state])).toEqual(Array.from({ length: T }, (_, k) => [k + 1, 1, 'published']));
    const { layout } = h.engine.jobInfo(job);
    let empty = 0;
    for (const r of rounds) {
      // each round's sites: the Poisson sample of the secret key, over the N sites fixed at submission
      const expected = poissonSample(SITES, dp.sample_rate, roundSamplingKey(key, job, r.round, 1));
      expect(JSON.parse(r.selected_json), `round ${r.round}`).toEqual(expected);
      const manifest = JSON.parse(h.store.adapterVersion(job, r.round)!.manifest_json) as { contributing_sites: number };
      expect(manifest.contributing_sites).toBe(expected.length);
      if (expected.length > 0) continue;
      // noise only: version r differs from r - 1 by N(0, (z C / (q N))^2) in every trained element
      empty++;
      const a = h.engine.loadVersion(job, r.round - 1), b = h.engine.loadVersion(job, r.round);
      let s2 = 0, n = 0;
      for (const e of layout.update.entries) {
        const off = layout.full.entries.find((x) => x.name === e.name)!.offset;
        for (let i = 0; i < e.length; i++, n++) s2 += (b[off + i] - a[off + i]) ** 2;
      }
      const std = (dp.noise_multiplier * dp.clip_norm) / (dp.sample_rate * SITES.length);
      expect(Math.sqrt(s2 / n)).toBeGreaterThan(0.8 * std);
      expect(Math.sqrt(s2 / n)).toBeLessThan(1.2 * std);
    }
    expect(empty).toBeGreaterThan(0);
    expect(h.store.job(job)).toMatchObject({ status: 'completed', current_version: T });
    // the ledger after T rounds is the CLI's epsilon for (q, z, T, delta); every round counted
    const ledger = h.store.privacyLedger(job);
    expect(ledger.map((l) => l.round)).toEqual(Array.from({ length: T }, (_, k) => k + 1));
    expect(ledger.at(-1)!.epsilon).toBe(await cliEpsilon(T));
    for (const l of ledger) expect(l.epsilon).toBe(epsilonAfter(l.round));
    expect(toldSites.size).toBeGreaterThan(0);
    for (const [round, eps] of toldSites) expect(eps, `round ${round}: the task's epsilon is the ledger's`).toBe(ledger[round - 1].epsilon);
    expect(ledger.every((l) => l.sample_rate === dp.sample_rate)).toBe(true);
    // the audit log has each round's sample, written with its publication
    const entries = h.store.audit.list({ action: 'round_sampled' });
    expect(entries.map((e) => (e.details as { round: number }).round)).toEqual(ledger.map((l) => l.round));
    for (const e of entries) {
      const d = e.details as { round: number; sampled: string[]; eligible_sites: number; denominator: number; sample_rate: number };
      expect(d).toMatchObject({ sample_rate: dp.sample_rate, eligible_sites: 5, denominator: dp.sample_rate * 5 });
      expect(d.sampled).toEqual(poissonSample(SITES, dp.sample_rate, roundSamplingKey(key, job, d.round, 1)));
    }
    const all = rounds.flatMap((r) => JSON.parse(r.selected_json) as string[]);
    expect(all).not.toContain('s6');
    h.close();
  }, TEST_TIMEOUT_MS);

  it('refuses at submission settings that cannot give the accounted guarantee, naming the field', async () => {
    const h = mk(createHash('sha256').update('k').digest());
    const spec = (over: Record<string, unknown>, p: Record<string, unknown> = {}) => tinySpec({ min_sites: 1, max_sites: 5, ...over, privacy: { dp: { ...dp, ...p } } });
    await expect(h.engine.submitJob(spec({}))).rejects.toMatchObject({ code: 'FEDLORA_ERR_JOB_INVALID', message: expect.stringMatching(/privacy\.dp\.sample_rate: .*none is enrolled/) });
    online(h, ...SITES);
    await expect(h.engine.submitJob(spec({ max_sites: 4 }))).rejects.toMatchObject({ code: 'FEDLORA_ERR_JOB_INVALID', message: expect.stringMatching(/^max_sites: 4 is below N = 5 eligible sites/) });
    await expect(h.engine.submitJob(spec({}, { eligible_sites: ['s1', 'nobody'] }))).rejects.toMatchObject({ message: expect.stringMatching(/privacy\.dp\.eligible_sites\[1\]: site "nobody" is not an enrolled, active site/) });
    expect(() => spec({ min_sites: 2 })).toThrow(/min_sites: must be 1 with privacy\.dp\.sample_rate 0\.35 < 1/);
    expect(() => tinySpec({ min_sites: 1, privacy: { dp, secure_aggregation: true } })).toThrow(/privacy\.secure_aggregation: cannot be combined with privacy\.dp\.sample_rate/);
    expect(h.store.jobs()).toEqual([]);
    // an explicit roster fixes N below the enrolled sites (and max_sites may then be N)
    const job = await h.engine.submitJob(spec({ max_sites: 2 }, { eligible_sites: ['s4', 's2'] }));
    expect(populationOf(h.store.db, job)).toEqual(['s2', 's4']);
    // job status shows N and q x N
    expect(jobView(h.engine, h.store.job(job)!).dp_sampling).toEqual({ sample_rate: 0.35, eligible_sites: 2, expected_sites: 0.7, sites: ['s2', 's4'] });
    await h.engine.tick();
    expect((JSON.parse(h.store.currentRound(job)!.selected_json) as string[]).every((s) => s === 's2' || s === 's4')).toBe(true);
    h.close();
  });
});
