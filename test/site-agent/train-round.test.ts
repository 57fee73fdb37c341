// The agent's training round as a pipeline of named steps (site-agent/agent/train-round.ts), run
// on one in-process site with real parts (tiny model, SQLite site store with de-identified
// synthetic records, the engine's evaluation, the outbox) and a scripted coordinator. The trainer
// is a stand-in that moves every lora_B value by a known amount, so the update that leaves the
// site is known exactly.
import { afterEach, describe, expect, it } from 'vitest';
import { createPublicKey } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { TRAIN_ROUND, runTrainRound, type RoundStep } from '../../site-agent/agent/train-round.ts';
import type { LocalTrainRequest, Trainer } from '../../site-agent/agent/trainers.ts';
import type { EvaluatedGlobal, VerifiedGlobal } from '../../site-agent/agent/global-adapter.ts';
import { decodeSafetensorsF32 } from '../../shared/safetensors.ts';
import { verifyUpdateSignature } from '../../shared/update-signature.ts';
import { AuditLog } from '../../shared/audit.ts';
import { shiftingTrainer, siteFixture, type SiteFixture } from './site-fixture.ts';

const fixtures: SiteFixture[] = [];
afterEach(() => fixtures.splice(0).forEach((f) => f.cleanup()));
async function site(patch: Record<string, unknown> = {}) {
  const f = await siteFixture(patch);
  fixtures.push(f);
  return f;
}


/** The training file's lines as the example count, two loss values. */
const byLines = (req: LocalTrainRequest) => ({ numExamples: readFileSync(req.trainFile, 'utf8').trim().split('\n').length, lossPerStep: [2.5, 2.25], tokensPerSecond: 1234 });

/** TRAIN_ROUND with each step's name and the agent state while it runs recorded. */
function traced(steps: readonly RoundStep[], seen: [string, string][]): RoundStep[] {
  return steps.map((s) => ({ ...s, run: (d, r) => (seen.push([s.name, d.status.state]), s.run(d, r)) }));
}

describe('the training round pipeline', () => {
  it('runs its named steps in order: verified global adapter, evaluation, training, signed update, reports', async () => {
    const f = await site();
    const { trainer, requests } = shiftingTrainer(0.125, byLines);
    const verified: VerifiedGlobal[] = [];
    const evaluated: EvaluatedGlobal[] = [];
    const deps = f.deps({ trainer, onGlobalVerified: [(g) => void verified.push(g)], onGlobalEvaluated: async (g) => void evaluated.push(g) });
    const task = f.task();
    const seen: [string, string][] = [];
    await runTrainRound(deps, task, traced(TRAIN_ROUND, seen));

    expect(seen.map(([n]) => n)).toEqual(TRAIN_ROUND.map((s) => s.name));
    expect(Object.fromEntries(seen)).toMatchObject({ 'fetch-global-adapter': 'training', 'evaluate-global': 'evaluating', train: 'training', deliver: 'uploading' });
    // The hook saw the verified adapter once, stored where later tasks read it.
    expect(verified).toHaveLength(1);
    expect(verified[0]).toMatchObject({ jobId: task.jobId, version: 0, baseModelId: 'fedlora/tiny-llama' });
    expect(readdirSync(verified[0].dir).sort()).toEqual(['.verified', 'adapter_config.json', 'adapter_model.safetensors']);
    // The "evaluated" hook got the metrics that were reported, for the same stored adapter.
    expect(evaluated.map((g) => [g.version, g.dir])).toEqual([[0, verified[0].dir]]);
    // Training started from the global adapter, on the site's training file.
    expect(requests).toHaveLength(1);
    expect([...requests[0].initAdapter!.keys()]).toEqual([...f.coordinator.global.keys()]);
    expect(requests[0].train.seed).toBe(11); // the task carries this round's seed
    // The upload is local - global: exactly +0.125 on every B value, 0 on A; signed by the site key.
    expect(f.coordinator.uploads).toHaveLength(1);
    const up = f.coordinator.uploads[0];
    const { tensors } = decodeSafetensorsF32(up.bytes);
    expect([...tensors.keys()].sort()).toEqual([...f.coordinator.global.keys()].sort());
    for (const [k, t] of tensors) for (const v of t.data) expect(v).toBeCloseTo(k.includes('.lora_B.') ? 0.125 : 0, 6);
    const pub = createPublicKey(readFileSync(join(f.dir, 'site.key'), 'utf8')).export({ type: 'spki', format: 'pem' });
    expect(verifyUpdateSignature(pub, up.header, up.header.signature)).toBe(true);
    expect(up.header).toMatchObject({ jobId: task.jobId, round: 1, baseVersion: 0, payloadKind: 'delta', numExamples: 8 });
    // Metrics: the global adapter's evaluation belongs to its version (round 0), then training.
    const evalReport = f.coordinator.metrics.find((m) => m.phase === 'eval')!;
    expect(evalReport.round).toBe(0);
    expect(evalReport.metrics.map((m) => m.name)).toEqual(expect.arrayContaining(['loss', 'perplexity', 'accuracy', 'macro_f1', 'exact_match', 'heldout_items']));
    // The gate gets the whole-set figures; every estimate travels with its interval and replicates.
    expect(evalReport.metrics.filter((m) => !m.subset).map((m) => [m.name, m.value])).toEqual(evaluated[0].metrics.filter((m) => Number.isFinite(m.value)).map((m) => [m.name, m.value]));
    const acc = evalReport.metrics.find((m) => m.name === 'accuracy' && !m.subset)!;
    expect(acc.ci).toMatchObject({ resamples: 1000 });
    expect(acc.ci!.low).toBeLessThanOrEqual(acc.value);
    expect(acc.ci!.high).toBeGreaterThanOrEqual(acc.value);
    expect(acc.bootstrap).toHaveLength(1000);
    expect(evalReport.metrics.find((m) => m.name === 'heldout_items')!.ci).toBeNull();
    const trainReport = f.coordinator.metrics.find((m) => m.phase === 'train')!;
    expect(trainReport.metrics.map((m) => [m.name, m.value])).toEqual([['train_loss', 2.25], ['train_tokens_per_s', 1234]]);
    // Egress audited; outbox entry acknowledged; scratch folder gone.
    const audit = new AuditLog(f.db, 'site_audit');
    expect(audit.list({ action: 'egress' }).map((e) => e.details.what)).toEqual(['aggregate metrics', 'adapter update', 'aggregate metrics']);
    expect(deps.outbox.forTask(task.taskId)?.state).toBe('acknowledged');
    expect(existsSync(join(f.dir, 'work', task.taskId))).toBe(false);

    // A second task on the same version: no second download, the hook does not run again.
    await runTrainRound(deps, f.task({ round: 2 }));
    expect(f.coordinator.fetches).toHaveLength(1);
    expect(verified).toHaveLength(1);
    expect(evaluated).toHaveLength(2); // evaluated again: each round reports its starting point
    expect(f.coordinator.uploads).toHaveLength(2);
  });

  it('takes a new step where it is put (here: a replay step that changes the training file)', async () => {
    const f = await site();
    const { trainer, requests } = shiftingTrainer(0.5, byLines);
    const replay: RoundStep = {
      name: 'replay-earlier-records',
      run: (_d, round) => {
        const file = join(round.workDir, 'with-replay.jsonl');
        writeFileSync(file, readFileSync(round.trainFile!, 'utf8').repeat(2));
        round.trainFile = file;
      },
    };
    const at = TRAIN_ROUND.findIndex((s) => s.name === 'prepare-training-data') + 1;
    await runTrainRound(f.deps({ trainer }), f.task(), [...TRAIN_ROUND.slice(0, at), replay, ...TRAIN_ROUND.slice(at)]);
    expect(requests[0].trainFile.endsWith('with-replay.jsonl')).toBe(true);
    expect(f.coordinator.uploads[0].header.numExamples).toBe(16);
  });

  it('a failing step is named in the log and the scratch folder is kept; a failing hook does not fail the round', async () => {
    const f = await site();
    const failing: Trainer = { kind: 'broken', train: async () => { throw new Error('CUDA out of memory'); } };
    const hook = async function safetySuite() { throw new Error('suite crashed'); };
    const task = f.task();
    await expect(runTrainRound(f.deps({ trainer: failing, onGlobalVerified: [hook] }), task)).rejects.toThrow(/CUDA out of memory/);
    expect(f.log.lines.find((l) => l.msg === 'round step failed')?.obj).toMatchObject({ step: 'train', task: task.taskId, err: 'CUDA out of memory' });
    expect(f.log.lines.find((l) => l.msg.includes('hook on a newly verified global adapter failed'))?.obj).toMatchObject({ hook: 'safetySuite', err: 'suite crashed' });
    expect(existsSync(join(f.dir, 'work', task.taskId))).toBe(true);
    expect(f.coordinator.uploads).toEqual([]);
    // The adapter was still verified and stored: the hook's failure did not undo that.
    expect(existsSync(join(f.dir, 'adapters', task.jobId, 'v0', '.verified'))).toBe(true);
  });

  it('the site policy comes first: a refused task is declined before anything is fetched or computed', async () => {
    const f = await site();
    const { trainer, requests } = shiftingTrainer(1, byLines);
    const task = f.task({ selectedSites: 1, privacy: { ...f.task().privacy, secureAggregation: false } });
    const deps = f.deps({ trainer });
    deps.config.policy.require_secure_aggregation = true;
    await runTrainRound(deps, task);
    expect(f.coordinator.declined).toEqual([{ taskId: task.taskId, code: 'FEDLORA_ERR_POLICY', reason: expect.stringMatching(/require_secure_aggregation/) }]);
    expect(f.coordinator.fetches).toEqual([]);
    expect(requests).toEqual([]);
    expect(new AuditLog(f.db, 'site_audit').list({ action: 'task_declined' })).toHaveLength(1);
  });
});
