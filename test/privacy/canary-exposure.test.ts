// Canaries for the privacy audit: planting (format, distinct secrets, the records that carry
// them, written with the synthetic site) and exposure (Carlini et al.): the exhaustive rank equals
// a rank computed independently from the engine's per-sequence scores (with and without the
// context the canary was planted in), a canary made the most likely filling gets the maximal
// exposure, sampling estimates the rank.
import { describe, expect, it, beforeAll } from 'vitest';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { canarySecrets, fillCanary, parseCanaryFormat, plantCanaries } from '../../site-agent/data/synth/canaries.ts';
import { generateSites } from '../../site-agent/data/synth/generate.ts';
import { initTinyModel, loadModel, type LoadedModel } from '../../site-agent/engine/index.ts';
import { measureExposure } from '../../cli/privacy-audit/exposure.ts';

describe('canary planting', () => {
  it('fills the format, plants each canary in distinct records of one site, reproducibly', () => {
    const f = parseCanaryFormat('Reference code ##-####');
    expect(f.digits).toBe(6);
    expect(fillCanary(f, '012345')).toBe('Reference code 01-2345');
    const out = mkdtempSync(join(tmpdir(), 'fedlora-canary-'));
    const plan = { format: 'Reference code ##-####', count: 5, repetitions: 3, site: 1, seed: 4 };
    const sites = generateSites({ sites: 2, records: 30, lang: 'en', seed: 3, format: 'jsonl', out, canaries: plan });
    expect(sites[0].canaries).toBeUndefined();
    const planted = sites[1].canaries!;
    expect(planted).toHaveLength(5);
    expect(new Set(planted.map((c) => c.secret)).size).toBe(5);
    const carriers = planted.flatMap((c) => c.records);
    expect(new Set(carriers).size).toBe(15); // every copy in a different record
    for (const c of planted) {
      expect(c.text).toMatch(/^Reference code \d\d-\d{4}$/);
      for (const i of c.records) expect(sites[1].records[i].treatment.endsWith(`${c.text}.`)).toBe(true);
    }
    // the file written for the site holds each canary exactly `repetitions` times; the other site none
    const file = readFileSync(sites[1].file!, 'utf8');
    for (const c of planted) expect(file.split(c.text).length - 1).toBe(3);
    expect(readFileSync(sites[0].file!, 'utf8')).not.toMatch(/Reference code/);
    const again = generateSites({ sites: 2, records: 30, lang: 'en', seed: 3, canaries: plan });
    expect(again[1].canaries).toEqual(planted);
  });

  it('refuses formats and plans it cannot honour, naming what is wrong', () => {
    expect(() => parseCanaryFormat('code #')).toThrow(/needs 2 to 15 '#'/);
    expect(() => parseCanaryFormat('####')).toThrow(/fixed text/);
    expect(() => canarySecrets(parseCanaryFormat('id ##'), 2, 1)).toThrow(/at most 1%/);
    const recs = generateSites({ sites: 1, records: 10, lang: 'en', seed: 1 })[0].records;
    expect(() => plantCanaries(recs, { count: 4, repetitions: 3 })).toThrow(/4 x 3 copies need as many records, the site has 10/);
    expect(() => generateSites({ sites: 2, records: 10, seed: 1, canaries: { count: 1, repetitions: 1, site: 2 } })).toThrow(/site index 2/);
  });
});

describe('exposure', () => {
  let model: LoadedModel;
  beforeAll(async () => {
    const dir = join(mkdtempSync(join(tmpdir(), 'fedlora-exposure-')), 'model');
    initTinyModel({ arch: 'llama', out: dir, seed: 5, layers: 1, hidden: 32, heads: 2, kvHeads: 1, intermediate: 64, tokenizer: 'byte', lmHeadStd: 0.3 });
    model = await loadModel(dir);
  });

  /** Log-likelihood of `text` past `prefix`, one engine call per sequence (independent of measureExposure). */
  async function loglik(text: string, prefix: string): Promise<number> {
    const ids = model.encode(text);
    const lp = await model.scoreTokens(ids);
    return lp.slice(model.encode(prefix).length).reduce((s: number, x) => s + (x ?? 0), 0);
  }

  it('exhaustive: rank and exposure from every filling of the format', async () => {
    const format = 'lot ##';
    const secrets = ['07', '42', '99'];
    const r = await measureExposure(model, { format, secrets, batch: 16 });
    expect(r.method).toBe('exhaustive');
    expect(r.candidates_scored).toBe(100);
    const all: number[] = [];
    for (let i = 0; i < 100; i++) all.push(await loglik(`lot ${String(i).padStart(2, '0')}`, 'lot '));
    for (const c of r.canaries) {
      const own = all[Number(c.secret)];
      expect(c.log_likelihood).toBeCloseTo(own, 3);
      const rank = 1 + all.filter((x, i) => i !== Number(c.secret) && x > own).length;
      expect(c.rank).toBe(rank);
      expect(c.exposure).toBeCloseTo(Math.log2(100) - Math.log2(rank), 10);
    }
    // the most likely filling is ranked first: the largest exposure there is
    const best = String(all.indexOf(Math.max(...all))).padStart(2, '0');
    const top = await measureExposure(model, { format, secrets: [best] });
    expect(top.canaries[0].rank).toBe(1);
    expect(top.canaries[0].exposure).toBeCloseTo(Math.log2(100), 10);
    expect(r.mean_exposure).toBeCloseTo(r.canaries.reduce((s, c) => s + c.exposure, 0) / 3, 10);
  });

  it('context: each canary and its rivals are scored after the text that preceded it', async () => {
    const format = 'lot ##';
    const secrets = ['13', '58'];
    const contexts = ['give 5 mg daily, ', 'rest and fluids; '];
    const r = await measureExposure(model, { format, secrets, contexts });
    for (const [k, c] of r.canaries.entries()) {
      const all: number[] = [];
      for (let i = 0; i < 100; i++) all.push(await loglik(`${contexts[k]}lot ${String(i).padStart(2, '0')}`, `${contexts[k]}lot `));
      const own = all[Number(c.secret)];
      expect(c.log_likelihood).toBeCloseTo(own, 3);
      expect(c.rank).toBe(1 + all.filter((x, i) => i !== Number(c.secret) && x > own).length);
    }
    await expect(measureExposure(model, { format, secrets, contexts: ['a'] })).rejects.toThrow(/1 contexts for 2 canaries/);
  });

  it('sampled: the rank estimated from uniform candidates agrees with the exact rank', async () => {
    const format = 'lot ###';
    const secrets = ['123', '500', '987'];
    const exact = await measureExposure(model, { format, secrets, exhaustiveUpTo: 1000 });
    const sampled = await measureExposure(model, { format, secrets, exhaustiveUpTo: 999, samples: 600, seed: 2 });
    expect(sampled.method).toBe('sampled');
    expect(sampled.candidates_scored).toBe(600);
    for (let k = 0; k < secrets.length; k++) {
      const p = (exact.canaries[k].rank - 1) / 999; // share of candidates above the canary
      const sd = Math.sqrt((p * (1 - p)) / 600) * 999;
      // within 4 binomial standard deviations (plus one candidate) of the exact rank
      expect(Math.abs(sampled.canaries[k].rank - exact.canaries[k].rank)).toBeLessThanOrEqual(4 * sd + 999 / 600 + 1);
    }
  });
});
