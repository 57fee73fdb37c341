// The doctors' review figures on a real site database: proportions with Wilson intervals, mean
// score and Cohen's kappa between the first and the blind second doctor, each checked against a
// hand computation; one rating per doctor, at most the doctors a case needs; the queue serves a
// case waiting for its second doctor first and never to the doctor who rated it.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type Database from 'better-sqlite3-multiple-ciphers';
import { openSiteDb } from '../../site-agent/site-db.ts';
import { reviewMetrics, reviewOf, reviewReport } from '../../site-agent/serve/review/aggregates.ts';
import { needsTwo } from '../../site-agent/serve/review/sample.ts';
import { addRating, nextCase, openCount, type Correctness, type Safety } from '../../site-agent/serve/review/ratings.ts';
import { rmDir, tempDir, writeSiteYaml } from './helpers.ts';

const dir = tempDir('review-agg');
let db: Database.Database;

function addCase(d: Database.Database, recordId: string, adapter: string, needed: 1 | 2, version: number | null = 1): number {
  d.prepare("INSERT OR IGNORE INTO data_records (id, patient_key, lang, json, source) VALUES (?, ?, 'en', '{}', 'test')").run(recordId, `p-${recordId}`);
  return Number(d.prepare("INSERT INTO review_cases (record_id, adapter_label, job_id, version, lang, prompt, answer, needed) VALUES (?,?,?,?, 'en', ?, ?, ?)")
    .run(recordId, adapter, version === null ? null : 'job-r', version, `case text ${recordId}`, `answer text ${recordId}`, needed).lastInsertRowid);
}

// Ten cases rated by two doctors: [first correctness, second, first safety, second, first score].
const DOUBLE: [Correctness, Correctness, Safety, Safety, number][] = [
  ['correct', 'correct', 'safe', 'safe', 5], ['correct', 'correct', 'safe', 'safe', 4], ['correct', 'partly', 'safe', 'safe', 4], ['correct', 'correct', 'safe', 'safe', 5],
  ['partly', 'partly', 'safe', 'safe', 3], ['partly', 'wrong', 'safe', 'safe', 3], ['wrong', 'wrong', 'unsafe', 'unsafe', 1], ['wrong', 'wrong', 'unsafe', 'unsafe', 2],
  ['correct', 'correct', 'safe', 'safe', 5], ['wrong', 'correct', 'safe', 'unsafe', 2],
];

beforeAll(() => {
  const siteDir = join(dir, 'site');
  mkdirSync(siteDir, { recursive: true });
  writeSiteYaml(siteDir, join(dir, 'no-model'), {});
  db = openSiteDb(siteDir);
  const v = 'job-r/v1';
  DOUBLE.forEach(([c1, c2, s1, s2, score], i) => {
    const id = addCase(db, `d${i}`, v, 2);
    addRating(db, { caseId: id, user: 'dr.a', correctness: c1, safety: s1, score }, null);
    addRating(db, { caseId: id, user: 'dr.b', correctness: c2, safety: s2, score: 3 }, null);
  });
  addRating(db, { caseId: addCase(db, 's0', v, 1), user: 'dr.b', correctness: 'correct', safety: 'safe', score: 5 }, null);
  addRating(db, { caseId: addCase(db, 's1', v, 1), user: 'dr.a', correctness: 'wrong', safety: 'unsafe', score: 1 }, null);
  addCase(db, 's2', v, 1); // sampled, not rated yet
  addRating(db, { caseId: addCase(db, 'd0', 'job-r/v2', 1, 2), user: 'dr.a', correctness: 'wrong', safety: 'unsafe', score: 1 }, null);
});
afterAll(() => {
  db.close();
  rmDir(dir);
});

describe("doctors' review figures", () => {
  it('proportions, Wilson intervals, mean score and kappa match a hand computation', () => {
    const r = reviewOf(db, 'job-r/v1');
    expect(r.cases).toEqual({ sampled: 13, rated: 12, double: 10, doubleRated: 10 });
    // First ratings: the ten first reads (correct 5, partly 2, wrong 3; unsafe 2) and the two single ones.
    expect([r.correctness.correct.count, r.correctness.partly.count, r.correctness.wrong.count, r.unsafe.count]).toEqual([6, 2, 4, 3]);
    expect(r.correctness.correct.rate).toBe(0.5);
    // Wilson 95% for 6/12 by hand: centre 0.5, half-width z·sqrt(p(1-p)/n + z²/4n²)/(1 + z²/n) = 0.246217.
    expect(r.correctness.correct.ci[0]).toBeCloseTo(0.253783, 5);
    expect(r.correctness.correct.ci[1]).toBeCloseTo(0.746217, 5);
    expect(r.unsafe.rate).toBe(0.25);
    expect(r.meanScore).toBeCloseTo((5 + 4 + 4 + 5 + 3 + 3 + 1 + 2 + 5 + 2 + 5 + 1) / 12, 12);
    // Correctness: agreement 7/10; first reader 5/2/3, second 5/2/3 -> chance .25 + .04 + .09 = .38; kappa .32/.62.
    expect(r.kappa.correctness.n).toBe(10);
    expect(r.kappa.correctness.observed).toBeCloseTo(0.7, 12);
    expect(r.kappa.correctness.expected).toBeCloseTo(0.38, 12);
    expect(r.kappa.correctness.kappa).toBeCloseTo(0.32 / 0.62, 12);
    // Safety: agreement 9/10; first 8 safe / 2 unsafe, second 7 / 3 -> chance .56 + .06 = .62; kappa .28/.38.
    expect(r.kappa.safety.observed).toBeCloseTo(0.9, 12);
    expect(r.kappa.safety.kappa).toBeCloseTo(0.28 / 0.38, 12);
    expect(r.reviewers).toEqual({ 'dr.a': 11, 'dr.b': 11 });
    expect(reviewReport(db).map((x) => [x.adapter, x.cases.rated])).toEqual([['job-r/v1', 12], ['job-r/v2', 1]]);
  });

  it('what may leave the site: figures with counts, withheld below the minimum', () => {
    const r = reviewOf(db, 'job-r/v1');
    const m = reviewMetrics(r, 5);
    expect(m.map((x) => [x.name, x.count])).toEqual([
      ['review_correct', 12], ['review_partly', 12], ['review_wrong', 12], ['review_unsafe', 12], ['review_score_mean', 12],
      ['review_kappa_correctness', 10], ['review_kappa_safety', 10],
    ]);
    expect(m.every((x) => x.kind === 'global' && x.evalSet === 'review' && x.adapterVersion === 1)).toBe(true);
    expect(m.find((x) => x.name === 'review_unsafe')!.ci).toEqual(r.unsafe.ci);
    // 12 rated but only 10 double-rated: with a minimum of 11 the kappas are withheld, with 13 everything.
    expect(reviewMetrics(r, 11).map((x) => x.name)).not.toContain('review_kappa_safety');
    expect(reviewMetrics(r, 11)).toHaveLength(5);
    expect(reviewMetrics(r, 13)).toEqual([]);
    expect(reviewMetrics(reviewOf(db, 'job-r/v2'), 5)).toEqual([]);
  });

  it('one rating per doctor, no more doctors than the case needs; the queue is blind and serves second reads first', () => {
    const id = addCase(db, 'q0', 'job-r/v3', 2, 3);
    addCase(db, 'q1', 'job-r/v3', 1, 3);
    expect(openCount(db, 'dr.c', 'job-r/v3')).toBe(2);
    expect(nextCase(db, 'dr.c', 'job-r/v3', null)!.id).toBe(id);
    addRating(db, { caseId: id, user: 'dr.c', correctness: 'partly', safety: 'safe', score: 3 }, null);
    expect(() => addRating(db, { caseId: id, user: 'dr.c', correctness: 'correct', safety: 'safe', score: 4 }, null)).toThrow(/dr\.c already rated review case/);
    expect(nextCase(db, 'dr.c', 'job-r/v3', null)!.record_id).toBe('q1');
    const second = nextCase(db, 'dr.d', 'job-r/v3', null)!;
    expect(second).toMatchObject({ id, reads_before: 1 });
    expect(Object.keys(second)).not.toContain('correctness');
    addRating(db, { caseId: id, user: 'dr.d', correctness: 'wrong', safety: 'unsafe', score: 2 }, null);
    expect(() => addRating(db, { caseId: id, user: 'dr.e', correctness: 'wrong', safety: 'safe', score: 2 }, null)).toThrow(/has its 2 doctors already/);
    expect(() => addRating(db, { caseId: id + 1, user: 'dr.e', correctness: 'wrong', safety: 'safe', score: 6 }, null)).toThrow(/score: 6/);
    expect(() => db.prepare('UPDATE review_ratings SET score = 5').run()).toThrow(/append-only/);
    expect(db.prepare('SELECT user_name, reads_before FROM review_ratings WHERE case_id = ? ORDER BY id').all(id)).toEqual([{ user_name: 'dr.c', reads_before: 0 }, { user_name: 'dr.d', reads_before: 1 }]);
  });

  it('the double-review share is the configured fraction, fixed per version and record', () => {
    const ids = Array.from({ length: 2000 }, (_, i) => `rec-${i}`);
    const two = ids.filter((id) => needsTwo('job-r/v1', id, 0.25)).length;
    // Binomial(2000, 0.25): mean 500, sd 19.4; hash-uniform draws fall within 4 sd.
    expect(two).toBeGreaterThan(500 - 4 * 19.4);
    expect(two).toBeLessThan(500 + 4 * 19.4);
    expect(ids.filter((id) => needsTwo('job-r/v1', id, 0.25))).toEqual(ids.filter((id) => needsTwo('job-r/v1', id, 0.25)));
    expect(ids.every((id) => needsTwo('job-r/v1', id, 1) && !needsTwo('job-r/v1', id, 0))).toBe(true);
  });
});
