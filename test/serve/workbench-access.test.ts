// The workbench API keeps reads blind and disputes for a third doctor, whatever a client sends:
// no key is 401; a second reader reaches neither the first read nor the record through another
// queue; a reader cannot adjudicate their own dispute; a code outside the site's list is a 400
// naming it; the page itself carries a strict Content-Security-Policy.
import { describe, it, expect, afterAll, beforeAll } from 'vitest';
import { generateSites } from '../../site-agent/data/index.ts';
import { openSiteDb } from '../../site-agent/site-db.ts';
import { startServe, type RunningServe } from '../../site-agent/serve/run.ts';
import { addUser } from '../../site-agent/serve/users.ts';
import { makeSite, rmDir } from './helpers.ts';
import { ingestRecords } from './serve-fixture.ts';

const site = makeSite('workbench-access', { workbench: { double_read_fraction: 1, suggestions: { enabled: false, top_k: 5, candidates: 8, precompute_per_pass: 0 } } });
let srv: RunningServe | null = null;
let wang = '';

beforeAll(async () => {
  const [synth] = generateSites({ sites: 1, records: 2, lang: 'zh', skew: 0, seed: 4 });
  expect(await ingestRecords(site, synth.records.map((r) => ({ ...r, diagnosis: '', icd10: '' })))).toBe(2);
  const db = openSiteDb(site.siteDir);
  wang = addUser(db, 'dr.wang', 'clinician').key;
  db.close();
  srv = await startServe(site.siteDir, { port: 0 });
});
afterAll(async () => {
  await srv?.close();
  rmDir(site.dir);
});

async function call(key: string | null, path: string, body?: unknown): Promise<{ status: number; json: Record<string, any> }> {
  const r = await fetch(`${srv!.url}${path}`, {
    method: body === undefined ? 'GET' : 'POST',
    headers: { ...(key ? { authorization: `Bearer ${key}` } : {}), ...(body === undefined ? {} : { 'content-type': 'application/json' }) },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: r.status, json: (await r.json()) as Record<string, any> };
}

describe('workbench API rules', () => {
  it('blind second reads, adjudication by a third doctor, codes from the list, keys required', async () => {
    const page = await fetch(`${srv!.url}/workbench`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toContain("default-src 'none'");
    expect((await call(null, '/api/workbench/summary')).status).toBe(401);
    expect((await call('not-a-key', '/api/workbench/summary')).status).toBe(401);

    const li = site.keys.clinician;
    const { json: first } = await call(li, '/api/workbench/queues/unlabelled/next');
    const id = first.record.id as string;
    const path = `/api/workbench/records/${encodeURIComponent(id)}`;
    const bad = await call(li, `${path}/labels`, { queue: 'unlabelled', diagnosis: '未知', icd10: 'Z99.99' });
    expect(bad.status).toBe(400);
    expect(bad.json.error.message).toContain("icd10: Z99.99 is not in the site's code list");
    const a = await call(li, `${path}/labels`, { queue: 'unlabelled', diagnosis: '急性心肌梗死', icd10: 'I21.9' });
    expect(a.status).toBe(201);
    expect(a.json.record.status).toBe('pending_second');

    // dr.wang reads the same record blind: not through "mine", not from another queue.
    for (const q of ['mine', 'disagree', 'dispute']) expect((await call(wang, `${path}?queue=${q}`)).status).toBe(404);
    const { json: second } = await call(wang, '/api/workbench/queues/unlabelled/next');
    expect(second.record).toMatchObject({ id, label: null, reads: [] });
    expect(JSON.stringify(second)).not.toContain('dr.li');
    expect(JSON.stringify(second)).not.toContain('I21.9');
    // A reader cannot skip ahead to adjudication.
    expect((await call(li, `${path}/labels`, { queue: 'dispute', diagnosis: '肺炎', icd10: 'J18.9' })).status).toBe(404);
    const b = await call(wang, `${path}/labels`, { queue: 'unlabelled', diagnosis: '社区获得性肺炎', icd10: 'J18.9' });
    expect(b.json.record.status).toBe('disputed');

    // Neither reader sees the dispute; the admin (who read neither side) adjudicates it.
    for (const key of [li, wang]) {
      expect((await call(key, '/api/workbench/queues/dispute/next')).json.record).toBeNull();
      expect((await call(key, `${path}/labels`, { queue: 'dispute', diagnosis: '社区获得性肺炎', icd10: 'J18.9' })).status).toBe(404);
    }
    const { json: toJudge } = await call(site.keys.admin, '/api/workbench/queues/dispute/next');
    expect(toJudge.record.reads.map((r: { user: string; icd10: string }) => [r.user, r.icd10])).toEqual([['dr.li', 'I21.9'], ['dr.wang', 'J18.9']]);
    const c = await call(site.keys.admin, `${path}/labels`, { queue: 'dispute', diagnosis: '社区获得性肺炎', icd10: 'J18.9' });
    expect(c.status).toBe(201);
    expect(c.json).toMatchObject({ label: { kind: 'adjudication', user_name: 'admin' }, record: { status: 'adjudicated' } });
    expect((await call(wang, '/api/workbench/summary')).json.queues).toEqual({ unlabelled: 1, disagree: 0, dispute: 0 });
  });
});
