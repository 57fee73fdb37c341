// Beside vLLM the workbench scores suggestions with a CPU engine copy of the model, loaded on
// first use, with the adapter version the gate serves: a record's stored ranking equals the
// engine's own scores of the same prompt with that adapter (and differs from the base model's),
// and no scoring request reaches vLLM.
import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import { join } from 'node:path';
import { initLoraAdapter, readCheckpoint, writePeftAdapter } from '../../site-agent/engine/index.ts';
import { loadSiteConfig } from '../../site-agent/config.ts';
import { generateSites } from '../../site-agent/data/index.ts';
import type { CaseRecord } from '../../site-agent/data/types.ts';
import { openSiteDb } from '../../site-agent/site-db.ts';
import { createEngineBackend } from '../../site-agent/serve/backend/engine-backend.ts';
import { setServing, currentServing } from '../../site-agent/serve/gate/serving.ts';
import { startServe, type RunningServe } from '../../site-agent/serve/run.ts';
import { suggestionPrompt, type Suggestion } from '../../site-agent/serve/workbench/suggestions.ts';
import { startVllmStandIn, type StandIn } from './vllm-stand-in.ts';
import { makeSite, rmDir, type TestSite } from './helpers.ts';
import { ingestRecords } from './serve-fixture.ts';

let site: TestSite;
let vllm: StandIn;
let srv: RunningServe;
let adapterDir: string;

beforeAll(async () => {
  vllm = await startVllmStandIn(['ok']);
  site = makeSite('workbench-vllm', { backend: 'vllm', vllm_url: vllm.url, workbench: { suggestions: { enabled: true, top_k: 4, candidates: 6, precompute_per_pass: 4 } } });
  const [synth] = generateSites({ sites: 1, records: 3, lang: 'en', skew: 0, seed: 7 });
  expect(await ingestRecords(site, synth.records.map((r) => ({ ...r, diagnosis: '', icd10: '' })))).toBe(3);
  // An adapter with a non-zero B (initLoraAdapter's B is zero), so it changes the scores.
  const settings = { r: 2, alpha: 4, targets: ['q_proj', 'v_proj'] as ('q_proj' | 'v_proj')[], dropout: 0, useRslora: false, freezeA: false, initSeed: 3 };
  const lora = initLoraAdapter(readCheckpoint(site.modelDir).config, settings);
  for (const [key, t] of lora) if (key.endsWith('lora_B.weight')) for (let i = 0; i < t.data.length; i++) t.data[i] = Math.sin(i + 1) * 0.5;
  adapterDir = join(site.siteDir, 'adapters', 'job-2', 'v1');
  writePeftAdapter(adapterDir, lora, { ...settings, baseModel: 'x' });
  const db = openSiteDb(site.siteDir);
  setServing(db, { jobId: 'job-2', version: 1, sha256: 'b'.repeat(64), dir: adapterDir }, 'approve', 'test');
  db.close();
  srv = await startServe(site.siteDir);
});
afterAll(async () => {
  await srv?.close();
  await vllm?.close();
  rmDir(site.dir);
});

describe('workbench beside vLLM', () => {
  it("ranks with a CPU engine copy and the served adapter when a record is opened", async () => {
    const r = await fetch(`${srv.url}/api/workbench/queues/unlabelled/next`, { headers: { authorization: `Bearer ${site.keys.clinician}` } });
    expect(r.status).toBe(200);
    const { record } = (await r.json()) as { record: { id: string; suggestions: { id: number; modelVersion: string } | null; suggestionsError: string | null } };
    expect(record.suggestionsError).toBeNull();
    expect(record.suggestions!.modelVersion).toBe('job-2/v1');

    const db = openSiteDb(site.siteDir, { readonly: true });
    const stored = db.prepare('SELECT record_id, model_version, items FROM label_suggestions').all() as { record_id: string; model_version: string; items: string }[];
    const rec = JSON.parse(db.prepare('SELECT json FROM data_records WHERE id = ?').pluck().get(record.id) as string) as CaseRecord;
    const served = currentServing(db);
    db.close();
    // Opening a record ranks that record (the unlabelled ones are never ranked in the background).
    expect(stored.map((s) => [s.record_id, s.model_version])).toEqual([[record.id, 'job-2/v1']]);
    const items = JSON.parse(stored[0].items) as Suggestion[];
    expect(items).toHaveLength(6);

    // The engine's own scores of the same prompt: with the served adapter they are the stored ones.
    const cfg = loadSiteConfig(site.siteDir);
    const { messages, prefix } = suggestionPrompt(rec, cfg.data, cfg.policy.allowed_fields);
    const names = items.map((x) => x.diagnosis);
    const engine = await createEngineBackend({ modelDir: site.modelDir, device: 'cpu' });
    try {
      await engine.useVersion(served);
      const withAdapter = await engine.scoreChoices!(messages, prefix, names);
      withAdapter.meanLogLikelihoods.forEach((m, i) => expect(items[i].meanLogLikelihood).toBeCloseTo(m, 5));
      await engine.useVersion({ ...served, dir: null });
      const base = await engine.scoreChoices!(messages, prefix, names);
      expect(Math.max(...base.meanLogLikelihoods.map((m, i) => Math.abs(m - items[i].meanLogLikelihood)))).toBeGreaterThan(1e-3);
    } finally {
      await engine.close();
    }
    expect(vllm.requests.filter((x) => x.path === '/v1/completions')).toEqual([]);
    expect(vllm.problems).toEqual([]);
  });
});
