// Personalised site adapters (site-agent/agent/personal.ts) on one in-process site with real parts
// (tiny model, SQLite site store, the engine's evaluation, the outbox) and a scripted coordinator:
// training.personal_steps local steps on the global version, evaluated beside it as kind
// "personal" for that version, kept at the site and never sent (the upload is the round's own
// training). The trainer is a stand-in that moves every lora_B value by a known amount, so what
// leaves the site is known exactly.
import { afterEach, describe, expect, it } from 'vitest';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { TRAIN_ROUND, runTrainRound } from '../../site-agent/agent/train-round.ts';
import { runEvaluateTask } from '../../site-agent/agent/evaluate-task.ts';
import { decodeSafetensorsF32 } from '../../shared/safetensors.ts';
import { readPeftAdapter } from '../../shared/lora/peft.ts';
import { storeSiteMetrics } from '../../coordinator/metrics/site-reports.ts';
import { harness, online, rmDir, tinySpec } from '../coordinator/helpers.ts';
import { shiftingTrainer, siteFixture, JOB, type SiteFixture } from '../site-agent/site-fixture.ts';

const fixtures: SiteFixture[] = [];
afterEach(() => fixtures.splice(0).forEach((f) => f.cleanup()));


describe('personalised site adapters', () => {
  it('trains personal_steps on the global version, evaluates it as kind personal for that version, keeps it here, sends only the round update', async () => {
    const f = await siteFixture({ training: { local_baseline: true, personal_steps: 3, max_seq_len: 1024, max_train_examples: 8 } });
    fixtures.push(f);
    const { trainer, requests } = shiftingTrainer((req) => (req.workDir.endsWith('personal') ? 1 : 0.125));
    const task = f.task({ round: 4, globalAdapter: { jobId: JOB, version: 3, sha256: '', sizeBytes: 0, manifestSha256: f.task().baseModel.manifestSha256 } });
    await runTrainRound(f.deps({ trainer }), task, TRAIN_ROUND);

    // Three trainings: the round's (from global), the personalised one (from global, its own steps), the local baseline.
    expect(requests.map((r) => [r.workDir.split('/').at(-1), r.train.steps])).toEqual([['global', 2], ['personal', 3], ['local', 2]]);
    for (const k of f.coordinator.global.keys()) expect([...requests[1].initAdapter!.get(k)!.data]).toEqual([...f.coordinator.global.get(k)!.data]);
    // What left the site is the round's training only: +0.125 on B, never the personalised +1.
    expect(f.coordinator.uploads).toHaveLength(1);
    for (const [k, t] of decodeSafetensorsF32(f.coordinator.uploads[0].bytes).tensors) for (const v of t.data) expect(v).toBeCloseTo(k.includes('.lora_B.') ? 0.125 : 0, 6);
    // Its figures are reported for the global version it personalised, beside the global ones.
    const evals = f.coordinator.metrics.filter((m) => m.phase === 'eval');
    const kinds = evals.map((m) => [m.metrics[0].kind, m.round]);
    expect(kinds).toEqual([['global', 3], ['personal', 3], ['local', 4]]);
    const loss = (kind: string) => evals.find((m) => m.metrics[0].kind === kind)!.metrics.find((x) => x.name === 'loss' && !x.subset)!.value;
    expect(loss('personal')).not.toBe(loss('global'));
    // Kept at the site (PEFT folder), and the audit log records no egress of it.
    const kept = readPeftAdapter(join(f.dir, 'personal', JOB, 'v3')).weights;
    for (const [k, t] of kept) for (const [i, v] of t.data.entries()) expect(v).toBeCloseTo(f.coordinator.global.get(k)!.data[i] + (k.includes('.lora_B.') ? 1 : 0), 6);
    const egress = f.db.prepare(`SELECT details FROM site_audit WHERE action = 'egress'`).pluck().all() as string[];
    // Egress: the update once, and metric reports (aggregate figures); no adapter weights besides the update.
    const what = egress.map((d) => JSON.parse(d) as { what: string; sha256?: string });
    const weights = what.filter((w) => !/metric/i.test(w.what));
    expect(weights.map((w) => w.sha256)).toEqual([f.coordinator.uploads[0].header.sha256]);

    // The coordinator stores the kind (a report with it is accepted) for the version.
    const h = harness();
    try {
      online(h, 'hospital-fixture');
      await h.engine.submitJob(tinySpec({ rounds: 5, min_sites: 1 }), JOB);
      const m = evals.find((x) => x.metrics[0].kind === 'personal')!;
      expect(storeSiteMetrics(h.store, h.clock.t, 'hospital-fixture', { taskId: task.taskId, jobId: JOB, round: m.round, phase: 'eval', metrics: m.metrics })).toBe(m.metrics.length);
      expect(h.store.metrics(JOB, { kind: 'personal', metric: 'loss', subset: '' }).map((r) => [r.round, r.value])).toEqual([[3, loss('personal')]]);
    } finally {
      h.close();
      rmDir(h.dir);
    }
  }, 2 * TEST_TIMEOUT_MS);

  it('the final EVALUATE task also evaluates the personalised adapter of the last version; personal_steps 0 makes none', async () => {
    const f = await siteFixture({ training: { local_baseline: false, personal_steps: 2, max_seq_len: 1024, max_train_examples: 8 } });
    fixtures.push(f);
    const { trainer, requests } = shiftingTrainer((req) => (req.workDir.endsWith('personal') ? 1 : 0.125));
    await runEvaluateTask(f.deps({ trainer }), f.task({ kind: 'TASK_KIND_EVALUATE', round: 5, globalAdapter: { jobId: JOB, version: 5, sha256: '', sizeBytes: 0, manifestSha256: f.task().baseModel.manifestSha256 } }));
    expect(requests.map((r) => r.train.steps)).toEqual([2]);
    expect(f.coordinator.metrics.filter((m) => m.phase === 'eval').map((m) => [m.metrics[0].kind, m.round])).toEqual([['global', 5], ['personal', 5]]);
    expect(existsSync(join(f.dir, 'personal', JOB, 'v5', 'adapter_model.safetensors'))).toBe(true);
    expect(f.coordinator.uploads).toHaveLength(0);

    const g = await siteFixture();
    fixtures.push(g);
    const off = shiftingTrainer((req) => (req.workDir.endsWith('personal') ? 1 : 0.125));
    await runTrainRound(g.deps({ trainer: off.trainer }), g.task(), TRAIN_ROUND);
    expect(off.requests.map((r) => r.workDir.split('/').at(-1))).toEqual(['global']);
    expect(g.coordinator.metrics.some((m) => m.metrics.some((x) => x.kind === 'personal'))).toBe(false);
  }, 2 * TEST_TIMEOUT_MS);
});
