// What leaves the site of the doctors' review: the site agent's report after a global evaluation
// carries only aggregate figures (counts, proportions, mean score, kappa) per reviewed version —
// no case, prompt, answer, comment, doctor or record — withheld below evaluation.min_items, sent
// again only when they change, recorded as an egress in the site's audit log; the coordinator
// stores them under eval_set 'review'.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type Database from 'better-sqlite3-multiple-ciphers';
import { AuditLog } from '../../shared/audit.ts';
import type { MetricsReport } from '../../shared/proto.ts';
import { openSiteDb } from '../../site-agent/site-db.ts';
import { evaluateAndReport, reportReview } from '../../site-agent/agent/evaluate-task.ts';
import type { TaskDeps } from '../../site-agent/agent/task-context.ts';
import type { LoraConfig } from '../../shared/lora/types.ts';
import type { WireTask } from '../../site-agent/agent/wire.ts';
import { reviewEgress } from '../../site-agent/serve/review/egress.ts';
import { addRating } from '../../site-agent/serve/review/ratings.ts';
import { harness, online, tinySpec, type Harness } from '../coordinator/helpers.ts';
import { rmDir, tempDir, writeSiteYaml } from './helpers.ts';

const dir = tempDir('review-egress');
const SECRET_PROMPT = 'Chief complaint: chest pain radiating to the left arm, patient ZXQ-4417';
const SECRET_ANSWER = 'Most likely acute myocardial infarction; aspirin 300 mg';
const COMMENT = 'dose fine but misses troponin follow-up';
let db: Database.Database;
let h: Harness;

function addCase(recordId: string, version: number, needed: 1 | 2): number {
  db.prepare("INSERT OR IGNORE INTO data_records (id, patient_key, lang, json, source) VALUES (?, ?, 'en', '{}', 'test')").run(recordId, `patient-${recordId}`);
  return Number(db.prepare("INSERT INTO review_cases (record_id, adapter_label, job_id, version, lang, prompt, answer, needed) VALUES (?, ?, 'job-e', ?, 'en', ?, ?, ?)")
    .run(recordId, `job-e/v${version}`, version, `${SECRET_PROMPT} ${recordId}`, SECRET_ANSWER, needed).lastInsertRowid);
}

beforeAll(async () => {
  const siteDir = join(dir, 'site');
  mkdirSync(siteDir, { recursive: true });
  writeSiteYaml(siteDir, join(dir, 'no-model'), {});
  db = openSiteDb(siteDir);
  // Version 1: six cases, two of them rated by two doctors; version 2: two rated cases (below the minimum of 5).
  for (let i = 0; i < 6; i++) {
    const id = addCase(`rec-secret-${i}`, 1, i < 2 ? 2 : 1);
    addRating(db, { caseId: id, user: 'dr.secretname', correctness: i % 3 === 0 ? 'wrong' : 'correct', safety: i === 0 ? 'unsafe' : 'safe', score: 2 + (i % 4), comment: COMMENT }, null);
    if (i < 2) addRating(db, { caseId: id, user: 'dr.other', correctness: 'correct', safety: 'safe', score: 4 }, null);
  }
  for (let i = 0; i < 2; i++) addRating(db, { caseId: addCase(`rec-v2-${i}`, 2, 1), user: 'dr.secretname', correctness: 'correct', safety: 'safe', score: 5 }, null);
  h = harness({ dir: join(dir, 'coordinator') });
  online(h, 'site-a');
  await h.engine.submitJob(tinySpec({ rounds: 2 }), 'job-e');
});
afterAll(() => {
  db.close();
  h.close();
  rmDir(dir);
});

describe("doctors' review: what leaves the site", () => {
  it('aggregates only, per version, withheld below the minimum, resent only on change; stored by the coordinator', async () => {
    const sent: MetricsReport[] = [];
    const audit = new AuditLog(db, 'site_audit');
    const deps = { siteId: 'site-a', reviewEgress: reviewEgress(db, 5), audit, wire: { reportMetrics: async (r: MetricsReport) => void sent.push(structuredClone(r)) } };
    const task = { taskId: 'job-e.r2.a1.site-a', jobId: 'job-e', round: 2 };
    await reportReview(deps, task);
    expect(sent).toHaveLength(1);
    const wire = JSON.stringify(sent);
    for (const secret of [SECRET_PROMPT, SECRET_ANSWER, COMMENT, 'rec-secret', 'patient-', 'dr.secretname', 'dr.other', 'ZXQ-4417', 'aspirin']) expect(wire).not.toContain(secret);
    const m = sent[0].metrics;
    expect(sent[0].phase).toBe('review');
    expect(new Set(m.map((x) => x.adapterVersion))).toEqual(new Set([1])); // version 2 has 2 rated cases: withheld
    expect(m.every((x) => x.evalSet === 'review' && x.kind === 'global' && x.subset === '' && (x.bootstrap ?? []).length === 0)).toBe(true);
    const by = Object.fromEntries(m.map((x) => [x.name, x]));
    expect(Object.keys(by).sort()).toEqual(['review_correct', 'review_partly', 'review_score_mean', 'review_unsafe', 'review_wrong']); // 2 double-rated < 5: no kappa
    expect(by.review_wrong).toMatchObject({ value: 2 / 6, count: 6 });
    expect(by.review_unsafe).toMatchObject({ value: 1 / 6, count: 6 });
    expect(by.review_score_mean.value).toBeCloseTo((2 + 3 + 4 + 5 + 2 + 3) / 6, 12);
    // Every field of every figure is one the wire message defines: nothing else rides along.
    for (const x of m) expect(Object.keys(x).sort()).toEqual(['adapterVersion', 'bootstrap', 'ci', 'count', 'evalSet', 'kind', 'modelOwner', 'name', 'subset', 'value']);

    // The egress is in the audit log, naming the figures only.
    const egress = db.prepare("SELECT details FROM site_audit WHERE action = 'egress'").pluck().all() as string[];
    expect(egress).toHaveLength(1);
    expect(JSON.parse(egress[0]).metrics).toContain('global.review_unsafe@review');

    // Unchanged: nothing sent again (one more rating changes the figures: the next test).
    await reportReview(deps, task);
    expect(sent).toHaveLength(1);
  });

  it('the coordinator stores the figures under eval_set review', async () => {
    const sent: MetricsReport[] = [];
    const deps = { siteId: 'site-a', reviewEgress: reviewEgress(db, 5), audit: new AuditLog(db, 'site_audit'), wire: { reportMetrics: async (r: MetricsReport) => void sent.push(r) } };
    addRating(db, { caseId: addCase('rec-secret-6', 1, 1), user: 'dr.other', correctness: 'partly', safety: 'safe', score: 3 }, null);
    await reportReview(deps, { taskId: 'job-e.r2.a1.site-a', jobId: 'job-e', round: 2 });
    expect(sent).toHaveLength(1);
    expect(sent[0].metrics.find((x) => x.name === 'review_partly')).toMatchObject({ value: 1 / 7, count: 7 });
    expect(h.engine.reportMetrics('site-a', sent[0])).toBe(sent[0].metrics.length);
    const rows = h.store.metrics('job-e', { evalSet: 'review' });
    expect(rows.map((r) => [r.metric, r.adapter_version, r.count])).toContainEqual(['review_partly', 1, 7]);
    expect(rows.find((r) => r.metric === 'review_unsafe')!.ci_low).toBeGreaterThanOrEqual(0);
  });

  it("the agent's evaluation of a global adapter sends them; a local-only evaluation does not", async () => {
    const sent: MetricsReport[] = [];
    addRating(db, { caseId: addCase('rec-secret-7', 1, 1), user: 'dr.other', correctness: 'correct', safety: 'safe', score: 5 }, null);
    // The evaluator's figures are beside the point here: an evaluation that yields none.
    const deps = {
      siteId: 'site-a', reviewEgress: reviewEgress(db, 5), audit: new AuditLog(db, 'site_audit'), wire: { reportMetrics: async (r: MetricsReport) => void sent.push(r) },
      status: { state: 'idle' }, config: { evaluation: { min_items: 5, bootstrap: { resamples: 100, seed: 1 } } }, workspace: { evaluateWithOutcomes: async () => ({ metrics: [], outcomes: null }), evaluateShared: async () => [], saveLocalOutcomes: () => undefined, localOutcomes: () => [], globalDir: () => join(dir, 'global') },
    } as unknown as TaskDeps;
    const task = { taskId: 'job-e.r2.a1.site-a', jobId: 'job-e', round: 2, globalAdapter: { jobId: 'job-e', version: 1, sha256: 'a'.repeat(64) } } as unknown as WireTask;
    const lora: LoraConfig = { r: 2, alpha: 4, targets: ['q_proj'], dropout: 0, useRslora: false, freezeA: false, initSeed: 1 };
    await evaluateAndReport(deps, task, 'local', null, lora, 2);
    expect(sent).toEqual([]);
    await evaluateAndReport(deps, task, 'global', null, lora, 1);
    expect(sent.map((r) => r.phase)).toEqual(['review']);
    expect(sent[0].metrics.find((x) => x.name === 'review_correct')).toMatchObject({ count: 8, adapterVersion: 1 });
  });
});
