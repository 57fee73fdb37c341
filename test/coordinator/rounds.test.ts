// The round state machine without gRPC: real SQLite files, fake updates, a fake clock.
import { describe, it, expect, afterEach } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { harness, online, tinySpec, fakeDelta, encodeDelta, rmDir, type Harness } from './helpers.ts';
import { submitUpdateBytes } from '../../coordinator/rounds/intake.ts';
import { decodeSafetensorsF32 } from '../../shared/safetensors.ts';
import { flatten } from '../../shared/tensors.ts';
import type { RoundEngine } from '../../coordinator/rounds/index.ts';

const dirs: string[] = [];
afterEach(() => {
  while (dirs.length) rmDir(dirs.pop()!);
});

function mk(): Harness {
  const h = harness();
  dirs.push(h.dir);
  return h;
}

async function submit(engine: RoundEngine, jobId: string, site: string, round: number, examples: number, delta?: Float32Array) {
  const task = engine.store.openTasksFor(site).find((t) => t.job_id === jobId && t.round === round)!;
  expect(task, `site ${site} has a task in round ${round}`).toBeTruthy();
  const { layout } = engine.jobInfo(jobId);
  const bytes = encodeDelta(layout.update, delta ?? fakeDelta(layout.update, site, round));
  const r = engine.store.rounds(jobId).find((x) => x.round === round && x.attempt === task.attempt)!;
  return submitUpdateBytes(engine, site, { updateId: `${site}-${jobId}-r${round}-a${task.attempt}`, taskId: task.task_id, jobId, round, baseVersion: r.base_version, numExamples: examples }, bytes, { chunkSize: 333 });
}

describe('round state machine', () => {
  it('runs two rounds: selection, collection, weighted FedAvg, published versions 1 and 2', async () => {
    const h = mk();
    online(h, 's1', 's2', 's3');
    const job = await h.engine.submitJob(tinySpec());
    await h.engine.tick();
    const r1 = h.store.currentRound(job)!;
    expect(r1).toMatchObject({ round: 1, attempt: 1, state: 'open', base_version: 0 });
    expect(JSON.parse(r1.selected_json)).toEqual(['s1', 's2', 's3']);
    const v0 = h.engine.loadVersion(job, 0);
    const { layout } = h.engine.jobInfo(job);
    await submit(h.engine, job, 's1', 1, 10);
    await submit(h.engine, job, 's2', 1, 30);
    await h.engine.tick();
    expect(h.store.currentRound(job)!.state).toBe('open'); // s3 still expected, deadline not passed
    await submit(h.engine, job, 's3', 1, 60);
    await h.engine.tick();
    expect(h.store.adapterVersion(job, 1)).toBeTruthy();
    const v1 = h.engine.loadVersion(job, 1);
    const d1 = fakeDelta(layout.update, 's1', 1), d2 = fakeDelta(layout.update, 's2', 1), d3 = fakeDelta(layout.update, 's3', 1);
    for (const i of [0, 5, layout.full.total - 1]) {
      expect(v1[i]).toBeCloseTo(v0[i] + (10 * d1[i] + 30 * d2[i] + 60 * d3[i]) / 100, 5);
    }
    // round 2 opened from version 1
    expect(h.store.currentRound(job)).toMatchObject({ round: 2, base_version: 1, state: 'open' });
    for (const s of ['s1', 's2', 's3']) await submit(h.engine, job, s, 2, 5);
    await h.engine.tick();
    expect(h.store.job(job)).toMatchObject({ status: 'completed', current_version: 2 });
    // version 0: B = 0, A in U(-1/sqrt(in), 1/sqrt(in)) and not all zero
    const a = layout.full.entries.find((e) => e.name.includes('lora_A'))!;
    const b = layout.full.entries.find((e) => e.name.includes('lora_B'))!;
    expect(v0.subarray(b.offset, b.offset + b.length).every((x) => x === 0)).toBe(true);
    const av = v0.subarray(a.offset, a.offset + a.length);
    expect(av.some((x) => x !== 0)).toBe(true);
    expect(av.every((x) => Math.abs(x) <= 1 / Math.sqrt(a.shape[1]))).toBe(true);
  });

  it('deadline: aggregates with >= min_sites, and a vanished site does not block the round', async () => {
    const h = mk();
    online(h, 's1', 's2', 's3');
    const job = await h.engine.submitJob(tinySpec({ rounds: 1 }));
    await h.engine.tick();
    await submit(h.engine, job, 's1', 1, 10);
    await submit(h.engine, job, 's2', 1, 10);
    h.clock.t += 59_000;
    await h.engine.tick();
    expect(h.store.currentRound(job)!.state).toBe('open');
    h.clock.t += 2_000; // s3 vanished: deadline passes
    await h.engine.tick();
    expect(h.store.job(job)!.status).toBe('completed');
    const m = JSON.parse(h.store.adapterVersion(job, 1)!.manifest_json);
    expect(m.contributing_sites).toBe(2);
    expect(h.store.roundTasks(job, 1, 1).find((t) => t.site_id === 's3')!.status).toBe('cancelled');
  });

  it('deadline with fewer than min_sites: the attempt fails, updates are discarded, the round is retried, then the job fails', async () => {
    const h = mk();
    online(h, 's1', 's2');
    const job = await h.engine.submitJob(tinySpec({ rounds: 1, round_retries: 1 }));
    await h.engine.tick();
    await submit(h.engine, job, 's1', 1, 10);
    h.clock.t += 61_000;
    online(h, 's1', 's2');
    await h.engine.tick();
    const rounds = h.store.rounds(job);
    expect(rounds.map((r) => [r.round, r.attempt, r.state])).toEqual([[1, 1, 'failed'], [1, 2, 'open']]);
    expect(rounds[0].error).toMatch(/1 accepted update\(s\), min_sites is 2/);
    expect(h.store.roundUpdates(job, 1, 1)[0].status).toBe('discarded');
    h.clock.t += 61_000;
    await h.engine.tick();
    expect(h.store.job(job)).toMatchObject({ status: 'failed' });
    expect(h.store.job(job)!.error).toMatch(/round 1 failed 2 times/);
  });

  it('waits while fewer than min_sites are online; declines are recorded', async () => {
    const h = mk();
    online(h, 's1');
    const job = await h.engine.submitJob(tinySpec({ rounds: 1 }));
    await h.engine.tick();
    expect(h.store.currentRound(job)).toBeUndefined();
    h.clock.t += 40_000; // s1's heartbeat is now stale
    online(h, 's2', 's3');
    await h.engine.tick();
    expect(JSON.parse(h.store.currentRound(job)!.selected_json)).toEqual(['s2', 's3']);
    h.engine.declineTask('s3', h.store.openTasksFor('s3')[0].task_id, 'policy refuses', 'FEDLORA_ERR_POLICY');
    const t = h.store.roundTasks(job, 1, 1).find((x) => x.site_id === 's3')!;
    expect(t).toMatchObject({ status: 'declined', decline_code: 'FEDLORA_ERR_POLICY', decline_reason: 'policy refuses' });
    await h.engine.tick(); // s2 pending, s3 declined: not all answered yet
    expect(h.store.currentRound(job)!.state).toBe('open');
  });

  it('restart mid-round (store closed and reopened) and an interrupted aggregation give the same adapter', async () => {
    // Reference run, uninterrupted.
    const ref = mk();
    online(ref, 's1', 's2');
    const refJob = await ref.engine.submitJob(tinySpec({ rounds: 1 }), 'job-x');
    await ref.engine.tick();
    await submit(ref.engine, refJob, 's1', 1, 10);
    await submit(ref.engine, refJob, 's2', 1, 20);
    await ref.engine.tick();
    const refSha = ref.store.adapterVersion(refJob, 1)!.sha256;

    // Interrupted run: s1 submits, the coordinator restarts, s2 submits, then the
    // coordinator "crashes" during aggregation (round left in 'aggregating'), and restarts.
    let h = mk();
    online(h, 's1', 's2');
    const job = await h.engine.submitJob(tinySpec({ rounds: 1 }), 'job-x');
    await h.engine.tick();
    await submit(h.engine, job, 's1', 1, 10);
    h = h.reopen();
    expect(h.store.roundUpdates(job, 1, 1, 'accepted').map((u) => u.site_id)).toEqual(['s1']);
    await submit(h.engine, job, 's2', 1, 20);
    await h.engine.tick();
    await h.engine.stop();
    // Roll the database back to "crashed after entering aggregating, before the publication
    // was committed" (the aggregation start time stays as persisted), then restart.
    h.store.db.prepare(`UPDATE rounds SET state = 'aggregating', published_ms = NULL, strategy_state = NULL WHERE job_id = ?`).run(job);
    h.store.db.prepare(`DELETE FROM adapter_versions WHERE job_id = ? AND version = 1`).run(job);
    h.store.db.prepare(`UPDATE jobs SET status = 'running', current_version = 0 WHERE id = ?`).run(job);
    h = h.reopen();
    await h.engine.tick();
    const row = h.store.adapterVersion(job, 1)!;
    expect(row.sha256).toBe(refSha);
    expect(h.store.job(job)!.status).toBe('completed');
    const file = join(row.path, 'adapter_model.safetensors');
    const { tensors } = decodeSafetensorsF32(readFileSync(file));
    expect(flatten(tensors, h.engine.jobInfo(job).layout.full)).toEqual(ref.engine.loadVersion(refJob, 1));
    h.close();
    ref.close();
  });

  it('freeze_a: sites send only B; A stays the version-0 A', async () => {
    const h = mk();
    online(h, 's1', 's2');
    const job = await h.engine.submitJob(tinySpec({ rounds: 1, lora: { r: 2, alpha: 4, target_modules: ['q_proj'], freeze_a: true, init_seed: 3 } }));
    await h.engine.tick();
    const { layout } = h.engine.jobInfo(job);
    expect(layout.update.entries.every((e) => e.name.includes('lora_B'))).toBe(true);
    await submit(h.engine, job, 's1', 1, 1);
    await submit(h.engine, job, 's2', 1, 1);
    await h.engine.tick();
    const v0 = h.engine.loadVersion(job, 0), v1 = h.engine.loadVersion(job, 1);
    for (const e of layout.full.entries) {
      const same = v0.subarray(e.offset, e.offset + e.length).every((x, i) => x === v1[e.offset + i]);
      expect(same, e.name).toBe(e.name.includes('lora_A'));
    }
  });

  it('DP job (DP strategy + accountant): epsilon per round in the ledger; stops when the budget would be exceeded', async () => {
    const { createPrivacyLedger } = await import('../../coordinator/privacy/ledger.ts');
    const dp = { clip_norm: 1, noise_multiplier: 1.2, delta: 1e-5, sample_rate: 1, epsilon_budget: 1, adaptive_clipping: false };
    const ledger = createPrivacyLedger(dp);
    dp.epsilon_budget = (ledger.epsilonAfter(2).epsilon + ledger.epsilonAfter(3).epsilon) / 2; // exactly 2 rounds fit
    const h = mk();
    online(h, 's1', 's2');
    const job = await h.engine.submitJob(tinySpec({ rounds: 5, privacy: { dp } }));
    for (let round = 1; round <= 2; round++) {
      await h.engine.tick();
      await submit(h.engine, job, 's1', round, 5);
      await submit(h.engine, job, 's2', round, 5);
      await h.engine.tick();
    }
    const j = h.store.job(job)!;
    expect(j).toMatchObject({ status: 'completed', current_version: 2 });
    expect(j.error).toMatch(/FEDLORA_ERR_PRIVACY_BUDGET: round 3 would raise epsilon/);
    const rows = h.store.privacyLedger(job);
    expect(rows.map((r) => r.round)).toEqual([1, 2]);
    expect(rows[1].epsilon).toBeCloseTo(createPrivacyLedger(dp).epsilonAfter(2).epsilon, 10);
    expect(rows[1].epsilon).toBeGreaterThan(rows[0].epsilon);
    // clipped + noised: version 1 is not the plain FedAvg of the two deltas
    const { layout } = h.engine.jobInfo(job);
    const v0 = h.engine.loadVersion(job, 0), v1 = h.engine.loadVersion(job, 1);
    const d1 = fakeDelta(layout.update, 's1', 1), d2 = fakeDelta(layout.update, 's2', 1);
    let maxDiff = 0;
    for (let i = 0; i < v0.length; i++) maxDiff = Math.max(maxDiff, Math.abs(v1[i] - v0[i] - (d1[i] + d2[i]) / 2));
    expect(maxDiff).toBeGreaterThan(1e-3);
    const task = h.engine.taskMessage(h.store.roundTasks(job, 2, 1)[0]);
    expect(task.privacy).toMatchObject({ dpEnabled: true, clipNorm: 1, noiseMultiplier: 1.2 });
  });

  it('the strategy configures the round: FedProx mu reaches the task (and survives a restart)', async () => {
    let h = mk();
    online(h, 's1', 's2');
    const job = await h.engine.submitJob(tinySpec({ rounds: 1, aggregation: { name: 'fedprox', mu: 0.25 } }));
    await h.engine.tick();
    const t = h.store.openTasksFor('s1')[0];
    const msg = h.engine.taskMessage(t);
    expect(msg).toMatchObject({ aggregation: 'fedprox', payloadKind: 'delta', strategyConfig: { prox_mu: '0.25' }, train: { proxMu: 0.25 } });
    h = h.reopen();
    expect(h.engine.taskMessage(t)).toEqual(msg);
    h.close();
  });
});
