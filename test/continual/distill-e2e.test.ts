// Distillation as a job mode over the real federation (the demo: a coordinator and three hospital
// agents as separate processes, mutual-TLS gRPC, tiny models trained by the engine): the job names
// a teacher (train.distill), each hospital resolves it in its own teachers folder and trains the
// student on CE + KL to the teacher's stored top-k; the students' updates are aggregated as usual.
// hospital-3 has no such teacher and declines with the reason.
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { runDemo, DEMO_DEFAULTS, DEMO_TEACHER, type DemoResult } from '../../cli/demo/run-demo.ts';
import { openCoordinatorDb } from '../../coordinator/store/migrations.ts';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';

let demo: DemoResult;
const out = join(mkdtempSync(join(tmpdir(), 'fedlora-distill-e2e-')), 'o');

beforeAll(async () => {
  demo = await runDemo({
    ...DEMO_DEFAULTS, sites: 3, rounds: 1, records: 40, localSteps: 2, crossEval: false, assistant: false, localBaseline: false,
    smallSite: null, sharedPerDiagnosis: 0, continuation: null, personalSteps: 0,
    distill: { topK: 8, temperature: 2, alpha: 0.5, missingAt: ['hospital-3'] }, out, log: () => {},
  });
}, 10 * TEST_TIMEOUT_MS);
afterAll(async () => {
  await demo?.stop();
});

const coordDb = () => openCoordinatorDb(join(out, 'coordinator', 'coordinator.sqlite'), { readonly: true });

describe('distillation job over the real federation', () => {
  it('the round publishes an adapter aggregated from the two hospitals that have the teacher', () => {
    expect(demo.report.rounds.map((x) => [x.round, x.adapter?.contributing_sites])).toEqual([[1, 2]]);
    const db = coordDb();
    try {
      const ups = db.prepare(`SELECT site_id FROM updates WHERE job_id = ? AND status = 'accepted' ORDER BY site_id`).pluck().all(demo.jobId);
      expect(ups).toEqual(['hospital-1', 'hospital-2']);
    } finally {
      db.close();
    }
  });

  it('each of them trained on the distillation head and reported its KL to the teacher', () => {
    const db = coordDb();
    try {
      const kl = db.prepare(`SELECT site_id, value FROM metrics WHERE job_id = ? AND metric = 'train_kl' ORDER BY site_id`).all(demo.jobId) as { site_id: string; value: number }[];
      expect(kl.map((m) => m.site_id)).toEqual(['hospital-1', 'hospital-2']);
      for (const m of kl) expect(m.value).toBeGreaterThan(0);
    } finally {
      db.close();
    }
    for (const site of ['hospital-1', 'hospital-2']) {
      const log = readFileSync(join(out, 'logs', `${site}.log`), 'utf8');
      expect(log, site).toContain('distilled from the teacher');
    }
  });

  it('hospital-3, without the teacher, declined with the reason naming it and where it looked', () => {
    const db = coordDb();
    try {
      const declined = db.prepare(`SELECT round, decline_code, decline_reason FROM tasks WHERE job_id = ? AND site_id = 'hospital-3' AND kind = 'TASK_KIND_TRAIN'`).all(demo.jobId) as { round: number; decline_code: string; decline_reason: string }[];
      expect(declined.map((t) => [t.round, t.decline_code])).toEqual([[1, 'FEDLORA_ERR_NOT_FOUND']]);
      expect(declined[0].decline_reason).toBe(`the job distils from teacher "${DEMO_TEACHER}", which this site does not have: no model folder at ${join(out, 'no-teachers', DEMO_TEACHER)} (site config model.teachers_dir)`);
      expect(db.prepare(`SELECT count(*) FROM updates WHERE job_id = ? AND site_id = 'hospital-3'`).pluck().get(demo.jobId)).toBe(0);
    } finally {
      db.close();
    }
  });
});
