// Data periods: a job's first rounds are period 0, `fedlora job continue` (POST /continue) or its
// schedule adds the next. At the site (real SQLite store, two ingest runs of synthetic records)
// a later period trains its new records with a fixed replay sample of earlier ones
// (train.replay_fraction) and tags its held-out cases earlier/new; on the coordinator (in-process
// round engine, real SQLite) a continuation adds rounds, tasks name their period, and a schedule
// starts a period only once it is due and a site reported new records.
import { afterAll, describe, expect, it } from 'vitest';
import { TEST_TIMEOUT_MS } from '../runner/limits.ts';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { openSiteDb } from '../../site-agent/site-db.ts';
import { openSiteDataStore, ingestFiles, defaultDataConfig, generateSites, loadOrCreateSiteKey, buildDatasets } from '../../site-agent/data/index.ts';
import { dataRevision, enterDataPeriod, replayCount, runsOfRecords } from '../../site-agent/data/dataset/periods.ts';
import { recordDataRevision } from '../../coordinator/jobs/periods.ts';
import { runRound } from './round-driver.ts';
import { taskMessage } from '../../coordinator/rounds/task-messages.ts';
import { harness, online, rmDir, tinySpec, type Harness } from '../coordinator/helpers.ts';

const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** A site store with two ingest runs: 60 records of one department mix, then 40 of another. */
async function siteWithTwoRuns() {
  const dir = mkdtempSync(join(tmpdir(), 'fedlora-periods-'));
  dirs.push(dir);
  const db = openSiteDb(dir);
  const store = openSiteDataStore(db);
  const key = loadOrCreateSiteKey(dir);
  const [q1] = generateSites({ sites: 1, records: 60, lang: 'en', skew: 0.9, seed: 11, format: 'jsonl', out: join(dir, 'q1') });
  await ingestFiles(store, [q1.file!], { format: 'jsonl', config: defaultDataConfig(), key });
  const afterFirst = dataRevision(db);
  const q2 = generateSites({ sites: 2, records: 40, lang: 'en', skew: 0.9, seed: 12, format: 'jsonl', out: join(dir, 'q2') })[1];
  return { dir, db, store, afterFirst, ingestSecond: () => ingestFiles(store, [q2.file!], { format: 'jsonl', config: defaultDataConfig(), key }) };
}

describe('the dataset of a data period at the site', () => {
  it('trains the new records with a fixed replay sample of earlier ones and tags held-out cases earlier/new', async () => {
    const s = await siteWithTwoRuns();
    expect(s.afterFirst).toBeGreaterThan(0);
    // Period 0 trains with the first run; its mark is that run.
    const p0 = enterDataPeriod(s.db, { jobId: 'j', period: 0, parentJob: '', replayFraction: 0.25 }, { record: true });
    expect(p0.earlierUpTo).toBeNull();
    const all0 = buildDatasets(s.store, { period: p0 });
    expect(all0.replay).toBeNull();
    await s.ingestSecond();
    expect(dataRevision(s.db)).toBeGreaterThan(s.afterFirst);
    const p1 = enterDataPeriod(s.db, { jobId: 'j', period: 1, parentJob: '', replayFraction: 0.25 }, { record: true });
    expect(p1.earlierUpTo).toBe(s.afterFirst);

    const runs = runsOfRecords(s.db);
    const ds = buildDatasets(s.store, { period: p1 });
    const isEarlier = (id: string) => runs.get(id)! <= s.afterFirst;
    const newIds = ds.ids.train.filter((id) => !isEarlier(id)), replayed = ds.ids.train.filter(isEarlier);
    expect(newIds.length).toBeGreaterThan(0);
    expect(ds.replay).toEqual({ fresh: newIds.length, replayed: replayed.length, earlier: all0.ids.train.length });
    // 25% of the mixed set from earlier periods: replayed / (new + replayed) = 0.25 (rounded).
    expect(replayed.length).toBe(Math.round((0.25 * newIds.length) / 0.75));
    expect(replayed.length).toBeGreaterThan(0);
    // Every new training record of the second run is in; the sample is the same every round of the period.
    expect(newIds.length).toBe([...runs].filter(([id, run]) => run > s.afterFirst && all0.ids.train.includes(id) === false).filter(([id]) => ds.ids.train.includes(id)).length);
    expect(buildDatasets(s.store, { period: p1 }).ids.train).toEqual(ds.ids.train);
    // Another period draws another sample.
    const other = buildDatasets(s.store, { period: { ...p1, sampleKey: 'j:2' } }).ids.train.filter(isEarlier);
    expect(other).not.toEqual(replayed);

    // The held-out sets keep the earlier cases, tagged.
    expect(ds.validationAge).toEqual(ds.ids.validation.map((id) => (isEarlier(id) ? 'earlier' : 'new')));
    expect(ds.validationAge).toContain('earlier');
    expect(ds.validationAge).toContain('new');
    expect(ds.ids.test.length).toBe(ds.choices.length);
    expect(ds.choices.map((c) => c.subgroups?.data)).toEqual(ds.ids.test.map((id) => (isEarlier(id) ? 'earlier' : 'new')));

    // No replay: only the new records.
    const none = buildDatasets(s.store, { period: { ...p1, replayFraction: 0 } });
    expect(none.ids.train.every((id) => !isEarlier(id))).toBe(true);
    expect(none.ids.train.length).toBe(newIds.length);
    s.db.close();
  }, TEST_TIMEOUT_MS);

  it('a continued job (init_adapter) counts its parent\'s records as earlier; the replay count is exact', async () => {
    const s = await siteWithTwoRuns();
    enterDataPeriod(s.db, { jobId: 'quarter-1', period: 0, parentJob: '', replayFraction: 0 }, { record: true });
    await s.ingestSecond();
    const child = enterDataPeriod(s.db, { jobId: 'quarter-2', period: 0, parentJob: 'quarter-1', replayFraction: 0.5 }, { record: true });
    expect(child.earlierUpTo).toBe(s.afterFirst);
    // An evaluation does not move a period's mark.
    enterDataPeriod(s.db, { jobId: 'quarter-3', period: 0, parentJob: '', replayFraction: 0 }, { record: false });
    expect(s.db.prepare('SELECT count(*) FROM data_periods WHERE job_id = ?').pluck().get('quarter-3')).toBe(0);
    expect([replayCount(10, 100, 0.5), replayCount(10, 3, 0.5), replayCount(0, 7, 0), replayCount(10, 0, 0.5), replayCount(9, 100, 0)]).toEqual([10, 3, 7, 0, 0]);
    s.db.close();
  }, TEST_TIMEOUT_MS);
});

const hs: Harness[] = [];
afterAll(() => hs.forEach((h) => rmDir(h.dir)));
function mk(): Harness {
  const h = harness();
  hs.push(h);
  return h;
}

const periodOfTask = (h: Harness, site: string, jobId: string, round: number) => {
  const t = h.store.openTasksFor(site).find((x) => x.job_id === jobId && x.round === round)!;
  return taskMessage({ store: h.store, jobInfo: (id: string) => h.engine.jobInfo(id) }, t).train!;
};

describe('data periods on the coordinator', () => {
  it('fedlora job continue adds a period of K rounds to a completed job; its tasks name the period and the replay share', async () => {
    const h = mk();
    online(h, 's1', 's2');
    await h.engine.submitJob(tinySpec({ rounds: 1, train: { local_steps: 1, learning_rate: 0.01, replay_fraction: 0.3 } }), 'q');
    await runRound(h.engine, 'q', 1, ['s1', 's2']);
    expect(h.store.job('q')!.status).toBe('completed');
    h.clock.t += 1000;
    h.engine.continueJob('q', 2, 'ops');
    expect(h.store.job('q')!.status).toBe('running');
    expect(h.engine.jobs.roundsTotal('q')).toBe(3);
    await h.engine.tick();
    expect(periodOfTask(h, 's1', 'q', 2)).toMatchObject({ dataPeriod: 1, replayFraction: 0.3 });
    await runRound(h.engine, 'q', 2, ['s1', 's2']);
    await runRound(h.engine, 'q', 3, ['s1', 's2']);
    expect(h.store.job('q')).toMatchObject({ status: 'completed', current_version: 3 });
    const audit = h.store.db.prepare(`SELECT actor, details FROM audit_log WHERE action = 'job_continued'`).all() as { actor: string; details: string }[];
    expect(audit.map((a) => [a.actor, JSON.parse(a.details).first_round])).toEqual([['ops', 2]]);
    // A cancelled job is not continued; nor is a job that does not exist.
    await h.engine.submitJob(tinySpec({ rounds: 1 }), 'gone');
    h.engine.cancelJob('gone');
    expect(() => h.engine.continueJob('gone', 1)).toThrow(/job gone is cancelled; only a running or completed job can be continued/);
    expect(() => h.engine.continueJob('nope', 1)).toThrow(/job nope does not exist/);
  });

  it('schedule: a completed job goes on once `every` has passed and a site has new records', async () => {
    const h = mk();
    online(h, 's1', 's2');
    recordDataRevision(h.store.db, 's1', 3);
    await h.engine.submitJob(tinySpec({ rounds: 1, schedule: { every: '30d', rounds: 1 } }), 'monthly');
    await runRound(h.engine, 'monthly', 1, ['s1', 's2']);
    expect(h.store.job('monthly')!.status).toBe('completed');
    // Due, but no site has new records: it waits.
    h.clock.t += 31 * 86_400_000;
    online(h, 's1', 's2');
    await h.engine.tick();
    expect(h.store.job('monthly')!.status).toBe('completed');
    // s2 reports its first ingest: the period starts at the next tick, with one round.
    recordDataRevision(h.store.db, 's2', 1);
    await h.engine.tick();
    expect(h.store.job('monthly')!.status).toBe('running');
    expect(periodOfTask(h, 's1', 'monthly', 2).dataPeriod).toBe(1);
    await runRound(h.engine, 'monthly', 2, ['s1', 's2']);
    expect(h.store.job('monthly')).toMatchObject({ status: 'completed', current_version: 2 });
    // New records again, but the next 30 days have not passed: nothing runs.
    recordDataRevision(h.store.db, 's1', 4);
    h.clock.t += 86_400_000;
    await h.engine.tick();
    expect(h.store.job('monthly')!.status).toBe('completed');
    const periods = h.store.db.prepare(`SELECT period, reason, site_revisions_json FROM job_periods WHERE job_id = 'monthly' ORDER BY period`).all();
    expect(periods).toEqual([
      { period: 0, reason: 'submitted', site_revisions_json: '{"s1":3}' },
      { period: 1, reason: 'scheduled', site_revisions_json: '{"s1":3,"s2":1}' },
    ]);
  });
});
