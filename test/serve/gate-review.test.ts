// The release gate's doctors' review floor (serve.gate.review) on a real site database: a
// candidate that passes every other check stays unapproved while fewer than min_rated of its
// cases are rated, with the reason where the gate's reasons show (the decision's checks, the
// refusal of `approve`, `fedlora site adapter candidates`); enough safe ratings make it approvable;
// an unsafe rate whose 95% upper bound is above the floor holds it, though its point estimate is under.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type Database from 'better-sqlite3-multiple-ciphers';
import { openSiteDb } from '../../site-agent/site-db.ts';
import { loadSiteConfig } from '../../site-agent/config.ts';
import { AuditLog } from '../../shared/audit.ts';
import type { GatePolicy } from '../../site-agent/serve/config.ts';
import { approveCandidate, decideCandidate, getCandidate, recordCandidate, redecideAfterRating } from '../../site-agent/serve/gate/policy.ts';
import { addRating, type Safety } from '../../site-agent/serve/review/ratings.ts';
import { wilson } from '../../site-agent/eval/safety/stats.ts';
import { runFedlora } from '../runner/fedlora-cli.ts';
import { rmDir, tempDir, writeSiteYaml } from './helpers.ts';

const MIN_RATED = 5;
const MAX_UNSAFE = 0.5;
const dir = tempDir('gate-review');
const siteDir = join(dir, 'site');
let db: Database.Database;
let audit: AuditLog;
let policy: GatePolicy;

const metrics = (accuracy: number, loss: number) => [{ name: 'accuracy', value: accuracy, count: 24 }, { name: 'loss', value: loss, count: 900 }];

/** Candidate job-r/vN with better metrics than v0 and a passing safety run, and `cases` review cases. */
function candidate(version: number, cases: number): number[] {
  const sha256 = `${version}`.repeat(64).slice(0, 64);
  recordCandidate(db, { jobId: 'job-r', version, sha256, dir: join(dir, `v${version}`), metrics: metrics(0.6, 1.8) });
  db.prepare(`INSERT INTO safety_runs (adapter_label, adapter_sha256, job_id, version, suite_sha256, prompts, passed, pass_rate, ci_low, ci_high, categories, started_at, finished_at)
    VALUES (?, ?, 'job-r', ?, 'suite', 200, 198, 0.99, 0.96, 1.0, '{}', '2026-01-01T00:00:00Z', '2026-01-01T00:01:00Z')`).run(`job-r/v${version}`, sha256, version);
  return Array.from({ length: cases }, (_, i) => {
    const rec = `v${version}-r${i}`;
    db.prepare("INSERT INTO data_records (id, patient_key, lang, json, source) VALUES (?, ?, 'en', '{}', 'test')").run(rec, `p-${rec}`);
    return Number(db.prepare("INSERT INTO review_cases (record_id, adapter_label, job_id, version, lang, prompt, answer, needed) VALUES (?, ?, 'job-r', ?, 'en', 'case', 'answer', 1)")
      .run(rec, `job-r/v${version}`, version).lastInsertRowid);
  });
}

function rate(version: number, caseId: number, safety: Safety) {
  addRating(db, { caseId, user: 'dr.a', correctness: 'correct', safety, score: 4 }, audit);
  return redecideAfterRating(db, audit, policy, 'job-r', version);
}

const reviewCheck = (version: number) => getCandidate(db, 'job-r', version)!.checks!.find((x) => x.name === 'review');

beforeAll(() => {
  mkdirSync(siteDir, { recursive: true });
  writeSiteYaml(siteDir, join(dir, 'no-model'), { gate: { require_admin_approval: true, review: { min_rated: MIN_RATED, max_unsafe_rate: MAX_UNSAFE } } });
  policy = loadSiteConfig(siteDir).serve.gate;
  db = openSiteDb(siteDir);
  audit = new AuditLog(db, 'site_audit');
  recordCandidate(db, { jobId: 'job-r', version: 0, sha256: '0'.repeat(64), dir: join(dir, 'v0'), metrics: metrics(0.5, 2.0) });
});
afterAll(() => {
  db.close();
  rmDir(dir);
});

describe("release gate: the doctors' review floor", () => {
  it('keeps a candidate with too few ratings held, with the reason; enough safe ratings make it approvable', async () => {
    expect(policy.review).toEqual({ min_rated: MIN_RATED, max_unsafe_rate: MAX_UNSAFE });
    const ids = candidate(1, MIN_RATED + 1);
    const c = decideCandidate(db, audit, policy, 'job-r', 1);
    expect(c.status).toBe('held');
    expect(c.checks!.filter((x) => !x.ok).map((x) => x.name)).toEqual(['review']);
    expect(reviewCheck(1)!.detail).toContain(`0 of ${MIN_RATED} cases rated by doctors (${MIN_RATED + 1} sampled)`);

    for (const id of ids.slice(0, MIN_RATED - 1)) expect(rate(1, id, 'safe')!.status).toBe('held');
    expect(reviewCheck(1)!.detail).toContain(`${MIN_RATED - 1} of ${MIN_RATED} cases rated`);
    expect(() => approveCandidate(db, audit, policy, 'job-r', 1, 'admin')).toThrow(/does not pass the gate: review: 4 of 5 cases rated/);
    const list = await runFedlora(['site', 'adapter', 'candidates', '--site-dir', siteDir]);
    expect(list.out).toMatch(/job-r\/v1\theld.*\n {4}held by: review: 4 of 5 cases rated by doctors/);

    // The rating that meets min_rated: 0/5 unsafe, upper bound 0.434 <= 0.5 -> passed, waiting for the admin.
    expect(wilson(0, MIN_RATED)[1]).toBeLessThanOrEqual(MAX_UNSAFE);
    expect(rate(1, ids[MIN_RATED - 1], 'safe')!.status).toBe('passed');
    expect(reviewCheck(1)).toMatchObject({ ok: true });
    expect(approveCandidate(db, audit, policy, 'job-r', 1, 'admin').status).toBe('approved');
  });

  it('holds a candidate whose unsafe rate has its 95% upper bound above the floor', () => {
    const ids = candidate(2, MIN_RATED);
    for (const id of ids.slice(1)) rate(2, id, 'safe');
    // 1 unsafe of 5: point estimate 0.2 under the floor, the upper bound above it.
    expect(wilson(1, MIN_RATED)[1]).toBeGreaterThan(MAX_UNSAFE);
    const c = rate(2, ids[0], 'unsafe')!;
    expect(c.status).toBe('held');
    expect(reviewCheck(2)).toMatchObject({ ok: false, detail: expect.stringContaining(`unsafe 1/5, 95% upper bound ${wilson(1, MIN_RATED)[1].toFixed(3)}; floor ${MAX_UNSAFE}`) });
    expect(() => approveCandidate(db, audit, policy, 'job-r', 2, 'admin')).toThrow(/review: 5 cases rated/);
  });
});
