// serve.review.auto_sample: when the agent receives a global adapter, the release gate's hook has
// the tiny model's candidate answer the doctors' review sample before the gate decides — the same
// cases `fedlora site review sample` picks (which then has nothing to add) — and with a review
// floor the decision holds it until doctors rate them on /review: the rating that meets the floor
// serves it (no admin approval in this site's policy).
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { initLoraAdapter, readCheckpoint, writePeftAdapter } from '../../site-agent/engine/index.ts';
import { generateSites } from '../../site-agent/data/index.ts';
import { openSiteDb } from '../../site-agent/site-db.ts';
import { loadSiteConfig } from '../../site-agent/config.ts';
import { AuditLog } from '../../shared/audit.ts';
import { sha256FileSync } from '../../shared/hash.ts';
import { receiveGlobalAdapter } from '../../site-agent/serve/gate/receive.ts';
import { getCandidate } from '../../site-agent/serve/gate/policy.ts';
import { currentServing } from '../../site-agent/serve/gate/serving.ts';
import { startServe, type RunningServe } from '../../site-agent/serve/run.ts';
import { sampledRecords } from '../../site-agent/serve/review/sample.ts';
import { runFedlora } from '../runner/fedlora-cli.ts';
import { makeSite, rmDir } from './helpers.ts';
import { ingestRecords } from './serve-fixture.ts';

const AUTO = 3;
const site = makeSite('gate-autosample', { gate: { review: { min_rated: 2, max_unsafe_rate: 0.95 } }, review: { auto_sample: AUTO, double_review_fraction: 0, max_new_tokens: 8 } });
const log = { info: () => undefined, warn: () => undefined };
const metrics = (accuracy: number, loss: number) => [{ name: 'accuracy', value: accuracy, count: 24 }, { name: 'loss', value: loss, count: 900 }];

/** A PEFT adapter of the tiny model; version 0 has B = 0 (the base model). */
function adapter(version: number) {
  const w = initLoraAdapter(readCheckpoint(site.modelDir).config, { r: 4, alpha: 8, targets: ['q_proj', 'v_proj'], dropout: 0, useRslora: false, freezeA: false, initSeed: 3 });
  let s = 7 + version;
  for (const [k, t] of w) if (k.includes('lora_B') && version > 0) for (let i = 0; i < t.data.length; i++) t.data[i] = (((s = (s * 16807) % 2147483647) / 2147483647) - 0.5) * 0.02;
  const dir = join(site.siteDir, 'adapters', 'job-1', `v${version}`);
  writePeftAdapter(dir, w, { r: 4, alpha: 8, targets: ['q_proj', 'v_proj'], dropout: 0, useRslora: false, baseModel: 'tiny' });
  return { jobId: 'job-1', version, dir, sha256: sha256FileSync(join(dir, 'adapter_model.safetensors')) };
}

beforeAll(async () => {
  const [synth] = generateSites({ sites: 1, records: 40, lang: 'en', skew: 0, seed: 5 });
  expect(await ingestRecords(site, synth.records)).toBe(40);
});
let srv: RunningServe | null = null;
afterAll(async () => {
  await srv?.close();
  rmDir(site.dir);
});

describe('release gate: review cases sampled on receipt', () => {
  it('samples serve.review.auto_sample cases for the received candidate, the ones `fedlora site review sample` picks, and holds it for the floor', async () => {
    const config = loadSiteConfig(site.siteDir);
    expect(config.serve.review.auto_sample).toBe(AUTO);
    const v0 = adapter(0);
    const v1 = adapter(1);
    const db = openSiteDb(site.siteDir);
    try {
      // A passing safety run of v1 already stored: the hook does not run the suite again.
      db.prepare(`INSERT INTO safety_runs (adapter_label, adapter_sha256, job_id, version, suite_sha256, prompts, passed, pass_rate, ci_low, ci_high, categories, started_at, finished_at)
        VALUES ('job-1/v1', ?, 'job-1', 1, 'suite', 200, 198, 0.99, 0.96, 1.0, '{}', '2026-01-01T00:00:00Z', '2026-01-01T00:01:00Z')`).run(v1.sha256);
      const ctx = { siteDir: site.siteDir, db, audit: new AuditLog(db, 'site_audit'), config, log };
      await receiveGlobalAdapter(ctx, { ...v0, metrics: metrics(0.5, 2.0) });
      expect(db.prepare('SELECT count(*) FROM review_cases').pluck().get()).toBe(0);
      await receiveGlobalAdapter(ctx, { ...v1, metrics: metrics(0.6, 1.8) });
      const cases = db.prepare("SELECT record_id, adapter_sha256, answer FROM review_cases WHERE adapter_label = 'job-1/v1' ORDER BY id").all() as { record_id: string; adapter_sha256: string; answer: string }[];
      expect(cases.map((c) => c.record_id)).toEqual(sampledRecords(db, 'job-1/v1', AUTO));
      expect(cases.every((c) => c.adapter_sha256 === v1.sha256 && typeof c.answer === 'string')).toBe(true);
      const c = getCandidate(db, 'job-1', 1)!;
      expect(c.status).toBe('held');
      expect(c.checks!.filter((x) => !x.ok).map((x) => `${x.name}: ${x.detail}`)).toEqual([expect.stringMatching(/^review: 0 of 2 cases rated by doctors \(3 sampled\)/)]);
    } finally {
      db.close();
    }
    const r = await runFedlora(['site', 'review', 'sample', '--version', 'job-1/v1', '--size', String(AUTO), '--site-dir', site.siteDir]);
    expect(r.err).toBe('');
    expect(r.out).toContain(`job-1/v1: 0 answers generated; ${AUTO} cases for review`);

    // Two safe ratings through the review page's API: the first leaves it held, the second serves it.
    srv = await startServe(site.siteDir);
    const statusAfterRating = async () => {
      const next = (await (await fetch(`${srv!.url}/api/review/next`, { headers: { authorization: `Bearer ${site.keys.clinician}` } })).json()) as { case: { id: number } };
      const res = await fetch(`${srv!.url}/api/review/cases/${next.case.id}/ratings`, {
        method: 'POST', headers: { authorization: `Bearer ${site.keys.clinician}`, 'content-type': 'application/json' }, body: JSON.stringify({ correctness: 'correct', safety: 'safe', score: 4 }),
      });
      expect(res.status).toBe(201);
      const db = openSiteDb(site.siteDir);
      try {
        return { status: getCandidate(db, 'job-1', 1)!.status, serving: currentServing(db).label };
      } finally {
        db.close();
      }
    };
    expect(await statusAfterRating()).toEqual({ status: 'held', serving: 'base' });
    expect(await statusAfterRating()).toEqual({ status: 'approved', serving: 'job-1/v1' });
  });
});
