// The workbench ranks labelled records in the background while the assistant is idle (engine
// backend): every labelled record gets one stored ranking of the serving version, the disagreement
// queue is exactly the records whose label is not the ranking's top, and a doctor opening such a
// record sees that stored ranking (not a new one). Ranking labels nothing.
import { describe, it, expect, afterAll, beforeAll } from 'vitest';
import { setTimeout as sleep } from 'node:timers/promises';
import { generateSites } from '../../site-agent/data/index.ts';
import { dxKey } from '../../site-agent/data/labels/keys.ts';
import { openSiteDb } from '../../site-agent/site-db.ts';
import { startServe, type RunningServe } from '../../site-agent/serve/run.ts';
import type { Suggestion } from '../../site-agent/serve/workbench/suggestions.ts';
import { makeSite, rmDir } from './helpers.ts';
import { ingestRecords } from './serve-fixture.ts';

const CANDIDATES = 8;
const site = makeSite('workbench-ranking', { workbench: { suggestions: { enabled: true, top_k: 3, candidates: CANDIDATES, precompute_per_pass: 2 } } });
const [synth] = generateSites({ sites: 1, records: 6, lang: 'zh', skew: 0, seed: 33 });
let srv: RunningServe | null = null;

beforeAll(async () => {
  expect(await ingestRecords(site, synth.records)).toBe(6);
  srv = await startServe(site.siteDir, { port: 0 });
});
afterAll(async () => {
  await srv?.close();
  rmDir(site.dir);
});

interface Ranked { id: string; diagnosis: string; icd10: string | null; sid: number; top_key: string; items: string }
function ranked(): Ranked[] {
  const db = openSiteDb(site.siteDir);
  try {
    return db.prepare(`SELECT r.id, r.diagnosis, json_extract(r.json, '$.icd10') AS icd10, s.id AS sid, s.top_key, s.items FROM data_records r
        JOIN label_suggestions s ON s.record_id = r.id AND s.model_version = 'base' ORDER BY r.id`).all() as Ranked[];
  } finally {
    db.close();
  }
}

const get = async (path: string) => {
  const r = await fetch(`${srv!.url}${path}`, { headers: { authorization: `Bearer ${site.keys.clinician}` } });
  expect(r.status).toBe(200);
  return r.json() as Promise<Record<string, unknown>>;
};

describe('workbench ranking while idle', () => {
  it('ranks every labelled record once; the disagreement queue is the records whose label is not the top', async () => {
    // Nothing else asks the assistant anything: the background passes (2 records each) go on
    // until every record is ranked; the test's timeout bounds the wait.
    let rows = ranked();
    while (rows.length < 6) {
      await sleep(200);
      rows = ranked();
    }
    for (const r of rows) {
      const items = JSON.parse(r.items) as Suggestion[];
      expect(items).toHaveLength(CANDIDATES);
      for (let i = 1; i < items.length; i++) expect(items[i - 1].meanLogLikelihood).toBeGreaterThanOrEqual(items[i].meanLogLikelihood);
      for (const x of items) expect(x.logLikelihood).toBeLessThan(0);
      expect(r.top_key).toBe(dxKey(items[0].diagnosis, items[0].icd10));
    }
    const disagreeing = rows.filter((r) => dxKey(r.diagnosis, r.icd10) !== r.top_key);
    expect(disagreeing.length, 'the tiny random model should disagree with some export labels').toBeGreaterThan(0);
    const summary = (await get('/api/workbench/summary')) as { queues: Record<string, number> };
    expect(summary.queues).toEqual({ unlabelled: 0, disagree: disagreeing.length, dispute: 0 });

    // Walking the disagreement queue visits exactly those records, each with its stored ranking.
    const seen: string[] = [];
    let after: string | null = null;
    for (;;) {
      const { record } = (await get(`/api/workbench/queues/disagree/next${after ? `?after=${encodeURIComponent(after)}` : ''}`)) as { record: { id: string; suggestions: { id: number; shown: boolean; items: Suggestion[] } } | null };
      if (!record) break;
      const row = rows.find((r) => r.id === record.id)!;
      expect(record.suggestions).toMatchObject({ id: row.sid, shown: true });
      expect(record.suggestions.items).toEqual((JSON.parse(row.items) as Suggestion[]).slice(0, 3));
      seen.push(record.id);
      after = record.id;
    }
    expect(seen).toEqual(disagreeing.map((r) => r.id));
    expect(ranked().map((r) => r.sid)).toEqual(rows.map((r) => r.sid));
    const db = openSiteDb(site.siteDir);
    expect(db.prepare('SELECT count(*) FROM label_entries').pluck().get()).toBe(0);
    db.close();
  });
});
