// Drives one round of a job on the in-process round engine: every named site submits a fake
// update (deterministic per site and round) for its open task, then the engine aggregates.
import { submitUpdateBytes } from '../../coordinator/rounds/intake.ts';
import type { RoundEngine } from '../../coordinator/rounds/index.ts';
import { fail } from '../../shared/errors.ts';
import { encodeDelta, fakeDelta } from '../coordinator/helpers.ts';

export async function runRound(engine: RoundEngine, jobId: string, round: number, sites: string[]): Promise<void> {
  await engine.tick();
  const { layout } = engine.jobInfo(jobId);
  for (const site of sites) {
    const task = engine.store.openTasksFor(site).find((t) => t.job_id === jobId && t.round === round);
    if (!task) throw fail('FEDLORA_ERR_INTERNAL', `site ${site} has no open task in round ${round} of ${jobId}`);
    const r = engine.store.rounds(jobId).find((x) => x.round === round && x.attempt === task.attempt)!;
    await submitUpdateBytes(engine, site, { updateId: `${site}-${jobId}-r${round}`, taskId: task.task_id, jobId, round, baseVersion: r.base_version, numExamples: 10 }, encodeDelta(layout.update, fakeDelta(layout.update, site, round)), { chunkSize: 4096 });
  }
  await engine.tick();
}
