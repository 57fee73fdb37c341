// The site's paired comparison over a real round (tiny model, SQLite site store, the engine's
// evaluation, a scripted coordinator): the local-only adapter of round 1 is evaluated in round 1's
// task and its per-item outcomes kept at the site; the evaluation of global version 1 then reports
// accuracy_minus_local — global − local-only on the same items, with its paired interval — and
// nothing per item leaves the site. A version with no local-only adapter of its round gets none.
import { afterEach, describe, expect, it } from 'vitest';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';
import { TRAIN_ROUND, runTrainRound } from '../../site-agent/agent/train-round.ts';
import { runEvaluateTask } from '../../site-agent/agent/evaluate-task.ts';
import { ACCURACY_MINUS_LOCAL } from '../../site-agent/agent/paired-comparison.ts';
import { shiftingTrainer, siteFixture, JOB, type SiteFixture } from './site-fixture.ts';

const fixtures: SiteFixture[] = [];
afterEach(() => fixtures.splice(0).forEach((f) => f.cleanup()));

/** Moves every lora_B value by 0.5: the local-only adapter then answers differently from the global one. */
const shifting = shiftingTrainer(0.5).trainer;

describe('paired difference of the global and the local-only adapter at the site', () => {
  it('reports global − local-only of the same items with its interval for the version of the local-only adapter\'s round', async () => {
    const f = await siteFixture({ training: { local_baseline: true, personal_steps: 0, max_seq_len: 1024, max_train_examples: 8 }, evaluation: { min_items: 2, max_items: 8, generate_items: 0 } });
    fixtures.push(f);
    const deps = f.deps({ trainer: shifting });
    await runTrainRound(deps, f.task({ round: 1 }), TRAIN_ROUND);
    const version = (v: number) => ({ jobId: JOB, version: v, sha256: '', sizeBytes: 0, manifestSha256: f.task().baseModel.manifestSha256 });
    await runEvaluateTask(deps, f.task({ kind: 'TASK_KIND_EVALUATE', round: 1, globalAdapter: version(1) }));

    const evals = f.coordinator.metrics.filter((m) => m.phase === 'eval');
    const fig = (kind: string, round: number, name: string) => evals.filter((m) => m.round === round).flatMap((m) => m.metrics).find((x) => x.kind === kind && x.name === name && !x.subset && !x.evalSet);
    // version 0 (evaluated before round 1 trained) has no local-only adapter of its round
    expect(fig('global', 0, 'accuracy')).toBeDefined();
    expect(fig('global', 0, ACCURACY_MINUS_LOCAL)).toBeUndefined();
    const g = fig('global', 1, 'accuracy')!, l = fig('local', 1, 'accuracy')!, d = fig('global', 1, ACCURACY_MINUS_LOCAL)!;
    expect(d.count).toBe(g.count);
    expect(l.count).toBe(g.count);
    expect(d.value).toBeCloseTo(g.value - l.value, 12);
    expect(d.ci!.low).toBeLessThanOrEqual(d.value);
    expect(d.ci!.high).toBeGreaterThanOrEqual(d.value);
    expect(d.bootstrap?.length).toBe(d.ci!.resamples);
    // only aggregates leave: every figure has exactly the wire fields of a figure (no per-item outcomes)
    for (const m of evals.flatMap((x) => x.metrics)) expect(Object.keys(m).sort()).toEqual(['adapterVersion', 'bootstrap', 'ci', 'count', 'evalSet', 'kind', 'modelOwner', 'name', 'subset', 'value']);
  }, 2 * TEST_TIMEOUT_MS);
});
